"""Procedural 2-D scenes of coloured squares, circles and triangles."""

import numpy as np
import torch

from pyromem.checks import as_int
from pyromem.data.dataset import ImageDataset
from pyromem.data.resize import resize
from pyromem.data.splits import SPLITS, check_split

SIDE = 64
MAX_OBJECTS = 3
SHAPES = ("square", "circle", "triangle")
# Eight-bit colours, so that scenes hold values k/255 exactly.
COLOURS = {
    "red": (230, 25, 75),
    "green": (60, 180, 75),
    "blue": (0, 130, 200),
    "yellow": (255, 225, 25),
    "purple": (145, 30, 180),
    "cyan": (70, 240, 240),
}
BACKGROUND = 20  # a dark grey, which colour rotations leave unchanged
MIN_RADIUS, MAX_RADIUS = 5.0, 11.0  # half-extent of an object in pixels
DEFAULT_SCENES = {"train": 2000, "test": 500}


def shapes(split="train", *, seed=0, size=None, num_scenes=None):
    """Scenes of 1-3 objects, each with a known shape, colour, size and position.

    Each 64×64 RGB scene has a uniform dark-grey background (20/255) and
    ``count`` ~ Uniform{1, 2, 3} objects painted in order, later ones over
    earlier ones. An object has a shape in :data:`SHAPES` (a square, a disc or
    an upward isosceles triangle), a colour in :data:`COLOURS`, a half-extent
    (``size``) uniform in [5, 11] px and a centre uniform over the positions
    that keep it inside the image. Train and test scenes are drawn from
    independent random streams fixed by ``seed``.

    :param str split: ``"train"`` or ``"test"``.
    :param int seed: seed of the scenes (a non-negative int).
    :param int size: optional side length the 64×64 scenes are resized to.
    :param int num_scenes: number of scenes; default 2,000 (train) / 500 (test).
    :returns: an :class:`ImageDataset` of images ``(N, 3, 64, 64)`` with 8-bit
        values in [0, 1]; labels = the shape index (0 square, 1 circle,
        2 triangle) of the first object. Factors, padded with ``-1`` for the
        absent objects of a scene: ``"count"`` ``(N,)`` long in {1, 2, 3};
        ``"shape"`` and ``"colour"`` ``(N, 3)`` long indices into
        :data:`SHAPES` and :data:`COLOURS`; ``"size"`` ``(N, 3)`` float
        half-extent as a fraction of the side; ``"position"`` ``(N, 3, 2)``
        float centre (row, column) as fractions of the side, in (0, 1).
    """
    check_split(split)
    if num_scenes is None:
        num_scenes = DEFAULT_SCENES[split]
    as_int(num_scenes, "num_scenes", 1)
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    n, k = num_scenes, MAX_OBJECTS
    count = rng.integers(1, k + 1, size=n)
    present = np.arange(k) < count[:, None]
    shape = rng.integers(0, len(SHAPES), size=(n, k))
    colour = rng.integers(0, len(COLOURS), size=(n, k))
    radius = rng.uniform(MIN_RADIUS, MAX_RADIUS, size=(n, k))
    centre = radius[..., None] + rng.uniform(size=(n, k, 2)) * (SIDE - 2 * radius[..., None])

    images = _render(present, shape, colour, radius, centre)
    if size is not None:
        images = resize(images, size)

    def padded(value, dtype):
        mask = present.reshape(present.shape + (1,) * (value.ndim - 2))
        return torch.as_tensor(np.where(mask, value, -1), dtype=dtype)

    factors = {
        "count": torch.as_tensor(count),
        "shape": padded(shape, torch.long),
        "colour": padded(colour, torch.long),
        "size": padded(radius / SIDE, torch.float32),
        "position": padded(centre / SIDE, torch.float32),
    }
    return ImageDataset(
        images,
        torch.as_tensor(shape[:, 0]),
        factors,
        name="shapes",
        split=split,
        support="8bit" if size is None or size == SIDE else "unit_interval",
    )


def _render(present, shape, colour, radius, centre):
    # All scenes at once, one object slot at a time: boolean masks over
    # (N, 64, 64) pixel centres, then paint the slot's colour where its mask is on.
    n = present.shape[0]
    pixel = torch.arange(SIDE, dtype=torch.float32) + 0.5
    palette = torch.tensor(list(COLOURS.values()), dtype=torch.uint8)
    images = torch.full((n, 3, SIDE, SIDE), BACKGROUND, dtype=torch.uint8)
    for slot in range(present.shape[1]):
        r = torch.as_tensor(radius[:, slot], dtype=torch.float32)[:, None, None]
        dy = (
            pixel[None, :, None]
            - torch.as_tensor(centre[:, slot, 0], dtype=torch.float32)[:, None, None]
        )
        dx = (
            pixel[None, None, :]
            - torch.as_tensor(centre[:, slot, 1], dtype=torch.float32)[:, None, None]
        )
        square = (dy.abs() <= r) & (dx.abs() <= r)
        disc = dy.square() + dx.square() <= r.square()
        # Apex at the top (dy = -r), base of half-width r at the bottom (dy = r).
        triangle = (dy.abs() <= r) & (dx.abs() <= (dy + r) / 2)
        kind = torch.as_tensor(shape[:, slot])[:, None, None]
        mask = torch.where(kind == 0, square, torch.where(kind == 1, disc, triangle))
        mask &= torch.as_tensor(present[:, slot])[:, None, None]
        fill = palette[torch.as_tensor(colour[:, slot])][:, :, None, None]
        images = torch.where(mask[:, None], fill, images)
    return images.float() / 255.0
