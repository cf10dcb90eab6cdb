import math

import pytest
import torch

from pyromem.data import (
    colour_rotation,
    gaussian_noise,
    poisson,
    salt_and_pepper,
    shift,
    speckle,
    square_mask,
)

RANDOM = [
    (gaussian_noise, 0.3),
    (speckle, 0.5),
    (poisson, 5.0),
    (salt_and_pepper, 0.2),
]


@pytest.fixture
def x(device):
    return torch.rand(2, 5, 3, 16, 12, generator=torch.Generator().manual_seed(0)).to(device)


@pytest.mark.parametrize("corrupt, level", RANDOM)
def test_random_corruptions_stay_in_range_and_are_reproducible(corrupt, level, x):
    y = corrupt(x, level, generator=torch.Generator().manual_seed(1))
    assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
    assert y.min() >= 0 and y.max() <= 1
    assert not torch.equal(y, x)
    again = corrupt(x, level, generator=torch.Generator().manual_seed(1))
    assert torch.equal(y, again)


@pytest.mark.parametrize("corrupt", [gaussian_noise, speckle, salt_and_pepper])
def test_zero_level_is_the_identity(corrupt, x):
    assert torch.equal(corrupt(x, 0.0), x)


def test_identities_of_the_deterministic_corruptions(x):
    assert torch.equal(shift(x, 0, 0), x)
    assert torch.allclose(colour_rotation(x, 0.0), x)
    assert torch.allclose(colour_rotation(x, 2 * math.pi), x, atol=1e-5)
    assert torch.equal(square_mask(x, 0), x)


def test_gaussian_noise_std(device):
    x = torch.full((200, 1, 32, 32), 0.5, device=device)
    noise = gaussian_noise(x, 0.1, generator=torch.Generator().manual_seed(0)) - x
    assert abs(noise.std().item() - 0.1) < 0.005 and abs(noise.mean().item()) < 0.005


def test_speckle_scales_with_the_pixel(device):
    x = torch.tensor([0.0, 0.2, 0.4], device=device).view(3, 1, 1, 1).expand(3, 1, 64, 64)
    noise = speckle(x, 0.5, generator=torch.Generator().manual_seed(0)) - x
    assert torch.equal(noise[0], torch.zeros_like(noise[0]))
    assert abs(noise[1].std().item() - 0.1) < 0.01 and abs(noise[2].std().item() - 0.2) < 0.02


def test_poisson_is_unbiased_with_variance_x_over_peak(device):
    x = torch.full((100, 1, 32, 32), 0.3, device=device)
    y = poisson(x, 20.0, generator=torch.Generator().manual_seed(0))
    assert abs(y.mean().item() - 0.3) < 0.005
    assert abs(y.var().item() - 0.3 / 20) < 0.001
    # Counts over peak: values are multiples of 1/peak.
    assert torch.allclose(y * 20, (y * 20).round(), atol=1e-4)


def test_salt_and_pepper_fraction(device):
    x = torch.full((50, 3, 32, 32), 0.5, device=device)
    y = salt_and_pepper(x, 0.1, generator=torch.Generator().manual_seed(0))
    changed = (y != 0.5).all(1)  # a corrupted pixel changes in all channels
    assert ((y != 0.5).any(1) == changed).all()
    assert abs(changed.float().mean().item() - 0.1) < 0.01
    assert abs((y == 1).all(1).float().mean().item() - 0.05) < 0.007
    assert abs((y == 0).all(1).float().mean().item() - 0.05) < 0.007


def test_square_mask_sets_exactly_a_square(device):
    x = torch.full((10, 3, 16, 12), 0.5, device=device)
    y = square_mask(x, 5, value=0.25, generator=torch.Generator().manual_seed(0))
    masked = y == 0.25
    assert (masked.sum((-1, -2)) == 25).all()
    assert (masked.all(1) == masked.any(1)).all()  # every channel
    # The masked pixels form a 5×5 square: 5 rows and 5 columns of 5 pixels.
    rows, cols = masked[:, 0].any(-1), masked[:, 0].any(-2)
    assert (rows.sum(-1) == 5).all() and (cols.sum(-1) == 5).all()
    # Positions differ between images.
    assert len({tuple(r.nonzero().flatten().tolist()) for r in rows}) > 1
    fixed = square_mask(x, 3, position=(13, 0))
    assert (fixed[:, :, 13:16, 0:3] == 0).all() and (fixed == 0).sum() == 10 * 3 * 9


def test_colour_rotation_by_a_third_turn_permutes_channels(device):
    pure = torch.eye(3, device=device).view(3, 3, 1, 1).expand(3, 3, 4, 4)  # red, green, blue
    rotated = colour_rotation(pure, 2 * math.pi / 3)
    # Red -> green, green -> blue, blue -> red.
    expected = torch.stack([pure[1], pure[2], pure[0]])
    assert torch.allclose(rotated, expected, atol=1e-6)
    # Greys stay put.
    grey = torch.full((2, 3, 4, 4), 0.4, device=device)
    assert torch.allclose(colour_rotation(grey, 1.234), grey, atol=1e-6)
    # Per-image angles.
    angles = torch.tensor([0.0, 2 * math.pi / 3], device=device)
    both = colour_rotation(pure[:1].expand(2, 3, 4, 4), angles)
    assert torch.allclose(both[0], pure[0]) and torch.allclose(both[1], pure[1], atol=1e-6)


