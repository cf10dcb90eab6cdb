"""A user's own images through load("imagefolder") and load("npz"), on tiny files written here."""

import numpy as np
import pytest
import torch
from PIL import Image

from pyromem.data import DATASETS, load


def _write_image(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)


def _write_folder(root, per_class, shape=(6, 5), rng=None, colour=()):
    # per_class: {class name: number of images}; grey PNGs of random uint8, except
    # the (class, index) pairs in colour, which are RGB. Returns {(class, index): array}.
    rng = rng or np.random.default_rng(0)
    written = {}
    for cls, count in per_class.items():
        for i in range(count):
            rgb = (cls, i) in colour
            array = rng.integers(0, 256, size=shape + ((3,) if rgb else ()), dtype=np.uint8)
            _write_image(root / cls / f"img{i}.png", array)
            written[cls, i] = array
    return written


def _as_chw(array, channels):
    # a written uint8 array (H, W) or (H, W, 3) as float (C, H, W) k/255, grey repeated
    tensor = torch.as_tensor(array).float() / 255.0
    tensor = tensor.unsqueeze(0) if tensor.dim() == 2 else tensor.permute(2, 0, 1)
    return tensor.expand(channels, -1, -1) if tensor.shape[0] != channels else tensor


def _match(images, expected):
    # index in expected (M, C, H, W) of each of images (N, C, H, W); each must match exactly one
    same = (images.flatten(1)[:, None] == expected.flatten(1)[None]).all(-1)
    assert same.sum(1).tolist() == [1] * len(images)
    return same.float().argmax(1)


def test_names_are_known():
    assert {"imagefolder", "npz"} <= set(DATASETS)


# ---------------------------------------------------------------- imagefolder


def test_imagefolder_grey_partition(tmp_path):
    # classes created out of order: labels follow the sorted folder names
    written = _write_folder(tmp_path, {"b_cat": 5, "c_eel": 5, "a_dog": 5})
    names = ["a_dog", "b_cat", "c_eel"]
    keys = sorted(written, key=lambda k: (names.index(k[0]), k[1]))
    expected = torch.stack([_as_chw(written[k], 1) for k in keys])
    expected_labels = torch.tensor([names.index(k[0]) for k in keys])
    train, test = (load("imagefolder", s, root=tmp_path) for s in ("train", "test"))
    assert (len(train), len(test)) == (12, 3)
    for data, split in [(train, "train"), (test, "test")]:
        assert data.name == "imagefolder" and data.split == split
        assert data.event_shape == (1, 6, 5) and data.support == "8bit"
        assert data.labels.dtype == torch.long
    found = torch.cat([_match(train.images, expected), _match(test.images, expected)])
    assert sorted(found.tolist()) == list(range(15))  # disjoint and covering
    assert torch.equal(train.labels, expected_labels[_match(train.images, expected)])
    assert torch.equal(test.labels, expected_labels[_match(test.images, expected)])
    assert sorted(test.labels.tolist()) == [0, 1, 2]  # stratified: one of each class
    # pixel-exact k/255
    assert torch.equal(test.images * 255, (test.images * 255).round())


def test_imagefolder_seeded(tmp_path):
    _write_folder(tmp_path, {"a": 5, "b": 5, "c": 5})
    first = load("imagefolder", "test", root=str(tmp_path), seed=0)
    assert torch.equal(first.images, load("imagefolder", "test", root=tmp_path, seed=0).images)
    others = [load("imagefolder", "test", root=tmp_path, seed=s).images for s in range(1, 6)]
    assert any(not torch.equal(first.images, other) for other in others)
    smaller = load("imagefolder", "test", root=tmp_path, test_fraction=0.4)
    assert len(smaller) == 6


def test_imagefolder_rgb(tmp_path):
    written = _write_folder(tmp_path, {"a": 3, "b": 2}, colour={("b", 1)})
    keys = sorted(written)
    expected = torch.stack([_as_chw(written[k], 3) for k in keys])
    data = [load("imagefolder", s, root=tmp_path) for s in ("train", "test")]
    assert all(d.event_shape == (3, 6, 5) and d.support == "8bit" for d in data)
    found = torch.cat([_match(d.images, expected) for d in data])
    assert sorted(found.tolist()) == list(range(5))
    with pytest.raises(ValueError, match="grey-scale"):
        load("imagefolder", root=tmp_path, binarize="static")


