"""scikit-learn's bundled 8×8 handwritten digits as an :class:`ImageDataset`."""

import torch

from pyromem.data.dataset import ImageDataset
from pyromem.data.resize import resize
from pyromem.data.splits import split_indices


def digits(split="train", *, seed=0, size=None, test_fraction=0.2):
    """The UCI optical-recognition digits bundled with scikit-learn (no network).

    1,797 grey-scale images of the digits 0-9 written by 43 people, with 17 ink
    levels 0..16 mapped to k/16 in [0, 1]. The train/test partition is
    stratified by digit and fixed by ``seed``: 1,437 / 360 images for the
    default ``test_fraction``.

    :param str split: ``"train"`` or ``"test"``.
    :param int seed: seed of the partition.
    :param int size: optional side length; the 8×8 images are resized to
        ``size × size`` bilinearly (e.g. 16 or 28) and stay in [0, 1].
    :param float test_fraction: share of the test split, in (0, 1).
    :returns: an :class:`ImageDataset` with images ``(N, 1, 8, 8)`` (or
        ``(N, 1, size, size)``) in [0, 1], labels in 0..9 and the factor
        ``"index"`` ``(N,)`` long: each image's index in scikit-learn's
        ``load_digits()``.
    """
    # imported here: scikit-learn takes about a second to import, which `pyromem --help`
    # and the datasets that do not need it should not pay
    from sklearn.datasets import load_digits

    bunch = load_digits()
    index = split_indices(bunch.target, split, test_fraction=test_fraction, seed=seed)
    images = torch.as_tensor(bunch.images[index], dtype=torch.float32).unsqueeze(1) / 16.0
    if size is not None:
        images = resize(images, size)
    return ImageDataset(
        images,
        torch.as_tensor(bunch.target[index]),
        {"index": torch.as_tensor(index)},
        name="digits",
        split=split,
        support="unit_interval",
    )
