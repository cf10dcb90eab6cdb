import pyro
import pyro.distributions as dist
import pytest
import torch

from pyromem.memory import GaussianMixtureMemory
from pyromem.models import VAE, MemoryVAE


def tiny_vae(device, latent_dim=3):
    return VAE((1, 4, 4), latent_dim=latent_dim, hidden=(8,)).to(device)


def images(device, n=5):
    return torch.bernoulli(torch.full((n, 1, 4, 4), 0.5, device=device))


def test_write_stores_the_encoder_means(device):
    vae = tiny_vae(device)
    memory_vae = MemoryVAE(vae, scale=0.5)
    x = images(device)
    memory = memory_vae.write(x)
    assert memory.shape == (5, 3)
    assert torch.equal(memory, vae.encoder(x)[0].detach())
    assert memory_vae.memory is memory and not memory.requires_grad


def test_prior_is_the_configured_mixture(device):
    vae = tiny_vae(device)
    memory = torch.randn(4, 3, device=device)
    prior = MemoryVAE(vae, memory, scale=0.3, weights="hopfield").prior()
    assert isinstance(prior, GaussianMixtureMemory)
    assert prior.weights == "hopfield" and torch.allclose(prior.beta, torch.tensor(1 / 0.09))
    precision = torch.tensor([1.0, 2.0, 3.0], device=device)
    prior = MemoryVAE(vae, memory, precision=precision).prior()
    assert prior.scale is None and torch.equal(prior.precision, precision)


def test_model_scores_x_and_z_by_hand(device):
    vae = tiny_vae(device)
    memory = torch.randn(4, 3, device=device)
    memory_vae = MemoryVAE(vae, memory, scale=0.7)
    x, z = images(device), torch.randn(5, 3, device=device)
    trace = pyro.poutine.trace(pyro.poutine.condition(memory_vae.model, {"z": z})).get_trace(
        x, num_data=20
    )
    components = dist.Normal(memory, 0.7).to_event(1).log_prob(z.unsqueeze(-2))
    log_prior = components.logsumexp(-1) - torch.log(torch.tensor(4.0))
    log_lik = dist.Bernoulli(logits=vae.decoder(z)).to_event(3).log_prob(x)
    expected = 20 / 5 * (log_prior + log_lik).sum()
    assert torch.allclose(trace.log_prob_sum(), expected, atol=1e-4)


def test_amortised_guide_trains_with_trace_elbo(device):
    memory_vae = MemoryVAE(tiny_vae(device), scale=0.5)
    x = images(device)
    memory_vae.write(x)
    loss = pyro.infer.Trace_ELBO()(memory_vae.model, memory_vae.guide)(x)
    loss.backward()
    assert torch.isfinite(loss)
    assert memory_vae.vae.decoder.body[0].weight.grad is not None
    samples = pyro.infer.Predictive(memory_vae.model, num_samples=2)(x)
    assert samples["z"].shape == (2, 5, 3)


def test_a_trained_vae_keeps_its_parameter_names(device):
    vae = tiny_vae(device)
    x = images(device)
    pyro.infer.Trace_ELBO()(vae.model, vae.guide)(x).backward()
    MemoryVAE(vae).write(x)
    assert vae._pyro_name.startswith("vae")


def test_errors_name_the_argument(device):
    vae = tiny_vae(device)
    with pytest.raises(ValueError, match="memory is empty"):
        MemoryVAE(vae).model(images(device))
    with pytest.raises(ValueError, match=r"memory must have shape \(N, d\).*d = 3.*\(4, 2\)"):
        MemoryVAE(vae, torch.randn(4, 2))
    memory_vae = MemoryVAE(vae, scale=0.5)
    with pytest.raises(ValueError, match=r"images must have shape.*\(5, 1, 8, 8\)"):
        memory_vae.write(torch.zeros(5, 1, 8, 8, device=device))
    memory_vae.memory = torch.randn(4, 5, device=device)
    with pytest.raises(ValueError, match="memory must have shape"):
        memory_vae.prior()
    with pytest.raises(ValueError, match="scale"):
        MemoryVAE(vae, scale=0.0)
    with pytest.raises(ValueError, match="weights"):
        MemoryVAE(vae, weights="uniform")
    with pytest.raises(TypeError, match="vae"):
        MemoryVAE(object())