def test_imagefolder_binary_modes(tmp_path):
    rng = np.random.default_rng(1)
    for cls in ("x", "y"):
        for i in range(5):
            bits = rng.integers(0, 2, size=(4, 4)).astype(bool)
            path = tmp_path / cls / f"{i}.png"
            path.parent.mkdir(exist_ok=True)
            Image.fromarray(bits).convert("1").save(path)
    data = load("imagefolder", "train", root=tmp_path)
    assert data.support == "binary" and data.event_shape == (1, 4, 4)
    assert set(data.images.unique().tolist()) == {0.0, 1.0}
    static = load("imagefolder", "train", root=tmp_path, binarize="static")
    assert torch.equal(static.images, data.images)


def test_imagefolder_presplit(tmp_path):
    # train has classes a, b; test has b, c: labels from the union [a, b, c]
    train_written = _write_folder(tmp_path / "train", {"a": 2, "b": 3})
    test_written = _write_folder(tmp_path / "test", {"c": 2, "b": 1}, rng=np.random.default_rng(5))
    (tmp_path / "train" / "a" / "notes.txt").write_text("not an image")
    (tmp_path / "train" / ".ipynb_checkpoints").mkdir()
    train = load("imagefolder", "train", root=tmp_path, seed=3)
    test = load("imagefolder", "test", root=tmp_path, seed=3)
    # ordered by class, then file name
    assert train.labels.tolist() == [0, 0, 1, 1, 1]
    assert test.labels.tolist() == [1, 2, 2]
    expected_train = torch.stack([_as_chw(train_written[k], 1) for k in sorted(train_written)])
    assert torch.equal(train.images, expected_train)
    order = [("b", 0), ("c", 0), ("c", 1)]
    assert torch.equal(test.images, torch.stack([_as_chw(test_written[k], 1) for k in order]))


def test_imagefolder_sizes(tmp_path):
    rng = np.random.default_rng(2)
    small = rng.integers(0, 256, size=(4, 4), dtype=np.uint8)
    _write_image(tmp_path / "train" / "a" / "0.png", small)
    _write_image(tmp_path / "train" / "a" / "1.png", rng.integers(0, 256, (8, 6), np.uint8))
    _write_image(tmp_path / "test" / "a" / "0.png", rng.integers(0, 256, (4, 4), np.uint8))
    with pytest.raises(
        ValueError, match=r"differ in size.*4×4.*8×6.*pass size=<side> \(--size\)"
    ) as info:
        load("imagefolder", root=tmp_path)
    assert "\n" not in str(info.value)
    data = load("imagefolder", "train", root=tmp_path, size=4)
    assert data.event_shape == (1, 4, 4) and data.support == "unit_interval"
    assert torch.equal(data.images[0, 0], torch.as_tensor(small).float() / 255)
    assert 0 <= data.images.min() and data.images.max() <= 1
    # the test images are already at size, and keep their values k/255, but the train split
    # is resized: both splits have its support, which the recipes choose the likelihood by
    test = load("imagefolder", "test", root=tmp_path, size=4)
    assert test.support == "unit_interval"
    assert torch.equal(test.images * 255, (test.images * 255).round())


def test_imagefolder_single_image_class(tmp_path):
    # a class of one image cannot be stratified: an unstratified seeded split instead
    _write_folder(tmp_path, {"a": 6, "b": 1})
    train, test = (load("imagefolder", s, root=tmp_path) for s in ("train", "test"))
    assert (len(train), len(test)) == (5, 2)
    assert sorted(train.labels.tolist() + test.labels.tolist()) == [0] * 6 + [1]


