"""Bilinear resizing of image batches, kept inside [0, 1], and the memory check before it."""

import math

import torch
import torch.nn.functional as F

from pyromem.checks import as_int
from pyromem.data.validation import check_images


def resize(images, size):
    """Resize square or rectangular images to ``size × size`` with bilinear interpolation.

    Downsampling is anti-aliased (a 105 px Omniglot stroke must not vanish at
    28 px); the result is clamped to [0, 1] because interpolation can overshoot
    by rounding.

    :param torch.Tensor images: float images of shape ``(N, C, H, W)`` in [0, 1], of any
        floating dtype.
    :param int size: the new height and width, ``size >= 1``.
    :returns: float images of shape ``(N, C, size, size)`` in [0, 1], of the dtype of ``images``.
    :raises TypeError: if ``images`` is not a floating-point tensor (e.g. uint8 images not
        yet divided by 255, or a numpy array).
    :raises ValueError: if ``images`` is not a non-empty batch ``(N, C, H, W)`` of finite
        values in [0, 1] (images in [0, 255] would all clamp to 1), or if the resized images
        would not fit in the memory available (:func:`check_memory`).
    """
    as_int(size, "size", 1)
    if isinstance(images, torch.Tensor) and images.dim() != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
    # the type, dtype, an empty batch and NaN; the shape is checked above
    check_images(images, tuple(getattr(images, "shape", ()))[1:], "real", name="images")
    lo, hi = images.min().item(), images.max().item()
    if lo < 0 or hi > 1:
        raise ValueError(
            f"images must take values in [0, 1] (e.g. images / 255.), got [{lo:g}, {hi:g}]"
        )
    if tuple(images.shape[-2:]) == (size, size):
        return images
    check_memory(tuple(images.shape[:-2]) + (size, size), images.element_size(), "size")
    # torch's antialiased bilinear kernel has no float16 or bfloat16 version on the CPU: those
    # are resized in float32 and returned in their own dtype
    half = images.dtype in (torch.float16, torch.bfloat16)
    resized = F.interpolate(
        images.float() if half else images,
        size=(size, size),
        mode="bilinear",
        align_corners=False,
        antialias=True,
    )
    return resized.clamp_(0.0, 1.0).to(images.dtype)


def check_memory(shape, element_size, name):
    """Refuse, in one line, a dataset of ``shape`` that would not fit in the memory available.

    Without the check, a dataset resized to a large side (``size=1000`` makes the 8×8
    digits 15,000 times larger) grows until the operating system kills the process, with
    nothing printed. Where the memory available cannot be read (not Linux), nothing is
    checked.

    :param tuple shape: ``(N, C, H, W)`` of the images to allocate.
    :param int element_size: bytes per value (4 for float32).
    :param str name: what to blame in the message, e.g. ``"size"``.
    :raises ValueError: if the images need more bytes than the memory available.
    """
    needed = math.prod(shape) * element_size
    available = available_memory()
    if available is not None and needed > available:
        count, *image = shape
        raise ValueError(
            f"{name}: {count} images of {'×'.join(map(str, image))} need {_in_units(needed)}, "
            f"more than the {_in_units(available)} of memory available; choose a smaller size "
            "(size=<side>, --size) or fewer images"
        )


def _in_units(count):
    # bytes in GiB, or in MiB below one GiB, where "0.0 GiB" would say nothing
    return f"{count / 2**30:.1f} GiB" if count >= 2**30 else f"{count / 2**20:.1f} MiB"


def available_memory():
    """The bytes of memory available to a new allocation without swapping (Linux's
    ``MemAvailable``), or ``None`` where ``/proc/meminfo`` cannot be read."""
    try:
        with open("/proc/meminfo") as lines:
            for line in lines:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # written in kB
    except (OSError, ValueError, IndexError):
        pass
    return None
