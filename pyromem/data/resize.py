"""Bilinear resizing of image batches, kept inside [0, 1]."""

import torch.nn.functional as F

from pyromem.checks import as_int


def resize(images, size):
    """Resize square or rectangular images to ``size × size`` with bilinear interpolation.

    Downsampling is anti-aliased (a 105 px Omniglot stroke must not vanish at
    28 px); the result is clamped to [0, 1] because interpolation can overshoot
    by rounding.

    :param torch.Tensor images: float images of shape ``(N, C, H, W)`` in [0, 1].
    :param int size: the new height and width, ``size >= 1``.
    :returns: float images of shape ``(N, C, size, size)`` in [0, 1].
    """
    as_int(size, "size", 1)
    if tuple(images.shape[-2:]) == (size, size):
        return images
    resized = F.interpolate(
        images, size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )
    return resized.clamp_(0.0, 1.0)
