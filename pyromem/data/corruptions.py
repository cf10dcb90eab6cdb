"""Corruptions of image batches, for retrieval and denoising experiments.

Every function takes a batch ``x`` of shape ``(..., C, H, W)`` with values in
[0, 1], returns a new tensor of the same shape, dtype and device with values
clipped to [0, 1], and leaves ``x`` unchanged. Random corruptions take an
optional ``torch.Generator``: draws are made on the generator's device and
moved to ``x.device``, so a CPU generator reproduces the same corruption of a
CUDA batch; without one they use torch's global generator on ``x.device``.
"""

import math
import numbers

import torch

from pyromem.checks import as_float_tensor, as_int, broadcasts_to
from pyromem.data.validation import check_generator


def gaussian_noise(x, std, *, generator=None):
    """Additive white noise ``x + std * ε`` with ``ε ~ N(0, 1)`` per pixel and channel.

    :param torch.Tensor x: images ``(..., C, H, W)`` in [0, 1].
    :param float std: noise standard deviation, ``>= 0``.
    :param torch.Generator generator: optional source of randomness.
    :returns: the noisy images, clipped to [0, 1].
    """
    _check_images(x)
    check_generator(generator)
    _check_number("std", std, low=0.0)
    return (x + std * _randn(x, generator)).clamp(0.0, 1.0)


def speckle(x, std, *, generator=None):
    """Multiplicative noise ``x + x * std * ε`` with ``ε ~ N(0, 1)`` per pixel and channel.

    :param torch.Tensor x: images ``(..., C, H, W)`` in [0, 1].
    :param float std: noise standard deviation relative to the pixel value, ``>= 0``.
    :param torch.Generator generator: optional source of randomness.
    :returns: the noisy images, clipped to [0, 1].
    """
    _check_images(x)
    check_generator(generator)
    _check_number("std", std, low=0.0)
    return (x + x * std * _randn(x, generator)).clamp(0.0, 1.0)


def poisson(x, peak, *, generator=None):
    """Shot noise: ``Poisson(x * peak) / peak``, unbiased with variance ``x / peak``.

    :param torch.Tensor x: images ``(..., C, H, W)`` in [0, 1].
    :param float peak: expected photon count of a white pixel, ``> 0``; larger
        is less noisy.
    :param torch.Generator generator: optional source of randomness.
    :returns: the noisy images, clipped to [0, 1].
    """
    _check_images(x)
    check_generator(generator)
    _check_number("peak", peak, low=0.0, strict=True)
    rate = x * peak
    if generator is not None:
        rate = rate.to(generator.device)
    counts = torch.poisson(rate, generator=generator).to(x.device)
    return (counts / peak).clamp(0.0, 1.0)


def salt_and_pepper(x, prob, *, generator=None):
    """Set a random ``prob`` share of pixels to white or black, half each.

    A corrupted pixel changes in all channels at once, as a dead or stuck
    sensor pixel does.

    :param torch.Tensor x: images ``(..., C, H, W)`` in [0, 1].
    :param float prob: probability that a pixel is corrupted, in [0, 1].
    :param torch.Generator generator: optional source of randomness.
    :returns: the corrupted images.
    """
    _check_images(x)
    check_generator(generator)
    _check_number("prob", prob, low=0.0, high=1.0)
    device = _device(x, generator)
    u = torch.rand(x.shape[:-3] + (1,) + x.shape[-2:], generator=generator, device=device)
    u = u.to(x.device)
    out = torch.where(u < prob / 2, 1.0, x)
    return torch.where((u >= prob / 2) & (u < prob), 0.0, out)


def square_mask(x, width, value=0.0, position=None, *, generator=None):
    """Fill a ``width × width`` square of every image with ``value`` (occlusion).

    :param torch.Tensor x: images ``(..., C, H, W)`` in [0, 1].
    :param int width: side of the square in pixels, in [0, min(H, W)].
    :param float value: fill value in [0, 1], the same in every channel.
    :param tuple position: ``(row, col)`` of the square's top-left pixel, the
        same for every image, with ``0 <= row <= H - width`` and
        ``0 <= col <= W - width``; by default drawn uniformly per image.
    :param torch.Generator generator: optional source of randomness for the positions.
    :returns: the masked images.
    """
    _check_images(x)
    check_generator(generator)
    height, wide = x.shape[-2:]
    as_int(width, "width", error=TypeError, form="split")
    if not 0 <= width <= min(height, wide):
        raise ValueError(
            f"width must lie in [0, {min(height, wide)}] for {height}×{wide} images, got {width}"
        )
    _check_number("value", value, low=0.0, high=1.0)
    batch = x.shape[:-3]
    if position is None:
        device = _device(x, generator)
        row = torch.randint(height - width + 1, batch, generator=generator, device=device)
        col = torch.randint(wide - width + 1, batch, generator=generator, device=device)
        row, col = row.to(x.device), col.to(x.device)
    else:
        if (
            not isinstance(position, (tuple, list))
            or len(position) != 2
            or not all(
                isinstance(p, numbers.Integral) and not isinstance(p, bool) for p in position
            )
        ):
            raise TypeError(f"position must be a (row, col) pair of ints, got {position!r}")
        row, col = position
        if not (0 <= row <= height - width and 0 <= col <= wide - width):
            raise ValueError(
                f"position must keep the {width}×{width} square inside the {height}×{wide} "
                f"image (0 <= row <= {height - width}, 0 <= col <= {wide - width}), "
                f"got {position!r}"
            )
        row = torch.full(batch, row, device=x.device)
        col = torch.full(batch, col, device=x.device)
    rows = torch.arange(height, device=x.device)
    cols = torch.arange(wide, device=x.device)
    row, col = row[..., None, None, None], col[..., None, None, None]
    inside = ((rows[:, None] >= row) & (rows[:, None] < row + width)) & (
        (cols >= col) & (cols < col + width)
    )
    return torch.where(inside, torch.as_tensor(value, dtype=x.dtype, device=x.device), x)


