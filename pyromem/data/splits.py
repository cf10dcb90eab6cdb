"""Seeded, stratified train/test splits of the embedded datasets and of a user's own data."""

import numpy as np

from pyromem.checks import as_int

SPLITS = ("train", "test")
#: The largest seed of a partition: scikit-learn's ``random_state`` (and ``--seed``) stops at
#: 2**32 - 1.
MAX_SEED = 2**32 - 1


def split_indices(labels, split, *, test_fraction, seed, stratify=True):
    """The indices of one split of a seeded train/test partition, stratified by default.

    The partition is the same for every call with the same ``labels``,
    ``test_fraction`` and ``seed``, so the train and test splits of two calls are
    disjoint and together cover every example.

    :param labels: integer class labels of shape ``(N,)`` (array or tensor);
        each class keeps its share in both splits.
    :param str split: ``"train"`` or ``"test"``.
    :param float test_fraction: the share of examples in the test split, in (0, 1).
    :param int seed: seed of the partition, in [0, :data:`MAX_SEED`].
    :param bool stratify: keep each class's share in both splits (scikit-learn
        raises a :class:`ValueError` when a class has a single example or a split
        is smaller than the number of classes); ``False`` partitions uniformly at
        random, ignoring the labels.
    :returns: sorted ``numpy`` indices of the split.
    """
    check_split(split)
    check_seed(seed)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction!r}")
    labels = np.asarray(labels)
    # imported here: scikit-learn takes about a second to import (see pyromem.data.digits)
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(
        np.arange(len(labels)),
        test_size=test_fraction,
        random_state=seed,
        stratify=labels if stratify else None,
    )
    return np.sort(train if split == "train" else test)


def check_split(split):
    """Raise a :class:`ValueError` unless ``split`` is ``"train"`` or ``"test"``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def check_seed(seed):
    """Return ``seed`` as an int, or raise a :class:`ValueError` unless it lies in [0,
    :data:`MAX_SEED`] (scikit-learn would refuse a larger one in its own words, after a
    loader had done its work)."""
    seed = as_int(seed, "seed", 0)
    if seed > MAX_SEED:
        raise ValueError(f"seed must lie in [0, {MAX_SEED}] (2**32 - 1), got {seed}")
    return seed
