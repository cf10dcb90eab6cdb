"""The batched retrieval paths against the Pyro guides they stand for, on tiny cases."""

import pytest
import torch

import pyromem.retrieval.protocol as protocol
from pyromem.infer import MAPRefinement, MemoryFixedPoint
from pyromem.models import VAE, MemoryVAE, PixelMemory
from pyromem.retrieval import build_method, evaluate, retrieval_success
from pyromem.retrieval.gradient_map import gradient_map, log_likelihood_of

SHAPE = (3, 4, 4)


def tiny_vae(device, likelihood="gaussian"):
    torch.manual_seed(0)
    kwargs = {"scale": 0.1} if likelihood == "gaussian" else {}
    vae = VAE(SHAPE, latent_dim=3, likelihood=likelihood, hidden=(8,), likelihood_kwargs=kwargs)
    return vae.to(device=device, dtype=torch.float64)


def images(device, *shape):
    generator = torch.Generator().manual_seed(1)
    return torch.rand(shape + SHAPE, generator=generator, dtype=torch.float64).to(device)


def test_quadratic_form_is_the_decoders_log_likelihood(device):
    vae = tiny_vae(device)
    x, z = images(device, 6), torch.randn(6, 3, dtype=torch.float64, device=device)
    rows = torch.tensor([4, 0, 2], device=device)
    log_likelihood, upper = log_likelihood_of(vae, x)
    expected = vae.decode(z[rows]).log_prob(x[rows])
    torch.testing.assert_close(log_likelihood(rows, z[rows]), expected, rtol=1e-10, atol=1e-8)
    exact = vae.decode(z).log_prob(vae.decoder(z))  # at x = f(z), the most likely image
    torch.testing.assert_close(exact, torch.full_like(exact, upper))


@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli"])
@pytest.mark.parametrize("weights", ["balanced", "hopfield"])
def test_gradient_map_is_map_refinement_on_each_memory(device, likelihood, weights):
    vae = tiny_vae(device, likelihood)
    stored = images(device, 2, 5)
    x = (stored + 0.3 * torch.randn_like(stored)).clamp(0, 1)
    if likelihood == "bernoulli":
        x = x.round()
    memory = vae.encoder(stored)[0].detach()
    settings = {"prior_weight": 10.0, "lr": 0.05, "num_steps": 6}
    batched = gradient_map(vae, x, memory, scale=0.3, weights=weights, **settings)
    for s in range(2):
        memory_vae = MemoryVAE(vae, memory[s], scale=0.3, weights=weights)
        guide = MAPRefinement(memory_vae.model, memory_vae.guide, **settings)
        with torch.no_grad():
            torch.testing.assert_close(batched[s], guide.refine(x[s]), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name", ["GMM", "Hopfield", "VAE-GMM", "VAE-Hopfield", "VAE-GMM*"])
def test_retrieve_many_is_memory_fixed_point_on_each_memory(device, name):
    vae = tiny_vae(device)
    stored = images(device, 3, 5)
    queries = (stored + 0.2 * torch.randn_like(stored)).clamp(0, 1)
    scale = {"beta": 4.0} if name.endswith("Hopfield") else {"sigma": 0.5}
    extra = {"train_steps": 20} if name == "VAE-GMM*" else {}
    method = build_method(name, SHAPE, vae, **scale, num_steps=4, **extra)
    if name == "VAE-GMM*":
        method.fit(images(device, 8), "noise-0.2", 5, torch.Generator().manual_seed(0))
    retrieved, memory = method.retrieve_many(queries, stored)
    assert retrieved.shape == (3, 5, method.embed(stored[0]).shape[-1])
    for s in range(3):
        if name in ("GMM", "Hopfield"):
            weights = "hopfield" if name == "Hopfield" else "balanced"
            model = PixelMemory(
                SHAPE, stored[s].flatten(1), weights=weights, scale=method.reader.scale
            )
        else:
            model, _ = method.memory_vae_of(stored[s])
        guide = MemoryFixedPoint(model.model, model.guide, num_steps=4)
        with torch.no_grad():
            torch.testing.assert_close(retrieved[s], guide.refine(queries[s]))


def test_evaluate_reads_in_batches_with_the_rates_of_each_memory_read_alone(monkeypatch):
    test = torch.rand((30,) + SHAPE, generator=torch.Generator().manual_seed(2))
    gmm = build_method("GMM", SHAPE, sigma=0.5)
    rates = evaluate(gmm, test, "noise-0.6", memory_size=10, seeds=4, threshold=0.2)
    monkeypatch.setattr(protocol, "BATCH_ELEMENTS", 1)  # one memory per read
    alone = evaluate(gmm, test, "noise-0.6", memory_size=10, seeds=4, threshold=0.2)
    assert (alone.success, alone.nearest, alone.within) == (
        rates.success,
        rates.nearest,
        rates.within,
    )
    # a batched matmul may sum in another order than one memory's: distances agree to rounding
    assert alone.distance == pytest.approx(rates.distance, rel=1e-4, abs=1e-9)
    for seed in range(4):  # by hand: seed s draws the memory, then the noise
        generator = torch.Generator().manual_seed(seed)
        stored = test[torch.randperm(30, generator=generator)[:10]]
        queries = (stored + 0.6 * torch.randn(stored.shape, generator=generator)).clamp(0, 1)
        retrieved, memory = gmm.retrieve(queries, stored)
        outcome = retrieval_success(retrieved, memory, torch.arange(10), 0.2)
        assert rates.success[seed] == pytest.approx(100 * outcome.success.float().mean())
    assert len(set(rates.success)) > 1
