"""VMA, its address estimators and its bounds on the device of ``PYROMEM_DEVICE``: what is
deterministic equals the CPU's computation, and every estimator gives a finite loss with a
gradient for every parameter on that device."""

import copy

import pytest
import torch
from torch.distributions import Categorical, kl_divergence

from pyromem.diagnostics import elbo_decomposition, log_likelihood
from pyromem.infer.address_estimators import address_objective
from pyromem.models import VMA
from pyromem.models.vma import ADDRESSING, SoftAttentionVAE

SHAPE = (1, 4, 4)
NETS = {"latent_dim": 2, "embedding_dim": 4, "hidden": (8,)}


def images(n, seed=1):
    return torch.bernoulli(
        torch.full((n,) + SHAPE, 0.5), generator=torch.Generator().manual_seed(seed)
    )


@pytest.mark.parametrize("cls", [VMA, SoftAttentionVAE])
def test_slot_weights_on_the_device_equal_the_cpus(cls, device):
    torch.manual_seed(0)
    on_cpu = cls(SHAPE, **NETS)
    on_device = copy.deepcopy(on_cpu).to(device)
    x, memory = images(3), images(5, seed=2)
    with torch.no_grad():
        expected = on_cpu.slot_weights(x, memory)
        weights = on_device.slot_weights(x.to(device), memory.to(device))
    assert weights.device.type == device.type
    torch.testing.assert_close(weights.cpu(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("address", ADDRESSING)
def test_every_address_estimator_trains_on_the_device(address, device):
    torch.manual_seed(0)
    vma = VMA(SHAPE, memory_size=3, address=address, **NETS).to(device)
    loss = address_objective(address, 2).differentiable_loss(
        vma.model, vma.guide, images(4).to(device)
    )
    loss.backward()
    assert loss.device.type == device.type and torch.isfinite(loss)
    for name, parameter in vma.named_parameters():
        assert parameter.grad is not None and parameter.grad.device == parameter.device, name
        assert torch.isfinite(parameter.grad).all(), name


def test_bounds_on_the_device(device):
    # KL(q(a | x) || p(a)) against a flat prior has a closed form in q(a | x), computed on the
    # CPU copy; the IWAE-K and ELBO of the draws are finite and on the device
    torch.manual_seed(0)
    on_cpu = VMA(SHAPE, prior="flat", **NETS)
    vma = copy.deepcopy(on_cpu).to(device)
    x, memory = images(3), images(5, seed=2)
    parts = elbo_decomposition(
        vma.model, vma.guide, x.to(device), num_particles=3, memory=memory.to(device)
    )
    with torch.no_grad():
        q = on_cpu.address_posterior(x, memory)
    expected = kl_divergence(Categorical(q), Categorical(torch.full((5,), 0.2)))
    torch.testing.assert_close(parts.kl["a"].cpu(), expected, rtol=1e-5, atol=1e-6)
    bound = log_likelihood(
        vma.model, vma.guide, x.to(device), num_samples=8, chunk_size=4, memory=memory.to(device)
    )
    for value in (parts.elbo, bound.log_likelihood):
        assert value.device.type == device.type and torch.isfinite(value).all()
