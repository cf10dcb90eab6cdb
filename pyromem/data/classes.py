"""Class-disjoint data for few-shot learning: select classes, hold classes out.

Few-shot evaluation asks a model to write into memory, and then recognise,
classes it never saw in training. :func:`few_shot_splits` gives a train part
and a test part with no class in common, either by holding ``test_classes``
out of training (MNIST trained on 0-4 and tested on 5-9) or by checking that
the two splits already have different classes (Omniglot's background and
evaluation alphabets, the embedded ``glyphs``).

Which labels denote the same class: labels are compared as numbers, except
for the datasets in :data:`SPLIT_LOCAL_LABELS`, whose labels are numbered
within each split: there label 0 of the train split and label 0 of the test
split are different characters, so a train and a test split of such a dataset
never share a class. ``glyphs`` needs no exception: its labels are global
character ids, different between its alphabet-disjoint splits.
"""

import numbers

import torch

from pyromem.data.dataset import ImageDataset

#: Datasets whose labels are numbered within each split and whose splits hold
#: different classes by construction (Omniglot: background and evaluation
#: alphabets, each numbering its characters from 0).
SPLIT_LOCAL_LABELS = ("omniglot",)


def select_classes(dataset, classes):
    """The items of ``dataset`` whose label is one of ``classes``.

    Labels keep their values (they are not renumbered); factors, name, split,
    support and binarisation are kept too (see :meth:`ImageDataset.subset`).

    :param ImageDataset dataset: a labelled dataset of ``N`` images.
    :param classes: the labels to keep, an iterable of non-negative ints (or an
        integer tensor); repeats are ignored.
    :returns: an :class:`ImageDataset` of the ``M <= N`` images of those
        classes, in their original order.
    :raises ValueError: if ``dataset`` is unlabelled (every label -1),
        ``classes`` is empty, or a class is not in ``dataset``.
    """
    _check_dataset("dataset", dataset)
    wanted = _check_classes("classes", classes, unique=False)
    present = set(dataset.labels.tolist())
    missing = sorted(set(wanted) - present)
    if missing:
        raise ValueError(
            f"classes: {_describe(missing)} not in the {dataset.split} split of "
            f"{dataset.name}, whose classes are {_describe(sorted(present))}"
        )
    return dataset.subset(torch.isin(dataset.labels, torch.tensor(wanted)))


def few_shot_splits(train, test, test_classes=None):
    """A train part and a test part with disjoint classes, for few-shot learning.

    With ``test_classes``, the train part is ``train`` without those classes and
    the test part is ``test`` with only those classes; for a dataset in
    :data:`SPLIT_LOCAL_LABELS` whose two arguments are different splits,
    ``test_classes`` are labels of ``test`` and ``train`` is kept whole, since
    none of its classes is a test class. Without ``test_classes`` the two
    datasets must already have disjoint classes and are returned as they are.
    Labels are compared as described in :mod:`pyromem.data.classes`.

    :param ImageDataset train: the labelled training data.
    :param ImageDataset test: the labelled test data.
    :param test_classes: optional labels of ``test`` held out of training: a
        non-empty iterable of distinct non-negative ints (or an integer tensor),
        e.g. ``(5, 6, 7, 8, 9)`` for MNIST.
    :returns: ``(train_part, test_part)``, two :class:`ImageDataset`.
    :raises ValueError: if a dataset is unlabelled, ``test_classes`` is empty,
        repeats a class, names a class not in ``test`` or leaves no class to
        train on, or if, without ``test_classes``, the splits share classes.
    """
    _check_dataset("train", train)
    _check_dataset("test", test)
    by_construction = (
        train.name == test.name and train.name in SPLIT_LOCAL_LABELS and train.split != test.split
    )
    # -1 marks an unlabelled image, of no class: it is neither shared nor held out
    train_classes = sorted(set(train.labels.tolist()) - {-1})
    test_present = sorted(set(test.labels.tolist()) - {-1})
    if test_classes is None:
        shared = [] if by_construction else sorted(set(train_classes) & set(test_present))
        if shared:
            example = tuple(shared[len(shared) // 2 :])
            raise ValueError(
                f"test_classes: {train.name} has the same classes {_describe(shared)} in train "
                f"and test; pass test_classes to hold some out, e.g. test_classes={example} "
                f"(--test-classes {' '.join(map(str, example))})"
            )
        return train, test
    held = _check_classes("test_classes", test_classes, unique=True)
    missing = sorted(set(held) - set(test_present))
    if missing:
        raise ValueError(
            f"test_classes: {_describe(missing)} not in the {test.split} split of {test.name}, "
            f"whose classes are {_describe(test_present)}"
        )
    if by_construction:
        return train, select_classes(test, held)
    kept = sorted(set(train_classes) - set(held))
    if not kept:
        raise ValueError(
            f"test_classes: holding out {_describe(sorted(held))} leaves no class of "
            f"{train.name}'s {train.split} split (classes {_describe(train_classes)}) to "
            "train on"
        )
    return select_classes(train, kept), select_classes(test, held)


def _check_dataset(name, dataset):
    if not isinstance(dataset, ImageDataset):
        raise TypeError(f"{name} must be an ImageDataset, got {type(dataset).__name__}")
    if len(dataset) == 0:
        raise ValueError(f"{name} is empty")
    if bool((dataset.labels == -1).all()):
        raise ValueError(
            f"{name}: {dataset.name}'s {dataset.split} split has no labels (every label is -1), "
            "so it has no classes to select"
        )


def _check_classes(name, classes, unique):
    # classes as a list of Python ints, checked.
    if isinstance(classes, torch.Tensor):
        if classes.is_floating_point() or classes.dtype == torch.bool:
            raise TypeError(f"{name} must hold ints, got a tensor of {classes.dtype}")
        classes = classes.reshape(-1).tolist()
    elif isinstance(classes, (str, bytes)) or not hasattr(classes, "__iter__"):
        raise TypeError(f"{name} must be an iterable of ints, got {type(classes).__name__}")
    classes = list(classes)
    bad = [c for c in classes if isinstance(c, bool) or not isinstance(c, numbers.Integral)]
    if bad:
        raise TypeError(f"{name} must hold ints, got {bad[0]!r} ({type(bad[0]).__name__})")
    classes = [int(c) for c in classes]
    if not classes:
        raise ValueError(f"{name} must name at least one class, got none")
    if min(classes) < 0:
        raise ValueError(
            f"{name} must be non-negative (-1 marks unlabelled images), got {min(classes)}"
        )
    if unique and len(set(classes)) < len(classes):
        repeated = sorted({c for c in classes if classes.count(c) > 1})
        raise ValueError(f"{name} repeats {_describe(repeated)}; name each class once")
    return sorted(set(classes))


def _describe(classes):
    # A sorted list of classes, shortened to its ends when long, for one-line messages.
    if len(classes) <= 20:
        return str(list(classes))
    head = ", ".join(map(str, classes[:5]))
    tail = ", ".join(map(str, classes[-3:]))
    return f"[{head}, ..., {tail}] ({len(classes)} classes)"
