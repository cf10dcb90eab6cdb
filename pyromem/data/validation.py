"""Argument checks for image tensors at the public boundary of pyromem."""

import torch

from pyromem.checks import check_device

SUPPORTS = ("binary", "unit_interval", "8bit", "real")


def check_images(
    x,
    event_shape,
    support="real",
    name="x",
    check_values=True,
    dtype=None,
    device=None,
    batch_dims=None,
):
    """Check that ``x`` is a float batch of images a model can score.

    Raises a :class:`TypeError` or :class:`ValueError` that names the argument,
    what was expected and what was received, so that a user never has to read a
    torch stack trace to learn that the data do not fit the model.

    :param torch.Tensor x: images of shape ``batch_shape + event_shape``.
    :param tuple event_shape: the shape of one image, e.g. ``(1, 28, 28)``.
    :param str support: ``"binary"`` (values in {0, 1}), ``"unit_interval"``
        (values in [0, 1]), ``"8bit"`` (values k/255 for integer k), ``"N-level"`` (values
        k/(N - 1), the data of a discretised likelihood of N bins) or ``"real"`` (any finite
        value).
    :param str name: the argument's name in error messages.
    :param bool check_values: whether to check the values too (NaN, range,
        support); this reads the whole tensor, so models skip it when Pyro's
        validation is off, as during training.
    :param torch.dtype dtype: the floating dtype ``x`` must have, that of the model's
        parameters (``None``: any).
    :param torch.device device: the device ``x`` must be on, that of the model's parameters
        (``None``: any).
    :param int batch_dims: how many batch dimensions ``x`` must have, e.g. 1 where a data
        plate runs over dim 0 (``None``: one or more).
    :returns: ``x`` unchanged.
    """
    levels = _levels(support) if isinstance(support, str) else None
    if support not in SUPPORTS and levels is None:
        raise ValueError(f"support must be one of {SUPPORTS} or 'N-level', got {support!r}")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor (e.g. images / 255.), got dtype {x.dtype}"
        )
    if dtype is not None and x.dtype != dtype:
        raise TypeError(
            f"{name} is {x.dtype} but the model's parameters are {dtype}: convert one to the "
            f"other, e.g. model.to({x.dtype}) or {name}.to({dtype})"
        )
    check_device(x, name, device)
    event_shape = tuple(event_shape)
    leading = x.dim() - len(event_shape)
    if (
        leading < 1
        or (batch_dims is not None and leading != batch_dims)
        or tuple(x.shape[-len(event_shape) :]) != event_shape
    ):
        raise ValueError(
            f"{name} must have shape (batch, {', '.join(map(str, event_shape))}), "
            f"got {tuple(x.shape)}"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {tuple(x.shape)})")
    if not check_values:
        return x
    if support == "binary" and ((x == 0) | (x == 1)).all():
        return x  # finite and in [0, 1] too: the checks below, which name the fault, would pass
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    if support == "real":
        return x
    lo, hi = x.min().item(), x.max().item()
    if lo < 0 or hi > 1:
        raise ValueError(
            f"{name} must take values in [0, 1] for a {support} likelihood, got [{lo:g}, {hi:g}]"
        )
    if support == "binary" and not ((x == 0) | (x == 1)).all():
        gaussian = "likelihood='gaussian' (--likelihood gaussian)"
        # binarisation is for grey-scale images only (ImageDataset refuses it for colour)
        colour = len(event_shape) == 3 and event_shape[0] > 1
        remedy = (
            f"use {gaussian}"
            if colour
            else "binarise it (load(..., binarize='static' or 'dynamic'), --binarize static or "
            f"dynamic) or use {gaussian}"
        )
        raise ValueError(f"{name} must be binary (0 or 1) for a Bernoulli likelihood; {remedy}")
    if levels is not None:
        steps = x * levels
        if (steps - steps.round()).abs().max() > 1e-3:
            what = "8-bit values k/255" if support == "8bit" else f"values k/{levels}"
            raise ValueError(
                f"{name} must hold {what} for a discretized logistic likelihood of "
                f"{levels + 1} bins"
            )
    return x


def check_generator(generator):
    """Raise a :class:`TypeError` unless ``generator`` is ``None`` or a :class:`torch.Generator`
    (a NumPy generator or a seed would otherwise fail inside torch, as an AttributeError)."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")


def _levels(support):
    """The steps k of the grid k/steps that a discretised support's values lie on: 255 for
    ``"8bit"``, N - 1 for ``"N-level"`` (N >= 2); ``None`` for the other supports."""
    if support == "8bit":
        return 255
    count = support.removesuffix("-level") if isinstance(support, str) else ""
    if support.endswith("-level") and count.isdigit() and int(count) >= 2:
        return int(count) - 1
    return None
