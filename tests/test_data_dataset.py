import pytest
import torch

from pyromem.data import DATASETS, ImageDataset, check_images, load


def test_static_binarisation_is_one_fixed_binary_sample():
    grey = load("digits")
    data = load("digits", binarize="static")
    assert data.support == "binary" and data.binarize == "static"
    assert set(data.images.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(data[0], data[0])
    assert torch.equal(data.images, load("digits", binarize="static").images)
    assert torch.equal(data.images, grey.binarized("static", seed=0).images)
    assert not torch.equal(data.images, grey.binarized("static", seed=1).images)
    # Pixels are black only where the grey level is 0 and white only where it is > 0.
    assert (data.images[grey.images == 0] == 0).all()
    # One sample of ~92,000 pixels: its mean is the mean grey level up to sampling error.
    assert abs(data.images.mean() - grey.images.mean()) < 0.01
    check_images(data.images, data.event_shape, support=data.support)


def test_dynamic_binarisation_resamples_on_every_access():
    data = load("digits", binarize="dynamic")
    assert data.support == "binary"
    # The grey levels stay in .images; every access draws new binary pixels.
    assert torch.equal(data.images, load("digits").images)
    first, second = data[0], data[0]
    assert set(first.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(first, second)
    draws = torch.stack(data.__getitems__([0] * 4000))
    assert set(draws.unique().tolist()) == {0.0, 1.0}
    # Per pixel the frequency of 1 is the grey level (4,000 draws: std error <= 0.008).
    assert torch.allclose(draws.mean(0), data.images[0], atol=0.04)


def test_getitems_and_dataloader():
    data = load("digits", "test")
    batch = data.__getitems__([3, 1, 4])
    assert isinstance(batch, list) and len(batch) == 3
    assert torch.equal(torch.stack(batch), data.images[[3, 1, 4]])
    loader = torch.utils.data.DataLoader(data, batch_size=64)
    first = next(iter(loader))
    assert torch.equal(first, data.images[:64])
    assert sum(len(b) for b in loader) == len(data)
    binary = load("digits", "test", binarize="dynamic")
    batch = next(iter(torch.utils.data.DataLoader(binary, batch_size=64, shuffle=True)))
    assert batch.shape == (64, 1, 8, 8) and set(batch.unique().tolist()) <= {0.0, 1.0}


def test_binarize_applies_to_grey_datasets_only():
    assert load("glyphs", binarize="static", num_drawers=2).support == "binary"
    with pytest.raises(ValueError, match="C = 1"):
        load("patches", binarize="dynamic")


def test_image_dataset_checks_its_arguments():
    images, labels = torch.rand(4, 1, 3, 3), torch.arange(4)
    with pytest.raises(TypeError, match="images"):
        ImageDataset(images.double().long(), labels, name="x", split="train")
    with pytest.raises(ValueError, match="labels"):
        ImageDataset(images, torch.arange(5), name="x", split="train")
    with pytest.raises(TypeError, match="labels"):
        ImageDataset(images, torch.zeros(4), name="x", split="train")
    with pytest.raises(ValueError, match=r"factors\['pos'\]"):
        ImageDataset(images, labels, {"pos": torch.zeros(3)}, name="x", split="train")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ImageDataset(images * 255, labels, name="x", split="train")
    with pytest.raises(ValueError, match="support"):
        ImageDataset(images, labels, name="x", split="train", support="real")
    data = ImageDataset(images, labels, name="x", split="train", binarize="static")
    with pytest.raises(ValueError, match="already binarised"):
        data.binarized("dynamic")


def test_load_errors():
    with pytest.raises(ValueError, match="known names") as info:
        load("imagenet")
    for name in DATASETS:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="binarize"):
        load("digits", binarize="stochastic")
    with pytest.raises(ValueError, match="split"):
        load("digits", "validation")
    with pytest.raises(ValueError, match="seed"):
        load("digits", seed=-1)
    with pytest.raises(TypeError, match="num_scenes"):
        load("shapes", num_alphabets=3)
    for name in ["mnist", "fashion_mnist", "omniglot", "cifar10"]:
        with pytest.raises(ValueError, match="root"):
            load(name)


def test_known_names():
    assert set(DATASETS) == {
        "digits",
        "patches",
        "shapes",
        "glyphs",
        "mnist",
        "fashion_mnist",
        "omniglot",
        "imagefolder",
        "npz",
        "cifar10",
    }


def test_load_and_dataset_arguments_of_the_wrong_kind():
    # an unhashable name stopped in the dict lookup ("unhashable type: 'list'")
    with pytest.raises(ValueError, match=r"^unknown dataset name \['digits'\]"):
        load(["digits"])
    # scikit-learn's random_state stops at 2**32 - 1, in its own words, after shapes or glyphs
    # would have been made
    for name in ("digits", "shapes"):
        with pytest.raises(ValueError, match=r"^seed must lie in \[0, 4294967295\]"):
            load(name, seed=2**32)
    assert len(load("digits", "test", seed=2**32 - 1)) == 360
    images = torch.zeros(2, 1, 2, 2)
    with pytest.raises(
        TypeError, match="labels must be an integer torch.Tensor, got torch.complex64"
    ):
        ImageDataset(images, torch.zeros(2, dtype=torch.complex64), name="x", split="train")
    # an empty list of indices reads as float32; it selects no image
    data = ImageDataset(images, torch.zeros(2, dtype=torch.long), name="x", split="train")
    assert len(data.subset([])) == 0
