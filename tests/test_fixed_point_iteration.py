"""GaussianMixtureMemory.fixed_point, the one fixed-point loop, against eq. 11 and eq. 44
iterated by hand on each memory, and finite differences."""

import pytest
import torch

from pyromem.memory import GaussianMixtureMemory


def eq_44_by_hand(z, memory, sigma, alpha, num_steps):
    """z <- z + alpha / sigma^2 (softmax(-||z - M_k||^2 / 2 sigma^2) M - z), from the distances
    themselves; alpha = None: z <- softmax(...) M (eq. 11)."""
    path = [z]
    for _ in range(num_steps):
        pull = torch.softmax(-(torch.cdist(z, memory) ** 2) / (2 * sigma**2), -1) @ memory
        z = pull if alpha is None else z + alpha / sigma**2 * (pull - z)
        path.append(z)
    return path


@pytest.mark.parametrize("alpha", [None, 0.1])
def test_s_memories_at_once_are_each_memory_iterated_by_hand(device, alpha):
    g = torch.Generator().manual_seed(0)
    memory = torch.randn(3, 6, 4, generator=g, dtype=torch.float64).to(device)
    z0 = memory[:, :5] + 0.5 * torch.randn(3, 5, 4, generator=g, dtype=torch.float64).to(device)
    prior = GaussianMixtureMemory(memory.unsqueeze(-3), scale=0.8)
    z, path = prior.fixed_point(z0, 4, alpha, trajectory=True)
    assert len(path) == 5 and path[0] is z0 and path[-1] is z
    for s in range(3):
        expected = eq_44_by_hand(z0[s], memory[s], 0.8, alpha, 4)
        for step, by_hand in zip(path, expected, strict=True):
            torch.testing.assert_close(step[s], by_hand)
    assert prior.fixed_point(z0, 0) is z0


def test_the_iterates_stay_in_the_graph_of_the_precision():
    g = torch.Generator().manual_seed(1)
    memory = torch.randn(5, 3, generator=g, dtype=torch.float64)
    z0 = torch.randn(4, 3, generator=g, dtype=torch.float64)
    precision = torch.rand(3, generator=g, dtype=torch.float64) + 0.5

    def retrieved(precision):
        return GaussianMixtureMemory(memory, precision=precision).fixed_point(z0, 3)

    assert torch.autograd.gradcheck(retrieved, precision.requires_grad_())


def test_bad_num_steps():
    prior = GaussianMixtureMemory(torch.randn(5, 3), scale=1.0)
    with pytest.raises(ValueError, match="num_steps must be a non-negative int, got -1"):
        prior.fixed_point(torch.zeros(2, 3), -1)
    with pytest.raises(ValueError, match="num_steps must be a non-negative int, got 2.0"):
        prior.fixed_point(torch.zeros(2, 3), 2.0)
