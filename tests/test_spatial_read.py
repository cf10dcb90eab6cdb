import math

import pytest
import torch

from pyromem.memory import spatial_read
from pyromem.memory.spatial_read import KEY_SCALE, key_to_affine


def aligned_key(row, col, block_shape, memory_hw, key_scale=KEY_SCALE):
    """The key whose read is the slice memory[..., row:row + h, col:col + w] (zoom 1)."""
    (h, w), (height, width) = block_shape, memory_hw
    t_x = (2 * col + w) / width - 1
    t_y = (2 * row + h) / height - 1
    return key_scale * torch.tensor(
        [0.0, math.atanh(t_x / (1 - w / width)), math.atanh(t_y / (1 - h / height))],
        dtype=torch.float64,
    )


def interior_positions(block_shape, memory_hw):
    (h, w), (height, width) = block_shape, memory_hw
    return [(r, c) for r in range(1, height - h) for c in range(1, width - w)]


@pytest.mark.parametrize("key_scale", [KEY_SCALE, 1.0])
@pytest.mark.parametrize("block_shape", [(3, 3), (2, 4), (5, 1)])
def test_integer_aligned_keys_read_the_named_slice(device, block_shape, key_scale):
    memory = torch.randn(2, 9, 8, dtype=torch.float64, device=device)
    positions = interior_positions(block_shape, (9, 8))
    keys = torch.stack(
        [aligned_key(r, c, block_shape, (9, 8), key_scale) for r, c in positions]
    ).to(device)
    reads = spatial_read(memory, keys, block_shape, key_scale=key_scale)
    h, w = block_shape
    assert reads.shape == (len(positions), 2, h, w)
    for read, (r, c) in zip(reads, positions, strict=True):
        torch.testing.assert_close(read, memory[:, r : r + h, c : c + w], rtol=0, atol=1e-9)


def test_zero_key_reads_the_centred_block(device):
    memory = torch.arange(36.0, device=device).reshape(1, 6, 6)
    read = spatial_read(memory, torch.zeros(1, 3, device=device), (2, 2))
    torch.testing.assert_close(read[0], memory[:, 2:4, 2:4])


def test_block_equal_to_memory_reads_the_memory_whatever_the_key(device):
    memory = torch.randn(3, 4, 5, device=device)
    reads = spatial_read(memory, 3 * torch.randn(6, 3, device=device), (4, 5))
    torch.testing.assert_close(reads, memory.expand(6, 3, 4, 5))


def test_gradients_reach_the_memory_only_inside_the_read_blocks(device):
    memory = torch.randn(2, 10, 10, dtype=torch.float64, device=device, requires_grad=True)
    block = (3, 4)
    positions = [(1, 2), (5, 5)]
    keys = torch.stack([aligned_key(r, c, block, (10, 10)) for r, c in positions]).to(device)
    spatial_read(memory, keys, block).sum().backward()
    expected = torch.zeros(10, 10, dtype=torch.float64, device=device)
    for r, c in positions:
        expected[r : r + 3, c : c + 4] += 1
    torch.testing.assert_close(memory.grad, expected.expand(2, 10, 10), rtol=0, atol=1e-9)


def test_unaligned_reads_touch_only_a_one_pixel_margin(device):
    memory = torch.randn(1, 12, 12, device=device, requires_grad=True)
    key = aligned_key(4, 4, (3, 3), (12, 12)).float().to(device) + torch.tensor(
        [0.0, 0.05, -0.05], device=device
    )
    spatial_read(memory, key[None], (3, 3)).sum().backward()
    touched = memory.grad[0].abs() > 0
    assert touched[3:8, 3:8].sum() >= 9
    assert not touched[:3].any() and not touched[8:].any()
    assert not touched[:, :3].any() and not touched[:, 8:].any()


def test_keys_and_gradients_wrt_keys(device):
    memory = torch.randn(1, 8, 8, device=device)
    keys = torch.randn(4, 3, device=device, requires_grad=True)
    spatial_read(memory, keys, (3, 3)).square().sum().backward()
    assert torch.isfinite(keys.grad).all() and keys.grad.abs().sum() > 0


