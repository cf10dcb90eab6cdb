"""The data plate every pyromem model puts its datapoints in."""

import pyro
import torch

from pyromem.checks import as_int

DATA_PLATE = "data"  # the plate's name: diagnostics and guides find datapoints by it


def data_plate(x, num_data=None):
    """``pyro.plate("data", ...)`` over the batch ``x`` out of a dataset of ``num_data``.

    Log-densities inside are scaled by ``num_data / len(x)``, so the ELBO of a
    batch is an unbiased estimate of the whole dataset's. The batch's own
    positions are passed as the subsample indices: the plate draws no random
    indices (which would cost a permutation of ``num_data`` per step and shift
    the random stream), and ``len(x)`` datapoints are what the batch holds.

    :param torch.Tensor x: the batch, datapoints along dim 0.
    :param int num_data: the dataset's size, at least ``len(x)``; ``None`` means the
        batch is the whole dataset.
    :raises TypeError: if ``num_data`` is neither an int nor ``None``.
    :raises ValueError: if ``num_data`` is below one or below the batch size.
    """
    # pure Python, no device sync: it runs every step
    num_data = as_int(num_data, "num_data", 1, error=TypeError, allow_none=True)
    batch = x.shape[0]
    size = batch if num_data is None else num_data
    if size < batch:
        raise ValueError(f"num_data must be at least the batch size {batch}, got {num_data}")
    return pyro.plate(DATA_PLATE, size, subsample=torch.arange(batch, device=x.device))