def test_imagefolder_errors(tmp_path):
    with pytest.raises(ValueError, match=r"imagefolder needs root=<directory> \(--root\)"):
        load("imagefolder")
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load("imagefolder", root=missing)
    file = tmp_path / "file.png"
    _write_image(file, np.zeros((3, 3), np.uint8))
    with pytest.raises(ValueError, match=r"root=<directory>.*file\.png"):
        load("imagefolder", root=file)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no class sub-folders"):
        load("imagefolder", root=empty)
    (empty / "a").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        load("imagefolder", root=empty)
    (empty / "a" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"cannot read .*broken\.png"):
        load("imagefolder", root=empty)
    _write_folder(tmp_path / "ok", {"a": 5})
    with pytest.raises(ValueError, match="download: imagefolder data is the user's own"):
        load("imagefolder", root=tmp_path / "ok", download=True)
    with pytest.raises(TypeError, match="test_fraction"):
        load("imagefolder", root=tmp_path / "ok", num_scenes=3)
    with pytest.raises(ValueError, match="test_fraction"):
        load("imagefolder", root=tmp_path / "ok", test_fraction=1.5)
    with pytest.raises(ValueError, match="size"):
        load("imagefolder", root=tmp_path / "ok", size=0)


# ---------------------------------------------------------------- npz


def test_npz_uint8_unlabelled(tmp_path):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(10, 5, 7), dtype=np.uint8)
    path = tmp_path / "mine.npz"
    np.savez(path, images=images)
    expected = torch.as_tensor(images).float().unsqueeze(1) / 255
    train, test = (load("npz", s, root=path) for s in ("train", "test"))
    assert (len(train), len(test)) == (8, 2)
    for data, split in [(train, "train"), (test, "test")]:
        assert data.name == "npz" and data.split == split
        assert data.event_shape == (1, 5, 7) and data.support == "8bit"
        assert data.labels.tolist() == [-1] * len(data)
    found = torch.cat([_match(train.images, expected), _match(test.images, expected)])
    assert sorted(found.tolist()) == list(range(10))
    # file order within a split, and seeded
    assert _match(train.images, expected).tolist() == sorted(_match(train.images, expected))
    again = load("npz", "test", root=str(path))
    assert torch.equal(again.images, test.images)
    others = [load("npz", "test", root=path, seed=s).images for s in range(1, 6)]
    assert any(not torch.equal(test.images, other) for other in others)


def test_npz_float_labelled(tmp_path):
    rng = np.random.default_rng(4)
    images = rng.uniform(size=(15, 3, 4, 4)).astype(np.float32)
    labels = np.repeat([7, 2, 4], 5)
    path = tmp_path / "float.npz"
    np.savez(path, images=images, labels=labels, extra=np.arange(3))
    expected = torch.as_tensor(images)
    train, test = (load("npz", s, root=path) for s in ("train", "test"))
    assert (len(train), len(test)) == (12, 3)
    assert train.event_shape == (3, 4, 4) and train.support == "unit_interval"
    for data in (train, test):
        assert torch.equal(data.labels, torch.as_tensor(labels)[_match(data.images, expected)])
    assert sorted(test.labels.tolist()) == [2, 4, 7]  # stratified
    resized = load("npz", "train", root=path, size=2)
    assert resized.event_shape == (3, 2, 2) and resized.support == "unit_interval"


def test_npz_binary_and_fallback(tmp_path):
    rng = np.random.default_rng(6)
    images = rng.integers(0, 2, size=(10, 1, 3, 3)).astype(np.float64)
    labels = np.array([0] * 9 + [1])  # class 1 has a single image: no stratification
    path = tmp_path / "binary.npz"
    np.savez(path, images=images, labels=labels)
    train, test = (load("npz", s, root=path) for s in ("train", "test"))
    assert train.support == "binary" and (len(train), len(test)) == (8, 2)
    assert sorted(train.labels.tolist() + test.labels.tolist()) == sorted(labels.tolist())
    assert load("npz", root=path, binarize="dynamic").binarize == "dynamic"
    np.savez(path, images=images.astype(bool))
    assert load("npz", root=path).support == "binary"


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_npz_channels_last_is_refused_when_loaded(tmp_path, channels):
    # (N, H, W, C), as PIL and matplotlib keep images, would train as C = H images of H × W
    # and fail only when a figure draws them
    images = np.random.default_rng(0).integers(0, 256, (60, 8, 8, channels), dtype=np.uint8)
    np.savez(tmp_path / "hwc.npz", images=images)
    message = (
        rf"^npz: images of shape \(60, 8, 8, {channels}\) look channels-last \(N, H, W, C\); "
        r"store them as \(N, C, H, W\)"
    )
    with pytest.raises(ValueError, match=message):
        load("npz", root=tmp_path / "hwc.npz")
    # the same pixels as (N, C, H, W) load, with every channel count the figures can draw
    np.savez(tmp_path / "chw.npz", images=images.transpose(0, 3, 1, 2))
    assert load("npz", root=tmp_path / "chw.npz").event_shape == (channels, 8, 8)


