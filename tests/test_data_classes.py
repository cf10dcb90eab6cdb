"""select_classes and few_shot_splits: class-disjoint data for few-shot learning."""

import numpy as np
import pytest
import torch

from pyromem.data import ImageDataset, few_shot_splits, load, select_classes
from tests.test_data_torchvision import _write_idx

GLYPHS = {"num_alphabets": 4, "num_characters": 3, "num_drawers": 4, "num_test_alphabets": 2}


def _dataset(labels, name="toy", split="train", binarize=None):
    labels = torch.as_tensor(labels)
    n = len(labels)
    images = torch.linspace(0.05, 0.95, n * 4).reshape(n, 1, 2, 2)
    factors = {"drawer": torch.arange(n) * 10}
    data = ImageDataset(images, labels, factors, name=name, split=split, support="unit_interval")
    return data if binarize is None else data.binarized(binarize, seed=1)


def test_select_classes_keeps_everything():
    data = _dataset([0, 1, 2, 0, 1, 2])
    part = select_classes(data, [2, 0])
    assert part.labels.tolist() == [0, 2, 0, 2]
    assert part.factors["drawer"].tolist() == [0, 20, 30, 50]
    assert torch.equal(part.images, data.images[[0, 2, 3, 5]])
    assert (part.name, part.split, part.support, part.binarize) == (
        "toy",
        "train",
        "unit_interval",
        None,
    )
    for classes in [torch.tensor([2, 0]), np.array([0, 2]), (c for c in (0, 2, 2))]:
        assert select_classes(data, classes).labels.tolist() == [0, 2, 0, 2]


def test_select_classes_static_binarisation_is_not_redrawn():
    data = _dataset([0, 1, 2, 0, 1, 2], binarize="static")
    part = select_classes(data, [1])
    assert torch.equal(part.images, data.images[[1, 4]])
    assert part.binarize == "static" and part.support == "binary"
    with pytest.raises(ValueError, match="already binarised"):
        part.binarized("dynamic")


def test_select_classes_dynamic_binarisation_keeps_grey_levels():
    data = _dataset([0, 1, 2, 0, 1, 2], binarize="dynamic")
    part = select_classes(data, [0, 1])
    assert torch.equal(part.images, data.images[[0, 1, 3, 4]])  # grey levels
    assert part.binarize == "dynamic" and part.support == "binary"
    assert set(torch.stack([part[i] for i in range(4)]).unique().tolist()) <= {0.0, 1.0}


def test_subset():
    data = _dataset([3, 4, 5])
    assert data.subset(torch.tensor([True, False, True])).labels.tolist() == [3, 5]
    assert data.subset([2, 0]).factors["drawer"].tolist() == [20, 0]
    with pytest.raises(ValueError, match="boolean mask"):
        data.subset(torch.tensor([True, False]))
    with pytest.raises(ValueError, match="indices"):
        data.subset(torch.tensor([0.0]))


def test_select_classes_errors():
    data = _dataset([0, 1, 2, 0])
    with pytest.raises(ValueError, match=r"classes: \[5, 7\] not in .*classes are \[0, 1, 2\]"):
        select_classes(data, [0, 5, 7])
    with pytest.raises(ValueError, match="at least one class"):
        select_classes(data, [])
    with pytest.raises(TypeError, match="ints"):
        select_classes(data, [1.0])
    with pytest.raises(TypeError, match="ints"):
        select_classes(data, [True])
    with pytest.raises(TypeError, match="iterable"):
        select_classes(data, 1)
    with pytest.raises(ValueError, match="non-negative"):
        select_classes(data, [-1])
    with pytest.raises(TypeError, match="ImageDataset"):
        select_classes(data.images, [0])
    unlabelled = _dataset([-1, -1, -1])
    with pytest.raises(ValueError, match="has no labels"):
        select_classes(unlabelled, [0])
    with pytest.raises(ValueError, match="has no labels"):
        few_shot_splits(unlabelled, _dataset([0], split="test"))


def test_few_shot_splits_hand_built():
    train = _dataset([0, 1, 2, 3, 0, 1, 2, 3])
    test = _dataset([0, 1, 2, 3], split="test")
    train_part, test_part = few_shot_splits(train, test, test_classes=[3, 1])
    assert train_part.labels.tolist() == [0, 2, 0, 2] and train_part.split == "train"
    assert test_part.labels.tolist() == [1, 3] and test_part.split == "test"
    # already disjoint: returned as they are
    disjoint = _dataset([4, 5], split="test")
    assert few_shot_splits(train, disjoint) == (train, disjoint)