def test_colour_rotation_keeps_brightness_of_in_gamut_colours(device):
    x = 0.35 + 0.3 * torch.rand(4, 3, 5, 5, device=device)  # near grey: stays in the cube
    y = colour_rotation(x, 0.7)
    assert torch.allclose(y.mean(-3), x.mean(-3), atol=1e-6)
    assert torch.allclose(
        (y - y.mean(-3, keepdim=True)).norm(dim=-3),
        (x - x.mean(-3, keepdim=True)).norm(dim=-3),
        atol=1e-5,
    )


@pytest.mark.parametrize("dx, dy", [(2, 1), (-3, 0), (0, -4), (5, 5)])
def test_shift_moves_a_bright_pixel(dx, dy, device):
    x = torch.zeros(1, 1, 8, 8, device=device)
    x[..., 3, 4] = 1.0
    y = shift(x, dx, dy, fill=0.0)
    expected = torch.zeros_like(x)
    if 0 <= 3 + dy < 8 and 0 <= 4 + dx < 8:
        expected[..., 3 + dy, 4 + dx] = 1.0
    assert torch.equal(y, expected)


def test_shift_fills_the_uncovered_border(device):
    x = torch.full((2, 3, 6, 6), 0.5, device=device)
    y = shift(x, -2, 1, fill=1.0)
    assert (y[..., 0, :] == 1).all() and (y[..., :, 4:] == 1).all()
    assert (y[..., 1:, :4] == 0.5).all()
    assert (shift(x, 5, 0, fill=0.2)[..., :5] == 0.2).all()


def test_generator_on_cpu_reproduces_on_any_device(x):
    cpu = gaussian_noise(x.cpu(), 0.2, generator=torch.Generator().manual_seed(5))
    other = gaussian_noise(x, 0.2, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(cpu, other.cpu())


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda x: gaussian_noise(x, -0.1), ValueError, "std"),
        (lambda x: speckle(x, -1.0), ValueError, "std"),
        (lambda x: poisson(x, 0.0), ValueError, "peak"),
        (lambda x: salt_and_pepper(x, 1.5), ValueError, "prob"),
        (lambda x: square_mask(x, 13), ValueError, "width"),
        (lambda x: square_mask(x, 2.5), TypeError, "width"),
        (lambda x: square_mask(x, 4, position=(13, 0)), ValueError, "position"),
        (lambda x: square_mask(x, 4, value=2.0), ValueError, "value"),
        (lambda x: colour_rotation(x[..., :1, :, :], 1.0), ValueError, "C = 3"),
        (lambda x: shift(x, 1.5, 0), TypeError, "dx"),
        # a shift by the whole side leaves a blank image, refused as a mask wider than it is
        (lambda x: shift(x, 100, 100), ValueError, r"dx must lie in \[-11, 11\] for 16×12"),
        (lambda x: shift(x, 0, -16), ValueError, r"dy must lie in \[-15, 15\]"),
        (lambda x: colour_rotation(x, float("nan")), ValueError, "angle must be finite"),
        (lambda x: colour_rotation(x, math.inf), ValueError, "angle must be finite, got inf"),
        (lambda x: colour_rotation(x, torch.tensor([0.0, -math.inf])), ValueError, "angle"),
        (lambda x: gaussian_noise(x, math.inf), ValueError, "std must be finite"),
        (lambda x: speckle(x, float("nan")), ValueError, "std"),
        (lambda x: poisson(x, math.inf), ValueError, "peak must be finite"),
        (lambda x: gaussian_noise(x * 255, 0.1), ValueError, r"\[0, 1\]"),
        (lambda x: gaussian_noise((x * 255).byte(), 0.1), TypeError, "floating"),
        (lambda x: gaussian_noise(x[0, 0, 0], 0.1), ValueError, "shape"),
        (lambda x: gaussian_noise(x, "big"), TypeError, "std"),
        # a seed or a NumPy generator stopped as an AttributeError inside torch
        (lambda x: gaussian_noise(x, 0.1, generator=3), TypeError, "generator must be a torch"),
        (lambda x: speckle(x, 0.1, generator=3), TypeError, "generator"),
        (lambda x: poisson(x, 3.0, generator=3), TypeError, "generator"),
        (lambda x: salt_and_pepper(x, 0.1, generator=3), TypeError, "generator"),
        (lambda x: square_mask(x, 2, generator="seed"), TypeError, "generator"),
        # one angle per image: 3 angles for a batch (2, 5) stopped in einsum, and a (3, 1, 1)
        # tensor silently made a (3, 2, 5, ...) batch of a (2, 5, ...) one
        (lambda x: colour_rotation(x, torch.zeros(3)), ValueError, r"angle: .* shape \(2, 5\)"),
        (lambda x: colour_rotation(x, torch.zeros(3, 1, 1)), ValueError, r"shape \(3, 1, 1\)"),
        (lambda x: square_mask(x, 2, position=3), TypeError, r"position must be a \(row, col\)"),
    ],
)
def test_bad_arguments(call, error, match, x):
    with pytest.raises(error, match=match):
        call(x)
