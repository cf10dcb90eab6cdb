"""RGB 32×32 patches of ten photographs: a small, offline stand-in for CIFAR10.

Each photograph is cut into crops of 32, 64 and 128 px on grids of that stride, each crop
box-averaged down to 32×32 (so that a patch shows a whole object or texture at one of three
scales, as a CIFAR10 image shows a whole scene), and its patches are *de-duplicated*: taken in
a fixed random order, a patch is kept only if its RMS distance to every patch kept from the
same photograph is at least :data:`MIN_DISTANCE`, until :data:`PER_PHOTOGRAPH` are kept. A
grid cut of two photographs alone (the first version of this dataset) held hundreds of
near-identical sky and background patches, so that half the median nearest-neighbour distance,
the retrieval threshold of Annabi et al. §5, was below the noise of an 8-bit pixel.

:data:`MIN_DISTANCE` is 0.10, the largest distance on a grid of 0.02 at which every photograph
still yields its 64 patches (at 0.12 ``chelsea`` yields 61 and ``rocket`` 50). At 0.06, the
distance of the cut until 2026-12-06, a fifth of the patches were near-flat (pixel standard
deviation below 0.10) and a photograph's patches crowded each other: 40 % of ``chelsea``'s
patches, whose codes had the smallest norms, lost their own dot-product read in memories of
100 codes. At 0.10 a tenth are near-flat and the median
nearest-neighbour distance is 0.127 (0.112 before); see docs/retrieval.md.

The photographs (the label is the index):

===  ====================  ==========================================================
0-1  ``china``, ``flower``  scikit-learn's sample images (CC BY 2.0), cut at load time
2    ``grace_hopper``      matplotlib's sample image (public domain), cut at load time
3-9  ``astronaut``, ``chelsea``, ``coffee``, ``hubble_deep_field``,
     ``immunohistochemistry``, ``retina``, ``rocket``: scikit-image's sample images
     (public domain or CC0), whose kept patches ship in ``patches_cc0.npz``
===  ====================  ==========================================================

``patches_cc0.npz`` was written by :func:`cut_photograph` on scikit-image 0.26's files
(``astronaut.png``, ``chelsea.png``, ``coffee.png``, ``hubble_deep_field.jpg``, ``ihc.png``,
``retina.jpg``, ``rocket.jpg`` from ``skimage/data``, decoded by Pillow) with ``index`` 3-9;
scikit-image is not needed to load it.
"""

import functools
from importlib import resources

import numpy as np
import torch

from pyromem.data.dataset import ImageDataset
from pyromem.data.resize import resize
from pyromem.data.splits import split_indices

#: Side of the crops, in pixels of the photograph; each is box-averaged to 32 × 32.
CROP_SIDES = (32, 64, 128)
#: Patches kept per photograph.
PER_PHOTOGRAPH = 64
#: The smallest RMS distance (values in [0, 1]) between two kept patches of one photograph.
MIN_DISTANCE = 0.10
PATCH_SIZE = 32


def cut_photograph(photo, index):
    """The de-duplicated patches of one photograph (see the module docstring).

    :param numpy.ndarray photo: ``(H, W, 3)`` uint8, ``H, W >= 128``.
    :param int index: the photograph's label; it seeds the order in which patches are kept.
    :returns: ``(patches, corners, sides)``: uint8 ``(K, 3, 32, 32)``, the crops' top-left
        pixels ``(K, 2)`` and sides ``(K,)``, in the order kept.
    """
    crops, corners, sides = [], [], []
    height, width = photo.shape[:2]
    for side in CROP_SIDES:
        rows, cols, factor = height // side, width // side, side // PATCH_SIZE
        grid = photo[: rows * side, : cols * side].astype(np.float64)
        # (rows, 32, f, cols, 32, f, 3) -> mean over the f × f boxes -> (rows, cols, 3, 32, 32)
        grid = grid.reshape(rows, PATCH_SIZE, factor, cols, PATCH_SIZE, factor, 3).mean((2, 5))
        crops.append(grid.transpose(0, 2, 4, 1, 3).reshape(-1, 3, PATCH_SIZE, PATCH_SIZE))
        row, col = np.divmod(np.arange(rows * cols), cols)
        corners.append(np.stack([row, col], 1) * side)
        sides.append(np.full(rows * cols, side))
    crops = np.round(np.concatenate(crops)).astype(np.uint8)
    corners, sides = np.concatenate(corners), np.concatenate(sides)
    # Squared distances of 8-bit patches are exact integers: the same patches are kept on
    # every machine.
    flat = crops.reshape(len(crops), -1).astype(np.int64)
    smallest = MIN_DISTANCE**2 * 255**2 * flat.shape[1]
    kept = []
    for i in np.random.default_rng(index).permutation(len(crops)):
        if kept and ((flat[kept] - flat[i]) ** 2).sum(1).min() < smallest:
            continue
        kept.append(int(i))
        if len(kept) == PER_PHOTOGRAPH:
            break
    return crops[kept], corners[kept], sides[kept]


@functools.lru_cache(maxsize=1)
def _all_patches():
    # Decoding the JPEGs and the de-duplication take most of the loader's time; they never
    # change.
    from matplotlib import cbook
    from sklearn.datasets import load_sample_images

    with cbook.get_sample_data("grace_hopper.jpg") as file:
        from PIL import Image

        hopper = np.asarray(Image.open(file).convert("RGB"))
    cut = [
        cut_photograph(np.asarray(photo), i)
        for i, photo in enumerate([*load_sample_images().images, hopper])
    ]
    with resources.files("pyromem.data").joinpath("patches_cc0.npz").open("rb") as file:
        shipped = np.load(file)
        cut.append((shipped["patches"], shipped["corners"], shipped["sides"]))
        labels_shipped = shipped["labels"]
    labels = np.concatenate(
        [np.full(len(c[0]), i) for i, c in enumerate(cut[:-1])] + [labels_shipped]
    )
    return tuple(np.concatenate([c[k] for c in cut]) for k in range(3)) + (labels,)


def patches(split="train", *, seed=0, size=None, test_fraction=0.2):
    """De-duplicated RGB 32 × 32 patches of ten photographs (see the module docstring).

    640 patches, 64 per photograph; the train/test partition is stratified by photograph and
    fixed by ``seed`` (512 / 128 by default).

    :param str split: ``"train"`` or ``"test"``.
    :param int seed: seed of the partition.
    :param int size: optional side length the patches are resized to.
    :param float test_fraction: share of the test split, in (0, 1).
    :returns: an :class:`ImageDataset` of images ``(N, 3, 32, 32)`` with 8-bit values k/255,
        labels in {0, ..., 9} (the photograph) and factors ``"pixel_position"`` (``(N, 2)``
        long: pixel row and column of the crop's top-left corner in its photograph) and
        ``"crop_side"`` (``(N,)`` long: the crop's side in pixels, 32, 64 or 128).
    """
    images, corners, sides, labels = _all_patches()
    index = split_indices(labels, split, test_fraction=test_fraction, seed=seed)
    data = torch.as_tensor(images[index], dtype=torch.float32) / 255.0
    support = "8bit"
    if size is not None and size != PATCH_SIZE:
        data, support = resize(data, size), "unit_interval"
    return ImageDataset(
        data,
        torch.as_tensor(labels[index]),
        {
            "pixel_position": torch.as_tensor(corners[index]),
            "crop_side": torch.as_tensor(sides[index]),
        },
        name="patches",
        split=split,
        support=support,
    )