def test_npz_channel_counts_the_figures_cannot_draw_are_refused(tmp_path):
    np.savez(tmp_path / "five.npz", images=np.zeros((6, 5, 8, 8), np.uint8))
    with pytest.raises(ValueError, match=r"C in \(1, 3, 4\).*\(6, 5, 8, 8\)"):
        load("npz", root=tmp_path / "five.npz")


def test_npz_errors(tmp_path):
    with pytest.raises(ValueError, match=r"npz needs root=<file\.npz> \(--root\)"):
        load("npz")
    # a run evaluated again after its data moved: the message says how to point to them
    with pytest.raises(FileNotFoundError, match=r"absent\.npz.*moved.*root= \(--root\)"):
        load("npz", root=tmp_path / "absent.npz")
    with pytest.raises(ValueError, match="directory"):
        load("npz", root=tmp_path)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not an archive")
    with pytest.raises(ValueError, match=r"garbage\.npz.*not a readable \.npz"):
        load("npz", root=garbage)
    single = tmp_path / "single.npy"
    np.save(single, np.zeros((2, 3, 3)))
    with pytest.raises(ValueError, match="single array"):
        load("npz", root=single)
    path = tmp_path / "data.npz"
    good = np.zeros((4, 3, 3), np.uint8)

    def case(**arrays):
        np.savez(path, **arrays)
        return path

    with pytest.raises(ValueError, match=r"no 'images' array.*\['pixels'\]"):
        load("npz", root=case(pixels=good))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\) or \(N, H, W\)"):
        load("npz", root=case(images=np.zeros((4, 3), np.uint8)))
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\], got \[-0\.5, 2\]"):
        load("npz", root=case(images=np.array([[[-0.5, 2.0]]] * 4)))
    with pytest.raises(ValueError, match="NaN"):
        load("npz", root=case(images=np.full((4, 2, 2), np.nan)))
    # bad file content, not a wrong Python type: a ValueError, which the CLI shows in one line
    for dtype in (np.int64, np.int16):
        with pytest.raises(
            ValueError, match=f"uint8, bool or floating point, got {dtype.__name__}"
        ):
            load("npz", root=case(images=good.astype(dtype)))
    with pytest.raises(ValueError, match="labels must be integers"):
        load("npz", root=case(images=good, labels=np.zeros(4)))
    with pytest.raises(ValueError, match=r"labels must have shape \(4,\)"):
        load("npz", root=case(images=good, labels=np.zeros(3, int)))
    with pytest.raises(ValueError, match="non-negative"):
        load("npz", root=case(images=good, labels=np.array([0, 1, -1, 0])))
    with pytest.raises(ValueError, match="at least 2 images"):
        load("npz", root=case(images=good[:1]))
    with pytest.raises(ValueError, match=r"download: npz data is the user's own.*--download"):
        load("npz", root=case(images=good), download=True)


# ---------------------------------------------------------------- bad files and odd depths