def test_key_scale_divides_the_key_before_squashing(device):
    memory = torch.randn(2, 10, 10, device=device)
    keys = torch.randn(6, 3, device=device)
    torch.testing.assert_close(
        spatial_read(memory, 2.5 * keys, (4, 3), key_scale=2.5),
        spatial_read(memory, keys, (4, 3), key_scale=1.0),
    )
    # a key key_scale standard deviations out moves the read by tanh(1) of its free range
    theta = key_to_affine(torch.tensor([[0.0, KEY_SCALE, 0.0]], device=device), (4, 4), (8, 8))
    torch.testing.assert_close(theta[0, 0, 2].item(), math.tanh(1.0) * 0.5)


def test_squashing_keeps_every_read_inside_the_memory(device):
    keys = 10 * torch.randn(1000, 3, device=device)
    theta = key_to_affine(keys, (3, 5), (8, 10))
    s_x, t_x = theta[:, 0, 0], theta[:, 0, 2]
    s_y, t_y = theta[:, 1, 1], theta[:, 1, 2]
    assert (s_x > 0).all() and (s_y > 0).all()
    assert (s_x + t_x.abs() <= 1 + 1e-6).all() and (s_y + t_y.abs() <= 1 + 1e-6).all()


def test_leading_dims_broadcast(device):
    memory = torch.randn(5, 2, 8, 8, device=device)  # one memory per episode
    keys = torch.randn(7, 4, 5, 3, 3, device=device)  # particles, time, episode, K reads
    reads = spatial_read(memory, keys, (4, 4))
    assert reads.shape == (7, 4, 5, 3, 2, 4, 4)
    one = spatial_read(memory[2], keys[6, 1, 2], (4, 4))
    torch.testing.assert_close(reads[6, 1, 2], one)


def test_bad_inputs(device):
    memory = torch.randn(2, 8, 8, device=device)
    with pytest.raises(ValueError, match=r"keys must have shape \(\.\.\., K, 3\)"):
        spatial_read(memory, torch.zeros(2, 2, device=device), (2, 2))
    with pytest.raises(ValueError, match="keys must have shape"):
        spatial_read(memory, torch.zeros(3, device=device), (2, 2))
    with pytest.raises(ValueError, match="larger than the memory"):
        spatial_read(memory, torch.zeros(1, 3, device=device), (9, 2))
    with pytest.raises(ValueError, match="block_shape must be a pair"):
        spatial_read(memory, torch.zeros(1, 3, device=device), (0, 2))
    with pytest.raises(ValueError, match="block_shape must be a pair"):
        spatial_read(memory, torch.zeros(1, 3, device=device), 2)
    with pytest.raises(ValueError, match=r"memory must have shape"):
        spatial_read(torch.zeros(8, 8, device=device), torch.zeros(1, 3, device=device), (2, 2))
    with pytest.raises(TypeError, match="memory must be a floating-point"):
        spatial_read(torch.zeros(2, 8, 8, dtype=torch.long), torch.zeros(1, 3), (2, 2))
    for bad_scale in (0.0, -1.0, float("inf"), True):
        with pytest.raises(ValueError, match="key_scale must be a positive"):
            spatial_read(memory, torch.zeros(1, 3, device=device), (2, 2), key_scale=bad_scale)
    with pytest.raises(ValueError, match="broadcast"):
        spatial_read(torch.zeros(3, 2, 8, 8), torch.zeros(4, 1, 3), (2, 2))


def test_batch_dims_that_do_not_broadcast_are_named_with_both_shapes():
    with pytest.raises(
        ValueError,
        match=(
            r"^memory and keys: expected batch shapes that broadcast, got \(2,\) and \(3,\) "
            r"\(of shapes \(2, 1, 8, 8\) and \(3, 2, 3\)\)$"
        ),
    ):
        spatial_read(torch.rand(2, 1, 8, 8), torch.zeros(3, 2, 3), (4, 4))
