import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO

from pyromem.infer import MemoryFixedPoint
from pyromem.models import PixelMemory


def test_fixed_point_on_pixels_is_eq_11_started_at_the_query(device):
    g = torch.Generator().manual_seed(0)
    stored = torch.rand(6, 1, 4, 4, generator=g).to(device)
    queries = (stored[:3] + 0.1 * torch.randn(3, 1, 4, 4, generator=g).to(device)).clamp(0, 1)
    sigma = 0.3
    memory = PixelMemory((1, 4, 4), scale=sigma)
    M = memory.write(stored)
    assert M.shape == (6, 16)
    retrieved = MemoryFixedPoint(memory.model, memory.guide, num_steps=1).refine(queries)
    # eq. 11 computed directly from the query: softmax(−‖x − M_k‖² / 2σ²) M
    x = queries.flatten(1)
    weights = torch.softmax(-(torch.cdist(x, M) ** 2) / (2 * sigma**2), dim=-1)
    assert torch.allclose(retrieved, weights @ M, atol=1e-5)


def test_small_sigma_retrieves_the_nearest_stored_image(device):
    stored = torch.rand(10, 3, 4, 4, generator=torch.Generator().manual_seed(1)).to(device)
    memory = PixelMemory((3, 4, 4), scale=1e-3)
    memory.write(stored)
    noisy = (stored + 0.01).clamp(0, 1)
    retrieved = MemoryFixedPoint(memory.model, memory.guide, num_steps=2).refine(noisy)
    assert torch.allclose(retrieved, stored.flatten(1), atol=1e-4)


def test_trace_elbo_with_the_point_mass_guide_is_minus_the_log_joint(device):
    stored = torch.rand(5, 1, 3, 3, generator=torch.Generator().manual_seed(2)).to(device)
    memory = PixelMemory((1, 3, 3), scale=0.5, obs_scale=0.1)
    memory.write(stored)
    x = stored[:2]
    loss = Trace_ELBO().loss(memory.model, memory.guide, x)
    # with ẑ = x the observation term is log N(x; x, 0.1² I) per image
    obs = torch.distributions.Normal(0.0, 0.1).log_prob(torch.zeros(9)).sum()
    expected = -(memory.prior().log_prob(x.flatten(1)).sum() + 2 * obs)
    assert loss == pytest.approx(expected.item(), rel=1e-5)


def test_bad_input():
    memory = PixelMemory((1, 3, 3))
    with pytest.raises(ValueError, match="memory is empty"):
        memory.prior()
    with pytest.raises(ValueError, match="shape"):
        memory.write(torch.rand(4, 1, 2, 2))
    with pytest.raises(ValueError, match="obs_scale"):
        PixelMemory((1, 3, 3), obs_scale=0.0)
    pyro.clear_param_store()
