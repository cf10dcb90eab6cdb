import pytest
import torch
from torch import nn

from pyromem.nets.resnet_tsm import ResNet18TSM, temporal_shift

# float64 keeps batched and one-by-one convolutions equal to ~1e-15 and rules out
# TF32 convolutions on GPUs, so equality checks can be tight.
DTYPE = torch.float64


def _model(image_shape, device, features=5, base_width=8, shift_fraction=0.125):
    torch.manual_seed(0)
    model = ResNet18TSM(image_shape, features, base_width, shift_fraction)
    return model.to(device, DTYPE)


def _images(shape, device, seed=1):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=DTYPE).to(device)


def test_temporal_shift_matches_explicit_indexing(device):
    x = _images((2, 3, 8, 2, 2), device)
    expected = torch.zeros_like(x)
    for n in range(2):
        for t in range(3):
            for c in range(8):
                if c < 2:
                    source = t - 1
                elif c < 4:
                    source = t + 1
                else:
                    source = t
                if 0 <= source < 3:
                    expected[n, t, c] = x[n, source, c]
    assert torch.equal(temporal_shift(x, 0.25), expected)
    # Channels 0-1 of the first image and 2-3 of the last are padded with zeros.
    assert (expected[:, 0, :2] == 0).all() and (expected[:, -1, 2:4] == 0).all()


def test_temporal_shift_default_fraction_floors_and_zero_is_identity(device):
    x = _images((4, 17, 3, 3), device)
    y = temporal_shift(x)  # floor(17 / 8) = 2 channels each way
    assert torch.equal(y[1:, :2], x[:-1, :2]) and torch.equal(y[:-1, 2:4], x[1:, 2:4])
    assert torch.equal(y[:, 4:], x[:, 4:])
    assert torch.equal(temporal_shift(x, 0.0), x)


@pytest.mark.parametrize("batch_shape", [(2, 3), (5,)])
@pytest.mark.parametrize("size", [16, 28, 32])
def test_output_shapes(size, batch_shape, device):
    model = _model((3, size, size), device)
    x = _images(batch_shape + (2, 3, size, size), device)
    out = model(x)
    assert out.shape == batch_shape + (2, 5)
    assert out.device == x.device and torch.isfinite(out).all()


def test_resnet18_layout_and_full_width_parameter_count(device):
    model = _model((3, 32, 32), device, features=10, base_width=64)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 + 16 + 3
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    # The CIFAR ResNet-18 of github.com/kuangliu/pytorch-cifar has 11,173,962
    # parameters; GroupNorm has the same affine parameters as BatchNorm.
    assert sum(p.numel() for p in model.parameters()) == 11_173_962
    assert model(_images((1, 2, 3, 32, 32), device)).shape == (1, 2, 10)


def test_no_shift_encodes_each_image_alone(device):
    model = _model((3, 16, 16), device, shift_fraction=0.0)
    x = _images((2, 4, 3, 16, 16), device)
    out = model(x)
    for n in range(2):
        for t in range(4):
            torch.testing.assert_close(out[n, t], model(x[n, t : t + 1])[0])


def test_shift_mixes_images_of_an_episode_but_not_episodes_of_a_batch(device):
    model = _model((3, 16, 16), device)
    x = _images((3, 4, 3, 16, 16), device)
    out = model(x)

    other_image = x.clone()
    other_image[0, 1] = _images((3, 16, 16), device, seed=2)
    assert not torch.allclose(model(other_image)[0, 0], out[0, 0])

    other_episode = x.clone()
    other_episode[1] = _images((4, 3, 16, 16), device, seed=3)
    changed = model(other_episode)
    torch.testing.assert_close(changed[0], out[0])
    torch.testing.assert_close(changed[2], out[2])
    torch.testing.assert_close(model(x[2:]), out[2:])


def test_episode_receptive_field_is_one_image_per_block(device):
    # Eight blocks shift eight times, so image 0 sees images 0-8 and not image 9.
    model = _model((1, 16, 16), device)
    x = _images((1, 10, 1, 16, 16), device)
    out = model(x)[0, 0]
    for t, reaches in [(8, True), (9, False)]:
        changed = x.clone()
        changed[0, t] = _images((1, 16, 16), device, seed=4)
        assert torch.allclose(model(changed)[0, 0], out) != reaches


def test_gradients_reach_every_parameter(device):
    model = _model((3, 16, 16), device)
    model(_images((2, 3, 3, 16, 16), device)).square().sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    "shape",
    [(2, 3, 1, 16, 16), (2, 3, 3, 16, 15), (3, 16, 16), (16, 16)],
)
def test_wrong_input_shape_names_the_expected_shape(shape):
    model = ResNet18TSM((3, 16, 16), 5, base_width=8)
    with pytest.raises(ValueError, match=r"x must have shape \(\*batch, T, 3, 16, 16\)"):
        model(torch.rand(shape))


def test_temporal_shift_needs_an_episode_axis():
    with pytest.raises(ValueError, match=r"x must have shape \(\*batch, T, C, H, W\)"):
        temporal_shift(torch.rand(8, 4, 4))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"shift_fraction": 0.6}, ValueError, r"shift_fraction must lie in \[0, 0.5\]"),
        ({"shift_fraction": -0.1}, ValueError, r"shift_fraction must lie in \[0, 0.5\]"),
        ({"shift_fraction": float("nan")}, ValueError, "shift_fraction must lie in"),
        ({"shift_fraction": "0.1"}, TypeError, "shift_fraction must be a real number"),
        ({"base_width": 0}, ValueError, "base_width must be positive"),
        ({"base_width": 8.0}, TypeError, "base_width must be an int"),
        ({"features": -3}, ValueError, "features must be positive"),
        ({"image_shape": (16, 16)}, ValueError, "image_shape must have 3 dims"),
    ],
)
def test_bad_constructor_arguments(kwargs, error, match):
    args = {"image_shape": (3, 16, 16), "features": 5, "base_width": 8, **kwargs}
    with pytest.raises(error, match=match):
        ResNet18TSM(**args)


def test_temporal_shift_rejects_a_fraction_above_one_half():
    with pytest.raises(ValueError, match=r"fraction must lie in \[0, 0.5\]"):
        temporal_shift(torch.rand(1, 2, 4, 1, 1), 0.75)
