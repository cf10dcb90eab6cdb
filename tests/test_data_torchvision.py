"""The torchvision loaders, run offline on tiny files in torchvision's on-disk formats."""

import importlib
import os
import pickle
import struct

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from pyromem.data import load

IDX_FOLDERS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
# the module, whose helpers pyromem.data does not export
EXTERNAL = importlib.import_module("pyromem.data.external")


def _write_idx(path, array):
    # The idx format: magic (0, 0, type 0x08 = ubyte, number of dims), big-endian
    # int32 sizes, then the bytes.
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _write_mnist(root, folder, rng):
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    written = {}
    for prefix, n in [("train", 7), ("t10k", 4)]:
        images = rng.integers(0, 256, size=(n, 28, 28))
        labels = rng.integers(0, 10, size=n)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        written["train" if prefix == "train" else "test"] = images, labels
    return written


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_idx_datasets(tmp_path, name, split):
    written = _write_mnist(tmp_path, IDX_FOLDERS[name], np.random.default_rng(0))
    images, labels = written[split]
    data = load(name, split, root=tmp_path)
    assert data.images.shape == (len(images), 1, 28, 28) and data.images.dtype == torch.float32
    assert torch.equal(data.images[:, 0] * 255, torch.as_tensor(images).float())
    assert torch.equal(data.labels, torch.as_tensor(labels))
    assert data.support == "8bit" and data.name == name and data.split == split
    binary = load(name, split, root=str(tmp_path), binarize="static")
    assert set(binary.images.unique().tolist()) <= {0.0, 1.0}
    resized = load(name, split, root=tmp_path, size=14)
    assert resized.event_shape == (1, 14, 14) and resized.support == "unit_interval"


def test_cifar10(tmp_path, monkeypatch):
    # torchvision checks the md5 sums of the real batches, which a tiny fixture
    # cannot meet: only that check is replaced, by one for the files' existence.
    monkeypatch.setattr(
        torchvision.datasets.cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path)
    )
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    written = {"train": ([], []), "test": ([], [])}
    for batch, split in [(f"data_batch_{i}", "train") for i in range(1, 6)] + [
        ("test_batch", "test")
    ]:
        data = rng.integers(0, 256, size=(2, 3 * 32 * 32), dtype=np.uint8)
        labels = rng.integers(0, 10, size=2).tolist()
        with open(folder / batch, "wb") as f:
            pickle.dump({"data": data, "labels": labels}, f)
        written[split][0].append(data)
        written[split][1].extend(labels)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)

    for split, n in [("train", 10), ("test", 2)]:
        data = load("cifar10", split, root=tmp_path)
        expected = torch.as_tensor(np.concatenate(written[split][0])).view(n, 3, 32, 32)
        assert data.images.shape == (n, 3, 32, 32)
        assert torch.equal(data.images * 255, expected.float())  # channel-first RGB
        assert torch.equal(data.labels, torch.tensor(written[split][1]))
        assert data.support == "8bit"
    with pytest.raises(ValueError, match="C = 1"):
        load("cifar10", root=tmp_path, binarize="static")


def _write_omniglot(root, folder, alphabets, drawers, rng):
    # Each image: white (255) background with one black stroke pixel per drawer
    # at a known place, so the loaded images can be checked pixel by pixel.
    strokes = {}
    for alphabet, characters in alphabets.items():
        for character in characters:
            path = root / "omniglot-py" / folder / alphabet / character
            path.mkdir(parents=True)
            for drawer in drawers:
                pixels = np.full((105, 105), 255, dtype=np.uint8)
                row, col = rng.integers(0, 105, size=2)
                pixels[row, col] = 0
                Image.fromarray(pixels).convert("1").save(path / f"0{drawer:03d}_{drawer:02d}.png")
                strokes[(alphabet, character, drawer)] = (row, col)
    return strokes


def test_omniglot(tmp_path):
    rng = np.random.default_rng(0)
    alphabets = {"Greek": ["character02", "character01"], "Alphabet_of_the_Magi": ["character01"]}
    strokes = _write_omniglot(tmp_path, "images_background", alphabets, [3, 1], rng)
    data = load("omniglot", "train", root=tmp_path)
    assert data.images.shape == (6, 1, 105, 105) and data.support == "binary"
    # Sorted by alphabet, character and file: labels the same on any file system.
    assert data.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert data.factors["alphabet"].tolist() == [0, 0, 1, 1, 1, 1]
    assert data.factors["character"].tolist() == [0, 0, 0, 0, 1, 1]
    assert data.factors["drawer"].tolist() == [1, 3] * 3
    order = [("Alphabet_of_the_Magi", "character01"), ("Greek", "character01")]
    order += [("Greek", "character02")]
    for i, (alphabet, character) in enumerate(order):
        for j, drawer in enumerate([1, 3]):
            image = data.images[2 * i + j, 0]
            # Inverted: the one black stroke pixel is the only 1.
            assert image.sum() == 1 and image[strokes[(alphabet, character, drawer)]] == 1
    small = load("omniglot", "train", root=tmp_path, size=28, binarize="dynamic")
    assert small.event_shape == (1, 28, 28) and small.images.max() <= 1
    with pytest.raises(FileNotFoundError, match="images_evaluation"):
        load("omniglot", "test", root=tmp_path)