def test_few_shot_splits_split_local_labels():
    # Omniglot numbers characters within each split: label 0 of the background set
    # and label 0 of the evaluation set are different characters.
    train = _dataset([0, 1, 2, 0, 1, 2], name="omniglot")
    test = _dataset([0, 1, 0, 1], name="omniglot", split="test")
    assert few_shot_splits(train, test) == (train, test)
    train_part, test_part = few_shot_splits(train, test, test_classes=(1,))
    assert train_part is train and test_part.labels.tolist() == [1, 1]
    # two datasets of the same split do share their classes
    with pytest.raises(ValueError, match=r"omniglot has the same classes \[0, 1\]"):
        few_shot_splits(train, _dataset([0, 1], name="omniglot"))


def test_few_shot_splits_glyphs():
    train, test = (load("glyphs", s, **GLYPHS) for s in ("train", "test"))
    assert set(train.labels.tolist()).isdisjoint(test.labels.tolist())
    assert few_shot_splits(train, test) == (train, test)
    held = sorted(set(test.labels.tolist()))[:2]
    train_part, test_part = few_shot_splits(train, test, test_classes=held)
    assert len(train_part) == len(train)
    assert sorted(set(test_part.labels.tolist())) == held
    assert len(test_part) == 2 * GLYPHS["num_drawers"]
    # glyphs' labels are global character ids: splits that share an alphabet share classes
    wider = load("glyphs", "test", **{**GLYPHS, "num_test_alphabets": 3})
    with pytest.raises(ValueError, match=r"glyphs has the same classes \[3, 4, 5\]"):
        few_shot_splits(train, wider)


def _write_mnist(root):
    # every digit twice in train and once in test
    rng = np.random.default_rng(0)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    written = {}
    for prefix, split, labels in [
        ("train", "train", np.tile(np.arange(10), 2)),
        ("t10k", "test", np.arange(10)[::-1]),
    ]:
        images = rng.integers(0, 256, size=(len(labels), 28, 28))
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        written[split] = images, labels
    return written


def test_few_shot_splits_mnist(tmp_path):
    written = _write_mnist(tmp_path)
    train, test = (load("mnist", s, root=tmp_path) for s in ("train", "test"))
    message = (
        r"test_classes: mnist has the same classes \[0, 1, 2, 3, 4, 5, 6, 7, 8, 9\] in train "
        r"and test; pass test_classes to hold some out, e\.g\. test_classes=\(5, 6, 7, 8, 9\) "
        r"\(--test-classes 5 6 7 8 9\)$"
    )
    with pytest.raises(ValueError, match=message):
        few_shot_splits(train, test)
    train_part, test_part = few_shot_splits(train, test, test_classes=(5, 6, 7, 8, 9))
    images, labels = written["train"]
    keep = labels < 5
    assert train_part.labels.tolist() == labels[keep].tolist()
    assert torch.equal(train_part.images[:, 0] * 255, torch.as_tensor(images[keep]).float())
    images, labels = written["test"]
    keep = labels >= 5
    assert test_part.labels.tolist() == labels[keep].tolist() == [9, 8, 7, 6, 5]
    assert torch.equal(test_part.images[:, 0] * 255, torch.as_tensor(images[keep]).float())
    assert test_part.support == "8bit" and test_part.name == "mnist"


def test_few_shot_splits_validation():
    train = _dataset([0, 1, 2, 0, 1, 2])
    test = _dataset([0, 1, 2], split="test")
    with pytest.raises(ValueError, match="at least one class"):
        few_shot_splits(train, test, test_classes=())
    with pytest.raises(ValueError, match=r"repeats \[2\]"):
        few_shot_splits(train, test, test_classes=(2, 1, 2))
    with pytest.raises(TypeError, match="ints"):
        few_shot_splits(train, test, test_classes=(2.0,))
    with pytest.raises(ValueError, match=r"\[7\] not in the test split of toy"):
        few_shot_splits(train, test, test_classes=(1, 7))
    with pytest.raises(ValueError, match="leaves no class .* to train on"):
        few_shot_splits(train, test, test_classes=(0, 1, 2))
    with pytest.raises(TypeError, match="test must be an ImageDataset"):
        few_shot_splits(train, test.images, test_classes=(1,))


def test_few_shot_splits_leave_unlabelled_images_out_of_both_parts():
    # -1 marks an unlabelled image: it was taken for a training class, then refused as one
    images = torch.rand(12, 1, 4, 4)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, -1, -1, 4, 4])
    train = ImageDataset(images, labels, name="npz", split="train")
    test = ImageDataset(images, labels, name="npz", split="test")
    train_part, test_part = few_shot_splits(train, test, test_classes=(3, 4))
    assert train_part.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert test_part.labels.tolist() == [3, 3, 4, 4]
