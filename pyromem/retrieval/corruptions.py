r"""The named query corruptions of §5.3-5.4, e.g. ``"noise-0.6"`` or ``"mask-16"``.

=====================  ===========================================================
name                   query made from a stored image ``x``
=====================  ===========================================================
``clean``              ``x`` itself
``noise-S``            ``x + S ε``, ``ε ~ N(0, I)``, clipped to [0, 1] (§5.3)
``mask-W``             a black ``W × W`` square at a random position (§5.3)
``colour-rotation``    RGB rotation about the grey axis by 120° (§5.4; RGB only)
``shift-K``            translated ``K`` pixels right and down, black border (§5.4)
=====================  ===========================================================
"""

import math
import re

import torch

from pyromem.checks import as_shape
from pyromem.data import colour_rotation, gaussian_noise, shift, square_mask

#: Noise levels of §5.3.
NOISE_LEVELS = (0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0)


def corrupt(images, name, generator=None):
    """Apply the named corruption to a batch of images.

    :param torch.Tensor images: ``(B, C, H, W)`` in [0, 1].
    :param str name: a corruption name (see the module's table).
    :param torch.Generator generator: randomness of noise and mask positions.
    :returns: corrupted images, same shape.
    """
    kind, value = parse_corruption(name)
    if kind == "clean":
        return images.clone()
    if kind == "noise":
        return gaussian_noise(images, value, generator=generator)
    if kind == "mask":
        return square_mask(images, value, generator=generator)
    if kind == "colour-rotation":
        return colour_rotation(images, 2 * math.pi / 3)
    return shift(images, value, value)


def check_corruptions(names, image_shape):
    """Raise a one-line ``ValueError`` naming the first corruption that images of
    ``image_shape`` do not allow (a mask wider than the image, a colour rotation of grey
    images, ...), by applying each to one blank image: the checks are those of the
    corruptions themselves.

    :param list names: corruption names.
    :param tuple image_shape: ``(C, H, W)``.
    """
    if isinstance(names, str):
        # a lone string would be read letter by letter
        raise TypeError(f"corruptions must be a list of corruption names, got str {names!r}")
    blank = torch.zeros((1, *as_shape(image_shape, "image_shape", ndim=3)))
    for name in names:
        try:
            corrupt(blank, name, generator=torch.Generator().manual_seed(0))
        except ValueError as error:
            raise ValueError(f"corruptions: {name!r} does not apply here: {error}") from None


def parse_corruption(name):
    """Split a corruption name into its kind and value.

    :returns: ``(kind, value)`` with ``value`` a float (noise), an int (mask, shift) or ``None``.
    :raises TypeError: if ``name`` is not a str.
    :raises ValueError: for an unknown name or a bad value.
    """
    if not isinstance(name, str):
        raise TypeError(f"corruption name must be a str, got {type(name).__name__}")
    if name in ("clean", "colour-rotation"):
        return name, None
    kind, _, value = name.rpartition("-")
    # digits only: float() and int() also read " 2", "1_6" or "1e3", names that would key the
    # results under another spelling than the corruption's
    if kind == "noise" and re.fullmatch(r"[0-9]+(\.[0-9]*)?|\.[0-9]+", value):
        return kind, float(value)
    if kind in ("mask", "shift") and re.fullmatch(r"[0-9]+", value):
        return kind, int(value)
    raise ValueError(
        f"unknown corruption {name!r}; expected 'clean', 'noise-S' (S >= 0), 'mask-W', "
        "'colour-rotation' or 'shift-K' (W, K >= 0 ints)"
    )


def default_corruptions(image_shape):
    """The corruptions of Tables 2-4 scaled to an image size.

    Clean, noise 0.2 and 0.6, masks of half and three quarters of the side (16 and 24 px on
    32 × 32 images, as on CIFAR10; 32 and 48 px on 64 × 64, as on CLEVR) and, for RGB images,
    colour rotation and a shift of an eighth of the side.

    On images too small for them, a mask of width 0 (the clean query again), a second mask of
    the first's width and a shift that would leave no pixel are left out.

    :param tuple image_shape: ``(C, H, W)``.
    :returns: a list of names, each once.
    """
    channels, height, width = as_shape(image_shape, "image_shape", ndim=3)
    side = min(height, width)
    masks = [f"mask-{w}" for w in dict.fromkeys((side // 2, 3 * side // 4)) if w > 0]
    names = ["clean", "noise-0.2", "noise-0.6", *masks]
    if channels == 3:
        names.append("colour-rotation")
        if side > 1:
            names.append(f"shift-{max(side // 8, 1)}")
    return names
