"""Bugs found by checking the memory primitives against independent truths."""

import pytest
import torch

from pyromem.memory import GaussianMixtureMemory


def test_hopfield_responsibilities_at_default_beta_do_not_lose_float32_precision():
    # With beta = 1/sigma^2 the responsibilities are softmax(beta M z) (eq. 28): uniform at
    # z = 0 whatever the patterns. They were computed from l_k - 1/2 ||M_k / sigma||^2, two
    # terms of ~4e6 each for pixel-like patterns at sigma = 0.01, whose rounding (~0.25 nats
    # in float32) skewed them to 0.10-0.21 instead of 1/8.
    g = torch.Generator().manual_seed(0)
    memory = torch.randn(8, 784, generator=g)
    prior = GaussianMixtureMemory(memory, scale=0.01, weights="hopfield")
    z = torch.zeros(784)
    torch.testing.assert_close(prior.responsibilities(z), torch.full((8,), 1 / 8))
    torch.testing.assert_close(prior.fixed_point_step(z), memory.mean(0))
    # and off zero, softmax(beta M z) as eq. 28 writes it
    z = 1e-6 * torch.randn(784, generator=g)
    expected = (memory.double() @ z.double() / 0.01**2).softmax(-1).float()
    torch.testing.assert_close(prior.responsibilities(z), expected)


def test_hopfield_with_a_diagonal_precision_equal_to_beta_keeps_float32_precision():
    # P = beta I given as a diagonal precision is the same mixture as scale = beta^-1/2
    g = torch.Generator().manual_seed(1)
    memory = torch.randn(8, 784, generator=g)
    precision = torch.full((784,), 1e4)
    prior = GaussianMixtureMemory(memory, precision=precision, weights="hopfield", beta=1e4)
    torch.testing.assert_close(prior.responsibilities(torch.zeros(784)), torch.full((8,), 1 / 8))


def test_an_infinite_precision_is_refused_under_validation():
    # scale=inf and beta=inf were refused, precision=[.., inf, ..] made every log density NaN
    precision = torch.tensor([1.0, float("inf"), 2.0])
    with pytest.raises(ValueError, match="precision must be finite"):
        GaussianMixtureMemory(torch.randn(4, 3), precision=precision, validate_args=True)
    # without validation it is the caller's to check, as for the other arguments
    GaussianMixtureMemory(torch.randn(4, 3), precision=precision, validate_args=False)
