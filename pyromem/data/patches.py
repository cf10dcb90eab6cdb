"""RGB patches cut from scikit-learn's bundled photographs."""

import functools

import numpy as np
import torch
from sklearn.datasets import load_sample_images

from pyromem.data.dataset import ImageDataset
from pyromem.data.resize import resize
from pyromem.data.splits import split_indices


@functools.lru_cache(maxsize=1)
def _photographs():
    # Decoding the two JPEGs takes most of the loader's time; they never change.
    return tuple(np.asarray(image) for image in load_sample_images().images)


def patches(split="train", *, seed=0, size=None, patch_size=32, test_fraction=0.2):
    """Non-overlapping ``patch_size × patch_size`` RGB patches of two photographs.

    The photographs are scikit-learn's ``china.jpg`` (label 0) and
    ``flower.jpg`` (label 1), each 427×640. Patches are cut on the fixed grid
    whose cells start at multiples of ``patch_size`` from the top-left corner
    (the remainder at the bottom and right is dropped): 13 × 20 = 260 patches
    per photograph for 32 px, 520 in all. The train/test partition is
    stratified by photograph and fixed by ``seed`` (416 / 104 by default).

    :param str split: ``"train"`` or ``"test"``.
    :param int seed: seed of the partition.
    :param int size: optional side length the patches are resized to.
    :param int patch_size: side length of the grid cells in pixels, in [1, 427].
    :param float test_fraction: share of the test split, in (0, 1).
    :returns: an :class:`ImageDataset` of images ``(N, 3, patch_size, patch_size)``
        with 8-bit values k/255, labels in {0, 1} (the photograph) and factors
        ``"position"`` (``(N, 2)`` long: grid row and column of the patch) and
        ``"pixel_position"`` (``(N, 2)`` long: pixel row and column of its
        top-left corner).
    """
    photos = _photographs()
    height, width = photos[0].shape[:2]
    if isinstance(patch_size, bool) or not isinstance(patch_size, int):
        raise TypeError(f"patch_size must be an int, got {type(patch_size).__name__}")
    if not 1 <= patch_size <= min(height, width):
        raise ValueError(f"patch_size must lie in [1, {min(height, width)}], got {patch_size}")
    rows, cols = height // patch_size, width // patch_size
    cells = []
    for photo in photos:
        grid = photo[: rows * patch_size, : cols * patch_size]
        # (rows, p, cols, p, 3) -> (rows, cols, 3, p, p): one patch per grid cell.
        grid = grid.reshape(rows, patch_size, cols, patch_size, 3).transpose(0, 2, 4, 1, 3)
        cells.append(grid.reshape(rows * cols, 3, patch_size, patch_size))
    labels = np.repeat(np.arange(len(photos)), rows * cols)
    grid_rows, grid_cols = np.divmod(np.tile(np.arange(rows * cols), len(photos)), cols)
    position = np.stack([grid_rows, grid_cols], axis=1)

    index = split_indices(labels, split, test_fraction=test_fraction, seed=seed)
    images = torch.as_tensor(np.concatenate(cells)[index], dtype=torch.float32) / 255.0
    support = "8bit"
    if size is not None and size != patch_size:
        images, support = resize(images, size), "unit_interval"
    position = torch.as_tensor(position[index])
    return ImageDataset(
        images,
        torch.as_tensor(labels[index]),
        {"position": position, "pixel_position": position * patch_size},
        name="patches",
        split=split,
        support=support,
    )