def test_imagefolder_16_bit_grey_keeps_its_levels(tmp_path):
    # PIL's conversion of a 16-bit file to 8 bits clips every level above 255: these
    # gradients would all load as white, reported as binary
    levels = (np.arange(20).reshape(4, 5) * 3000).astype(np.uint16)
    for cls in ("a", "b"):
        for i in range(3):
            _write_image(tmp_path / cls / f"{i}.png", levels + i)
    assert Image.open(tmp_path / "a" / "0.png").mode.startswith("I")  # a 16-bit PNG
    data = load("imagefolder", "train", root=tmp_path)
    assert data.event_shape == (1, 4, 5) and data.support == "unit_interval"
    expected = {i: torch.as_tensor((levels + i).astype(np.float32) / 65535) for i in range(3)}
    for image in data.images[:, 0]:
        assert any(torch.allclose(image, e, atol=1e-7) for e in expected.values())
    # an 8-bit colour file in the folder: the 16-bit grey one becomes grey RGB, still whole
    _write_image(tmp_path / "b" / "rgb.png", np.full((4, 5, 3), 7, np.uint8))
    both = torch.cat([load("imagefolder", s, root=tmp_path).images for s in ("train", "test")])
    assert both.shape[1:] == (3, 4, 5)
    assert torch.isclose(both.max(), torch.tensor((19 * 3000 + 2) / 65535))


def test_imagefolder_32_bit_files_are_refused_before_decoding(tmp_path):
    # their range cannot be told: PIL's conversion would read floats in [0, 1] as black
    _write_folder(tmp_path, {"a": 3, "b": 3})
    Image.fromarray(np.full((6, 5), 0.5, np.float32)).save(tmp_path / "b" / "x.tif")
    with pytest.raises(ValueError, match=r"^imagefolder: b/x\.tif .* 32-bit floating-point "):
        load("imagefolder", root=tmp_path)
    Image.fromarray(np.full((6, 5), 70000, np.int32)).save(tmp_path / "b" / "x.tif")
    with pytest.raises(ValueError, match=r"32-bit integer pixels \(PIL mode 'I'\).*\.npz"):
        load("imagefolder", root=tmp_path)


def test_imagefolder_truncated_file_is_named(tmp_path):
    # its header reads, its pixels do not: PIL's own error does not say which file
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        for i in range(3):
            _write_image(tmp_path / cls / f"{i}.png", rng.integers(0, 256, (32, 32), np.uint8))
    path = tmp_path / "a" / "0.png"
    path.write_bytes(path.read_bytes()[:200])
    messages = []
    for split in ("train", "test"):
        try:
            load("imagefolder", split, root=tmp_path)
        except ValueError as error:
            messages.append(str(error))
    assert len(messages) == 1 and "\n" not in messages[0]
    assert messages[0].startswith(
        f"imagefolder: cannot decode a/0.png under root={str(tmp_path)!r}"
    )


@pytest.mark.parametrize("folders", [("train",), ("train", "val"), ("a", "test")])
def test_imagefolder_split_folders_are_not_read_as_classes(tmp_path, folders):
    # root/train/cat/... without root/test/ would train on one "class", train
    for folder in folders:
        _write_folder(tmp_path / folder, {"cat": 3, "dog": 3})
    with pytest.raises(ValueError, match=r"^imagefolder: .* would be read as classes.*test/"):
        load("imagefolder", root=tmp_path)


def test_npz_empty_images_wrong_depth_and_wide_labels(tmp_path):
    path = tmp_path / "data.npz"
    for dtype in (np.uint8, np.float32):
        np.savez(path, images=np.zeros((5, 1, 0, 8), dtype))
        with pytest.raises(ValueError, match=r"N, H, W >= 1, got \(5, 1, 0, 8\)"):
            load("npz", root=path)
    # grey and alpha: not channels-last images, as the last axis (4) would suggest
    np.savez(path, images=np.zeros((5, 2, 4, 4), np.uint8))
    with pytest.raises(ValueError, match=r"C = 2 channels \(grey and alpha\?\).*images\[:, :1\]"):
        load("npz", root=path)
    np.savez(path, images=np.full((5, 2, 2), np.inf, np.float32))
    with pytest.raises(ValueError, match="NaN or infinite"):
        load("npz", root=path)
    # 2**64 - 1 would wrap to the label -1, "unlabelled"
    labels = np.array([2**64 - 1, 0, 1, 0, 1], np.uint64)
    np.savez(path, images=np.zeros((5, 2, 2), np.uint8), labels=labels)
    with pytest.raises(ValueError, match=r"labels must fit in int64, got 18446744073709551615"):
        load("npz", root=path)


