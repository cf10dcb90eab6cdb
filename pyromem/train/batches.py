"""The batch is the model's argument list (the pattern of Pyro's ``examples/svi_lightning.py``).

A dataset item, and so a collated batch, is one of:

- a tensor ``x``: the model is called as ``model(x)``;
- a tuple or list: the model's positional arguments, ``model(*batch)``;
- a dict: the model's keyword arguments, ``model(**batch)``.

Labelled image datasets yield ``(image, label)`` pairs, and the models of
pyromem take no label. The engine does not guess from the values: it drops the
label when the dataset says it is a labelled image dataset, that is when it is
a torchvision ``VisionDataset`` (``MNIST``, ``ImageFolder``, ...) or has the
attribute ``yields_labels = True``; ``fit(drop_labels=...)`` overrides that.
Every other tuple is a list of positional arguments.

The datapoints of a batch are its ``x``: the keyword argument ``x``, or else the
first positional argument. Their number, the leading size of ``x``, scales the
logged ELBO to nats per datapoint.
"""

import torch


def yields_labels(dataset) -> bool:
    """Whether ``dataset`` yields ``(image, label)`` pairs whose label the engine drops."""
    try:
        from torchvision.datasets import VisionDataset
    except ImportError:  # pragma: no cover - torchvision is a dependency
        VisionDataset = ()
    return isinstance(dataset, VisionDataset) or getattr(dataset, "yields_labels", False) is True


def model_arguments(batch, drop_labels: bool = False) -> tuple[tuple, dict]:
    """Split a batch into the model's ``(args, kwargs)``.

    :param batch: a tensor ``[B, ...]``, a tuple/list of positional arguments or
        a dict of keyword arguments.
    :param bool drop_labels: ``batch`` is ``(image, label)``: keep the image alone.
    :raises TypeError: on any other kind of batch.
    """
    if isinstance(batch, torch.Tensor):
        return (batch,), {}
    if isinstance(batch, dict):
        return (), dict(batch)
    if isinstance(batch, (tuple, list)):
        if drop_labels:
            return (batch[0],), {}
        return tuple(batch), {}
    raise TypeError(
        "batch: expected a tensor, a tuple/list of positional arguments or a dict of keyword "
        f"arguments, got {type(batch).__name__}"
    )


def datapoints(args: tuple, kwargs: dict) -> int:
    """The number of datapoints of a batch: the leading size of its ``x``."""
    x = kwargs["x"] if "x" in kwargs else (args[0] if args else None)
    if not isinstance(x, torch.Tensor) or x.dim() == 0:
        raise TypeError(
            "batch: expected the datapoints x as the first positional argument or the keyword "
            f"argument 'x', a tensor [B, ...], got {type(x).__name__}"
        )
    return len(x)
