"""Input checks of resize, ImageDataset, spatial_read and Kanerva++'s keys: one line naming
the argument where a bad input used to pass silently or stop in a torch stack trace."""

import numpy as np
import pyro
import pytest
import torch

from pyromem.data import ImageDataset
from pyromem.data.resize import resize
from pyromem.memory import spatial_read
from pyromem.models import KanervaPlusPlus

NAN = float("nan")


# ---- resize ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("images", "error", "message"),
    [
        # images in [0, 255] used to come back all 1.0, clamped
        (torch.rand(2, 1, 8, 8) * 255, ValueError, r"images must take values in \[0, 1\]"),
        (
            torch.rand(2, 8, 8),
            ValueError,
            r"images must have shape \(N, C, H, W\), got \(2, 8, 8\)",
        ),
        (
            torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8),
            TypeError,
            "images must be a floating-point tensor .* got dtype torch.uint8",
        ),
        (np.random.rand(2, 1, 8, 8), TypeError, "images must be a torch.Tensor, got ndarray"),
        # NaN used to pass through
        (torch.full((2, 1, 8, 8), NAN), ValueError, "images contains NaN"),
        (torch.rand(0, 1, 8, 8), ValueError, "images is an empty batch"),
    ],
)
def test_resize_refuses_bad_images(images, error, message):
    with pytest.raises(error, match=message):
        resize(images, 16)
    # checked before the early return for images already of the size
    with pytest.raises(error, match=message):
        resize(images, 8)


def test_resize_keeps_images_in_the_unit_interval():
    images = torch.rand(2, 3, 8, 6)
    resized = resize(images, 16)
    assert resized.shape == (2, 3, 16, 16)
    assert 0 <= resized.min() and resized.max() <= 1
    assert resize(images[..., :6, :], 6) is not None


# ---- ImageDataset --------------------------------------------------------------------------


def _dataset(images=None, **kwargs):
    images = torch.rand(10, 1, 8, 8) if images is None else images
    options = {"name": "m", "split": "train"} | kwargs
    return ImageDataset(images, torch.zeros(len(images), dtype=torch.long), **options)


@pytest.mark.parametrize("bad", [NAN, float("inf")])
def test_image_dataset_refuses_non_finite_images(bad):
    images = torch.rand(10, 1, 8, 8)
    images[3, 0, 2, 2] = bad
    with pytest.raises(ValueError, match="images contains NaN or infinite values"):
        _dataset(images)
    with pytest.raises(ValueError, match="images contains NaN or infinite values"):
        _dataset(torch.full((10, 1, 8, 8), bad))


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"split": "val"}, ValueError, r"split must be one of \('train', 'test'\), got 'val'"),
        ({"seed": -1}, ValueError, "seed must be a non-negative int, got -1"),
        ({"seed": 1.5, "binarize": "static"}, ValueError, "seed must be a non-negative int"),
        ({"seed": -1, "binarize": "static"}, ValueError, "seed must be a non-negative int"),
    ],
)
def test_image_dataset_checks_split_and_seed_as_load_does(options, error, message):
    with pytest.raises(error, match=message):
        _dataset(**options)


def test_image_dataset_binarized_checks_the_seed():
    data = _dataset()
    with pytest.raises(ValueError, match="seed must be a non-negative int, got 1.5"):
        data.binarized("static", seed=1.5)
    assert data.binarized("static", seed=np.int64(3)).support == "binary"
    assert _dataset(split="test", seed=7).split == "test"
    assert len(_dataset(torch.rand(0, 1, 8, 8))) == 0


# ---- spatial_read and Kanerva++ keys ---------------------------------------------------------


def test_spatial_read_refuses_nan_keys():
    memory = torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match="keys must not hold NaN, got NaN in 12 of 12 values"):
        spatial_read(memory, torch.full((2, 2, 3), NAN), (4, 4))
    keys = torch.zeros(2, 2, 3)
    keys[1, 0, 2] = NAN
    with pytest.raises(ValueError, match="keys must not hold NaN, got NaN in 1 of 12"):
        spatial_read(memory, keys, (4, 4))
    # unchecked on request (a model's own keys, every step)
    assert spatial_read(memory, keys, (4, 4), check_values=False).shape == (2, 2, 1, 4, 4)


def test_spatial_read_takes_infinite_keys_to_the_border():
    memory = torch.arange(64.0).reshape(1, 8, 8)
    inf = float("inf")
    reads = spatial_read(memory, torch.tensor([[0.0, inf, -inf]]), (4, 4))
    # the top-right block: rows 0..3, columns 4..7
    torch.testing.assert_close(reads[0], memory[:, :4, 4:])


def _kpp(**kwargs):
    options = dict(latent_dim=3, memory_shape=(2, 8, 8), block_shape=(4, 4), embed_dim=16)
    return KanervaPlusPlus((1, 8, 8), **(options | kwargs))


def _memory(kpp):
    with torch.no_grad():
        return kpp.write(torch.bernoulli(torch.full((3, 2, 1, 8, 8), 0.4)))


def test_kanerva_refuses_nan_keys_a_user_passes():
    kpp = _kpp()
    memory = _memory(kpp)
    with pytest.raises(ValueError, match="keys must not hold NaN, got NaN in 36 of 36 values"):
        kpp.generate(2, memory, keys=torch.full((3, 2, 2, 3), NAN))
    with pytest.raises(ValueError, match="keys must not hold NaN, got NaN in 72 of 72 values"):
        kpp.readout_prior(memory, torch.full((4, 3, 2, 3), NAN))
    # infinite keys read the memory's border blocks
    keys = torch.zeros(3, 2, 2, 3)
    keys[..., 1] = float("inf")
    with torch.no_grad():
        assert kpp.generate(2, memory, keys=keys).isfinite().all()


def test_dense_kanerva_refuses_non_finite_keys():
    kpp = _kpp(write="dense")
    memory = _memory(kpp)
    for bad in (NAN, float("inf")):
        with pytest.raises(ValueError, match="keys must be finite, got NaN or infinity in 36"):
            kpp.generate(2, memory, keys=torch.full((3, 2, 2, 3), bad))
        with pytest.raises(ValueError, match="keys must be finite, got NaN or infinity in 72"):
            kpp.readout_prior(memory, torch.full((4, 3, 2, 3), bad))


def test_kanerva_trains_without_checking_its_own_keys():
    kpp = _kpp()
    x = torch.bernoulli(torch.full((3, 2, 1, 8, 8), 0.4))
    with pyro.validation_enabled(True):
        loss = pyro.infer.Trace_ELBO().differentiable_loss(kpp.model, kpp.guide, x)
    assert torch.isfinite(loss)


# ---- the discretized logistic's support (not fixed here) ----------------------------------


def test_discretized_logistic_support_follows_num_bins():
    x = torch.randint(0, 10, (2, 2, 1, 8, 8)) / 9.0
    kpp = _kpp(likelihood="dlm", likelihood_kwargs={"num_bins": 10, "num_mixtures": 2})
    with pyro.validation_enabled(True):
        kpp.write(x)  # data on the head's own grid k/9
        off_grid = torch.randint(0, 256, (2, 2, 1, 8, 8)) / 255.0
        wide = _kpp(likelihood="dlm", likelihood_kwargs={"num_bins": 16, "num_mixtures": 2})
        with pytest.raises(ValueError, match=r"must hold values k/15 for a discretized .* 16 bins"):
            wide.write(off_grid)
        eight_bit = _kpp(likelihood="dlm", likelihood_kwargs={"num_mixtures": 2})
        eight_bit.write(off_grid)  # 256 bins: the 8-bit data of every 8-bit dataset