def test_npz_with_a_damaged_array_is_named_in_one_line(tmp_path):
    import zipfile

    good = tmp_path / "good.npz"
    np.savez(good, images=np.arange(20 * 16, dtype=np.uint8).reshape(20, 1, 4, 4))
    # the archive's directory reads, the array's bytes do not: zipfile's BadZipFile (CRC)
    damaged = bytearray(good.read_bytes())
    start = damaged.index(b"\x93NUMPY")
    damaged[start + 200] ^= 0xFF
    crc = tmp_path / "crc.npz"
    crc.write_bytes(bytes(damaged))
    # numpy's own "EOF: reading array data" (truncated), its "Object arrays cannot be loaded"
    # (pickled objects) and a member that is not a .npy at all (read as bytes)
    truncated, objects, foreign = (tmp_path / f"{n}.npz" for n in ("cut", "obj", "foreign"))
    with zipfile.ZipFile(truncated, "w") as archive:
        archive.writestr("images.npy", crc.read_bytes()[start : start + 150])
    np.savez(objects, images=np.array([None, 1], dtype=object))
    with zipfile.ZipFile(foreign, "w") as archive:
        archive.writestr("images.npy", b"not an array")
    for path in (crc, truncated, objects):
        with pytest.raises(ValueError, match=r"^npz: the 'images' array of root=.* cannot be read"):
            load("npz", root=path)
    with pytest.raises(ValueError, match=r"^npz: the 'images' member of root=.* not a NumPy array"):
        load("npz", root=foreign)


def test_imagefolder_refuses_a_class_folder_without_images(tmp_path):
    # GIFs are not among torchvision's extensions: class b would silently vanish, leaving one
    # class and a label that no image has
    _write_folder(tmp_path, {"a": 3, "c": 3})
    (tmp_path / "b").mkdir()
    for i in range(3):
        Image.fromarray(np.zeros((6, 5), np.uint8)).save(tmp_path / "b" / f"{i}.gif")
    with pytest.raises(
        ValueError, match=r"^imagefolder: the class folder\(s\) b under .* no image"
    ):
        load("imagefolder", root=tmp_path)


def test_imagefolder_split_data_need_test_images_to_load_train(tmp_path):
    # a recipe loads train, then test: an empty test/ must stop it before train is decoded
    _write_folder(tmp_path / "train", {"a": 3})
    (tmp_path / "test" / "a").mkdir(parents=True)
    for split in ("train", "test"):
        with pytest.raises(ValueError, match=r"no image files under .*test; split data need"):
            load("imagefolder", split, root=tmp_path)


def test_imagefolder_refuses_an_image_pil_will_not_open_in_one_line(tmp_path, monkeypatch):
    _write_folder(tmp_path, {"a": 3, "b": 3})
    # PIL refuses more than twice MAX_IMAGE_PIXELS with DecompressionBombError, not an OSError
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)
    with pytest.raises(ValueError, match=r"^imagefolder: a/img0\.png under .* larger than PIL"):
        load("imagefolder", root=tmp_path)


def test_user_data_arguments_of_other_types(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, images=np.zeros((20, 1, 2, 2), np.uint8))
    # a NumPy float is a fraction like any other, not one "outside (0, 1)"
    assert len(load("npz", "test", root=path, test_fraction=np.float64(0.25))) == 5
    assert len(load("npz", "test", root=path, test_fraction=np.float32(0.5))) == 10
    for name in ("npz", "imagefolder"):
        with pytest.raises(TypeError, match=r"^root must be a str or a path, got int 3"):
            load(name, root=3)
    # scikit-learn's random_state stops at 2**32 - 1; the message blamed too few images (the
    # loader itself, as its docstring is cited: load checks the seed first)
    from pyromem.data.user import npz

    with pytest.raises(ValueError, match=r"^seed must lie in \[0, 4294967295\]"):
        npz(root=path, seed=2**32)