def colour_rotation(x, angle):
    """Rotate every RGB colour about the grey axis ``(1, 1, 1) / √3`` by ``angle``.

    The rotation matrix is Rodrigues' ``R = I + sin θ K + (1 - cos θ) K²``
    with ``K`` the cross-product matrix of the unit grey axis, so greys are
    fixed, brightness ``(r + g + b) / 3`` is kept and hues turn: an angle of
    2π/3 maps red to green, green to blue and blue to red. Colours turned out
    of the RGB cube are clipped.

    :param torch.Tensor x: RGB images ``(..., 3, H, W)`` in [0, 1].
    :param angle: rotation in radians, a finite float or a tensor broadcastable to
        the batch shape ``x.shape[:-3]`` for one angle per image.
    :returns: the rotated images, clipped to [0, 1].
    """
    _check_images(x)
    if x.shape[-3] != 3:
        raise ValueError(f"colour_rotation needs RGB images (C = 3), got C = {x.shape[-3]}")
    if isinstance(angle, torch.Tensor):
        angle = angle.to(device=x.device, dtype=x.dtype)
    elif isinstance(angle, numbers.Real) and not isinstance(angle, bool):
        angle = torch.tensor(float(angle), dtype=x.dtype, device=x.device)
    else:
        raise TypeError(f"angle must be a float or a tensor, got {type(angle).__name__}")
    # a NaN or infinite angle would turn every pixel into NaN, which the clamp below keeps
    if not torch.isfinite(angle).all():
        shown = f"{angle.item()!r}" if angle.numel() == 1 else "NaN or infinite angles"
        raise ValueError(f"angle must be finite, got {shown}")
    # one angle per image: a shape that does not broadcast to the batch would stop in einsum,
    # and one with more dims would silently add batch dims to the result
    batch = x.shape[:-3]
    if not broadcasts_to(angle.shape, batch):
        raise ValueError(
            f"angle: a tensor of angles must broadcast to the batch shape {tuple(batch)} of x "
            f"{tuple(x.shape)}, got shape {tuple(angle.shape)}"
        )
    k = 1.0 / math.sqrt(3.0)
    cross = torch.tensor([[0.0, -k, k], [k, 0.0, -k], [-k, k, 0.0]], dtype=x.dtype, device=x.device)
    sin, cos = angle.sin()[..., None, None], angle.cos()[..., None, None]
    rotation = (
        torch.eye(3, dtype=x.dtype, device=x.device) + sin * cross + (1 - cos) * cross @ cross
    )
    return torch.einsum("...ij,...jhw->...ihw", rotation, x).clamp(0.0, 1.0)


def shift(x, dx, dy, fill=0.0):
    """Translate every image by whole pixels, filling the uncovered border with ``fill``.

    :param torch.Tensor x: images ``(..., C, H, W)`` in [0, 1].
    :param int dx: shift to the right in pixels (negative: to the left), with
        ``|dx| < W``.
    :param int dy: shift downwards in pixels (negative: upwards), with ``|dy| < H``.
    :param float fill: value in [0, 1] of the pixels shifted in.
    :returns: the shifted images; pixel ``(i, j)`` moves to ``(i + dy, j + dx)``.
    """
    _check_images(x)
    height, width = x.shape[-2:]
    for name, value, side in [("dx", dx, width), ("dy", dy, height)]:
        as_int(value, name, error=TypeError, form="split")
        # a shift by the whole side moves every pixel out: the "corrupted" image is blank
        if not -side < value < side:
            raise ValueError(
                f"{name} must lie in [{1 - side}, {side - 1}] for {height}×{width} images, "
                f"got {value}"
            )
    _check_number("fill", fill, low=0.0, high=1.0)
    out = torch.full_like(x, fill)
    out[..., max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)] = x[
        ..., max(-dy, 0) : height - max(dy, 0), max(-dx, 0) : width - max(dx, 0)
    ]
    return out


def _check_images(x):
    as_float_tensor(x, "x")
    if x.dim() < 3:
        raise ValueError(f"x must have shape (..., C, H, W), got {tuple(x.shape)}")
    # Written so that NaN fails too.
    if not ((x >= 0) & (x <= 1)).all():
        raise ValueError("x must take values in [0, 1] (e.g. images / 255.)")


def _check_number(name, value, low, high=math.inf, strict=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    # an infinite std or peak passes an unbounded interval but makes NaN pixels
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    above = value > low if strict else value >= low
    if not (above and value <= high):
        interval = f"{'(' if strict else '['}{low:g}, {high:g}{']' if high < math.inf else ')'}"
        raise ValueError(f"{name} must lie in {interval}, got {value!r}")


def _device(x, generator):
    # A generator only draws on its own device; the draws are moved to x's.
    return x.device if generator is None else generator.device


def _randn(x, generator):
    noise = torch.randn(x.shape, generator=generator, device=_device(x, generator), dtype=x.dtype)
    return noise.to(x.device)
