"""Training data checked once, before the first step, whatever Pyro's validation setting.

The engine turns Pyro's validation off while it trains (it costs time on every
step), so a dataset of the wrong shape, dtype or support would train silently
on garbage. :func:`check_training_data` pays the cost once instead:

1. the first batch's tensors: the datapoints ``x`` are floating point, and every
   floating tensor is finite;
2. the first batch through the guide and the model with Pyro's validation on,
   which checks shapes and each observed value against its likelihood's support;
3. when the dataset holds its datapoints as one tensor (a tensor, or an
   :class:`~pyromem.data.ImageDataset`), every datapoint: finite, and inside the
   support of the observed site ``"x"`` found in step 2;
4. a dataset's ``labels`` (an ``ImageDataset``'s, which episode samplers read): one
   integer per datapoint, all >= 0, or all -1 for unlabelled data.

The engine checks its held-out ``eval_data`` by steps 1-3 as well, before the first step,
though it scores them only after the first epoch.
"""

import pyro
import pyro.poutine as poutine
import torch
from torch.utils.data import default_collate

from pyromem.train.batches import datapoints, model_arguments

CHUNK = 8192


def check_training_data(
    model, dataset, *, batch_size, drop_labels, num_data=None, name="train_data"
) -> None:
    """Raise a one-line ``ValueError`` naming ``name`` if the data cannot train ``model``.

    :param model: the module with ``model`` and ``guide`` methods.
    :param dataset: the training dataset (items as in :mod:`pyromem.train.batches`).
    :param batch_size: the engine's batch size (``None``: each item is a step).
    :param bool drop_labels: items are ``(image, label)``.
    :param int num_data: passed to the model as ``num_data`` (batch mode).
    :param str name: the data's argument name in the messages: ``"train_data"``, or
        ``"eval_data"`` for the held-out data that the engine scores after each epoch.
    """
    if batch_size is None:
        batch = dataset[0]
    else:
        batch = default_collate([dataset[i] for i in range(min(batch_size, len(dataset)))])
    args, kwargs = model_arguments(batch, drop_labels)
    datapoints(args, kwargs)  # its TypeError names a batch without datapoints x
    x = kwargs["x"] if "x" in kwargs else args[0]
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected floating-point datapoints x, got {x.dtype}")
    for value in [*args, *kwargs.values()]:
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            if not torch.isfinite(value).all():
                raise ValueError(f"{name}: the first batch holds NaN or infinite values")
    device = next(model.parameters(), torch.empty(0)).device
    args = tuple(_to(value, device) for value in args)
    kwargs = {key: _to(value, device) for key, value in kwargs.items()}
    if num_data is not None:
        kwargs["num_data"] = num_data
    # eval mode: a check must not move batch-norm statistics
    was_training = model.training
    model.eval()
    try:
        with pyro.validation_enabled(True), torch.no_grad():
            guide_trace = poutine.trace(model.guide).get_trace(*args, **kwargs)
            replayed = poutine.replay(model.model, trace=guide_trace)
            model_trace = poutine.trace(replayed).get_trace(*args, **kwargs)
    except (ValueError, TypeError, RuntimeError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise ValueError(f"{name}: the first batch does not fit the model: {first_line}") from None
    finally:
        model.train(was_training)
    _check_every_datapoint(dataset, model_trace, name)
    _check_labels(dataset, name)


def _check_labels(dataset, name) -> None:
    labels = getattr(dataset, "labels", None)
    if not isinstance(labels, torch.Tensor):
        return
    if labels.is_floating_point() or labels.shape != (len(dataset),):
        raise ValueError(
            f"{name}: expected one integer label per datapoint, got labels of dtype "
            f"{labels.dtype} and shape {tuple(labels.shape)} for {len(dataset)} datapoints"
        )
    unlabelled = bool((labels == -1).all())
    if not unlabelled and len(labels) and labels.min() < 0:
        index = int((labels < 0).nonzero()[0])
        raise ValueError(
            f"{name}: label {labels[index].item()} of datapoint {index} is negative; "
            "labels are >= 0, or all -1 for unlabelled data"
        )


def _check_every_datapoint(dataset, model_trace, name) -> None:
    images = getattr(dataset, "data", None)
    if not isinstance(images, torch.Tensor):
        images = getattr(dataset, "images", None)
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        return
    site = model_trace.nodes.get("x")
    # a dynamically binarised dataset holds grey levels and draws binary pixels on access
    binarized_on_access = getattr(dataset, "binarize", None) == "dynamic"
    support = None
    if site is not None and site.get("is_observed") and not binarized_on_access:
        value_shape = site["value"].shape
        if value_shape[-(images.dim() - 1) :] == images.shape[1:]:
            support = site["fn"].support
    for start in range(0, len(images), CHUNK):
        chunk = images[start : start + CHUNK]
        # a finite sum (one pass, ~20x cheaper than isfinite on a CPU) means finite values;
        # a sum that is not finite may be an overflow of finite ones, so look closer
        if not torch.isfinite(chunk.sum()):
            finite = torch.isfinite(chunk).flatten(1).all(-1)
            if not finite.all():
                index = start + int((~finite).nonzero()[0])
                raise ValueError(f"{name}: datapoint {index} holds NaN or infinite values")
        if support is not None:
            inside = support.check(chunk.to(site["value"].device))
            inside = inside.reshape(len(chunk), -1).all(-1).cpu()
            if not inside.all():
                index = start + int((~inside).nonzero()[0])
                raise ValueError(
                    f"{name}: datapoint {index} lies outside the support {support} of the "
                    f"model's likelihood of x (values in [{chunk.min().item():g}, "
                    f"{chunk.max().item():g}])"
                )


def _to(value, device):
    return value.to(device) if isinstance(value, torch.Tensor) else value