@pytest.mark.parametrize(
    "name, where",
    [
        ("mnist", "MNIST/raw"),
        ("fashion_mnist", "FashionMNIST/raw"),
        ("cifar10", "cifar-10-batches-py"),
        ("omniglot", os.path.join("omniglot-py", "images_background")),
    ],
)
def test_missing_files_without_download(tmp_path, name, where):
    with pytest.raises(FileNotFoundError) as info:
        load(name, root=tmp_path / "empty")
    message = str(info.value)
    assert os.path.join(str(tmp_path / "empty"), where) in message
    # the keyword and, for a user of the command line, its flag
    assert "download=True (--download)" in message and "\n" not in message


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "omniglot"])
def test_missing_root_names_the_keyword_and_the_flag(name):
    with pytest.raises(ValueError) as info:
        load(name)
    message = str(info.value)
    assert "root=<directory> (--root)" in message and "download=True, --download" in message
    assert "\n" not in message


@pytest.mark.parametrize("name, module", [("mnist", "mnist"), ("cifar10", "cifar")])
def test_a_failed_download_is_one_line_that_says_where_the_files_go(
    tmp_path, monkeypatch, name, module
):
    import urllib.error

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    # torchvision's own fetch, as it fails without a network (MNIST retries each mirror)
    monkeypatch.setattr(f"torchvision.datasets.{module}.download_and_extract_archive", offline)
    with pytest.raises(ConnectionError) as info:
        load(name, root=tmp_path, download=True)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{name}: could not download it into")
    assert "Name or service not known" in message and str(tmp_path) in message


def _truncate(path, keep):
    path.write_bytes(path.read_bytes()[:keep])


@pytest.mark.parametrize("keep", [0, 5000])
def test_a_truncated_idx_file_is_named_as_unreadable_not_as_missing(tmp_path, keep):
    # torchvision skips a download when the files exist: "pass download=True" would not help
    _write_mnist(tmp_path, "MNIST", np.random.default_rng(0))
    _truncate(tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte", keep)
    with pytest.raises(ValueError) as info:
        load("mnist", root=tmp_path)
    message = str(info.value)
    where = os.path.join(str(tmp_path), "MNIST", "raw")
    assert message.startswith(f"mnist: the files under {where} cannot be read as mnist (")
    assert "truncated" in message and "\n" not in message
    assert load("mnist", "test", root=tmp_path).images.shape == (4, 1, 28, 28)  # intact files


def test_idx_files_of_different_lengths_are_refused(tmp_path):
    _write_mnist(tmp_path, "MNIST", np.random.default_rng(0))
    _write_idx(tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte", np.zeros(3, np.uint8))
    with pytest.raises(
        ValueError,
        match=r"^mnist: .* holds 7 images \(train-images-idx3-ubyte\) "
        r"and 3 labels \(train-labels-idx1-ubyte\)",
    ):
        load("mnist", root=tmp_path)


def test_cifar10_files_torchvision_rejects_are_named_as_unreadable(tmp_path):
    # without the md5 patch of test_cifar10, torchvision rejects these files as it rejects a
    # damaged batch: they are there, so "not found, download it" would mislead
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(b"damaged")
    with pytest.raises(
        ValueError,
        match=r"^cifar10: the files under .*cifar-10-batches-py "
        r"cannot be read as cifar10 \(torchvision found a file missing",
    ):
        load("cifar10", root=tmp_path)


def test_a_root_inside_the_dataset_folder_names_the_root_to_pass(tmp_path):
    _write_mnist(tmp_path, "MNIST", np.random.default_rng(0))
    for inside in (tmp_path / "MNIST", tmp_path / "MNIST" / "raw"):
        with pytest.raises(FileNotFoundError) as info:
            load("mnist", root=inside)
        message = str(info.value)
        assert message.endswith(
            f"root is the folder that holds MNIST/: pass root={str(tmp_path)!r} (--root)"
        )
        assert "download=True (--download)" not in message
    # a folder named like the dataset's that does not hold it: no such advice
    with pytest.raises(FileNotFoundError, match=r"download=True \(--download\)"):
        load("fashion_mnist", root=tmp_path / "MNIST")


def test_an_unreadable_omniglot_drawing_is_named(tmp_path):
    _write_omniglot(
        tmp_path, "images_background", {"Greek": ["c1"]}, [1, 2], np.random.default_rng(0)
    )
    path = tmp_path / "omniglot-py" / "images_background" / "Greek" / "c1" / "0001_01.png"
    _truncate(path, 30)
    with pytest.raises(ValueError, match=rf"^omniglot: cannot read {path} as an image"):
        load("omniglot", root=tmp_path)
    (tmp_path / "empty" / "omniglot-py" / "images_background").mkdir(parents=True)
    with pytest.raises(ValueError, match="^omniglot: found no character images under"):
        load("omniglot", root=tmp_path / "empty")


def test_size_is_checked_before_the_files_are_read(tmp_path, monkeypatch):
    def unread(*args, **kwargs):
        raise AssertionError("the files were read before size was checked")

    monkeypatch.setattr(EXTERNAL, "_open", unread)
    for name in ("mnist", "fashion_mnist", "cifar10", "omniglot"):
        with pytest.raises(ValueError, match="^size must be a positive int"):
            load(name, root=tmp_path, size=0)


@pytest.mark.parametrize("name", ["mnist", "cifar10", "omniglot"])
def test_a_root_of_another_type_is_named(name):
    # os.fspath's "expected str, bytes or os.PathLike object, not int" named no argument
    with pytest.raises(TypeError, match=r"^root must be a str or a path, got int 3"):
        load(name, root=3)
