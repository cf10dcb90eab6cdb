"""``generate`` on float64 models, and VMA / SoftAttentionVAE with the discretized
logistic mixture, which has no closed-form mean (a draw is returned instead)."""

import pytest
import torch

from pyromem.models import VAE, VMA
from pyromem.models.vma import SoftAttentionVAE

GRAY, RGB = (1, 8, 8), (3, 8, 8)
MIXTURE = "discretized_logistic_mixture"


def quantised(shape, seed=0):
    """Images on the 8-bit grid k / 255."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=generator).mul(255).round().div(255)


def assert_on_grid(images):
    assert ((images >= 0) & (images <= 1)).all()
    levels = images * 255
    torch.testing.assert_close(levels, levels.round(), rtol=0, atol=1e-4)


def vma(shape, likelihood, dtype=torch.float32):
    torch.manual_seed(0)
    model = VMA(
        shape, memory_size=4, likelihood=likelihood, memory="fixed", latent_dim=3, hidden=(16,)
    ).to(dtype)
    model.set_memory(quantised((4,) + shape, seed=1).to(dtype))
    return model


def soft(shape, likelihood, dtype=torch.float32):
    torch.manual_seed(0)
    model = SoftAttentionVAE(
        shape, memory_size=4, likelihood=likelihood, latent_dim=3, hidden=(16,)
    )
    return model.to(dtype)


# ---- bug 1: generate on a float64 model ---------------------------------------------------


def test_vae_generate_on_a_float64_model():
    torch.manual_seed(0)
    images = VAE(GRAY).double().generate(2)
    assert images.shape == (2,) + GRAY and images.dtype == torch.float64


def test_soft_attention_vae_generate_on_a_float64_model():
    images = soft(GRAY, "bernoulli", torch.float64).generate(2)
    assert images.shape == (2,) + GRAY and images.dtype == torch.float64


def test_vae_bernoulli_generate_is_the_decoder_mean_in_float64():
    torch.manual_seed(0)
    model = VAE(GRAY, latent_dim=3).double()
    torch.manual_seed(5)
    images = model.generate(3)
    torch.manual_seed(5)
    z = torch.randn(3, 3, dtype=torch.float64)
    expected = model.likelihood(model.decoder(z)).mean
    assert images.dtype == torch.float64
    torch.testing.assert_close(images, expected)


def test_soft_attention_vae_bernoulli_generate_is_the_decoder_mean_in_float64():
    model = soft(GRAY, "bernoulli", torch.float64)
    torch.manual_seed(5)
    images = model.generate(3)
    torch.manual_seed(5)
    z = torch.randn(3, model.latent_dim, dtype=torch.float64)
    memory = model.resolve_memory(None)
    expected = model.likelihood(model._decode(z, model._read(z, memory))).mean
    assert images.dtype == torch.float64
    torch.testing.assert_close(images, expected)


# ---- bug 2: the discretized logistic mixture in VMA and SoftAttentionVAE ------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_vma_mixture_generate_is_a_draw_on_the_grid(dtype):
    model = vma(RGB, MIXTURE, dtype)
    images = model.generate(2)
    assert images.shape == (2,) + RGB and images.dtype == dtype
    assert_on_grid(images)
    assert_on_grid(model.generate(2, slot=1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_vma_mixture_reconstruct_is_a_draw_on_the_grid(dtype):
    model = vma(RGB, MIXTURE, dtype)
    images = model.reconstruct(quantised((2,) + RGB, seed=2).to(dtype))
    assert images.shape == (2,) + RGB and images.dtype == dtype
    assert_on_grid(images)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_soft_attention_vae_mixture_generate_is_a_draw_on_the_grid(dtype):
    images = soft(RGB, MIXTURE, dtype).generate(2)
    assert images.shape == (2,) + RGB and images.dtype == dtype
    assert_on_grid(images)


def test_vma_bernoulli_reconstruct_and_generate_are_still_the_decoder_mean():
    model = vma(GRAY, "bernoulli", torch.float64)
    x = torch.bernoulli(torch.full((3,) + GRAY, 0.5, dtype=torch.float64))
    memory = model.resolve_memory(None)
    m_a = memory[model.addressing.posterior_logits(model.addressing.keys(memory), x).argmax(-1)]
    loc, _ = model._encode(x, m_a)
    expected = model.likelihood(model._decode(loc, m_a)).mean
    reconstruction = model.reconstruct(x)
    assert reconstruction.dtype == torch.float64
    torch.testing.assert_close(reconstruction, expected)

    m_a = memory[torch.full((3,), 2)]
    torch.manual_seed(5)
    images = model.generate(3, slot=2)
    torch.manual_seed(5)
    loc, scale = model.prior_net(m_a)
    expected = model.likelihood(model._decode(loc + scale * torch.randn_like(loc), m_a)).mean
    torch.testing.assert_close(images, expected)
