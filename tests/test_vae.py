import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, JitTrace_ELBO, Trace_ELBO, TraceMeanField_ELBO
from pyro.optim import Adam

from pyromem.data import load
from pyromem.diagnostics import elbo_decomposition
from pyromem.models import VAE


@pytest.fixture(scope="module")
def digits():
    return load("digits", "train", binarize="static").images[:256]


@pytest.mark.parametrize("elbo", [Trace_ELBO, TraceMeanField_ELBO, JitTrace_ELBO])
def test_plain_svi_loop_improves_elbo(elbo, digits, device):
    pyro.set_rng_seed(0)
    x = digits.to(device)
    vae = VAE((1, 8, 8), latent_dim=4, hidden=(64,)).to(device)
    svi = SVI(vae.model, vae.guide, Adam({"lr": 3e-3}), elbo())
    losses = [svi.step(x[i % 4 * 64 :][:64], num_data=len(x)) / len(x) for i in range(300)]
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    # from ~44 nats per image at initialisation to below 30
    assert last < first - 10, (first, last)


@pytest.mark.parametrize("net", ["mlp", "conv"])
@pytest.mark.parametrize(
    "likelihood,shape",
    [
        ("bernoulli", (1, 8, 8)),
        ("gaussian", (1, 16, 16)),
        ("discretized_logistic_mixture", (3, 8, 8)),
    ],
)
def test_every_net_and_likelihood_gives_a_finite_loss(net, likelihood, shape, device):
    vae = VAE(shape, latent_dim=3, likelihood=likelihood, net=net, hidden=(16,)).to(device)
    x = torch.rand(4, *shape, device=device)
    x = x.round() if likelihood == "bernoulli" else (x * 255).round() / 255
    loss = Trace_ELBO(num_particles=2, vectorize_particles=True).differentiable_loss(
        vae.model, vae.guide, x
    )
    assert torch.isfinite(loss)
    loss.backward()
    assert vae.reconstruct(x).shape == x.shape
    assert vae.generate(3).shape == (3, *shape)
    with pytest.raises(ValueError, match="a VAE has no memory"):
        vae.generate(3, memory=torch.zeros(2, 3, device=device))


def test_data_plate_scales_to_dataset_size(digits):
    vae = VAE((1, 8, 8), latent_dim=2, hidden=(16,))
    x = digits[:10]
    elbo = Trace_ELBO()
    pyro.set_rng_seed(3)
    batch_loss = elbo.loss(vae.model, vae.guide, x)
    pyro.set_rng_seed(3)
    dataset_loss = elbo.loss(vae.model, vae.guide, x, num_data=1000)
    assert dataset_loss == pytest.approx(batch_loss * 100, rel=1e-5)


def test_analytic_kl_of_z_matches_monte_carlo(digits):
    torch.manual_seed(0)
    vae = VAE((1, 8, 8), latent_dim=5, hidden=(32,))
    x = digits[:6]
    terms = elbo_decomposition(vae.model, vae.guide, x, num_particles=1)
    assert terms.analytic_kl == {"z": True}
    with torch.no_grad():
        loc, scale = vae.encoder(x)
    q = dist.Normal(loc, scale).to_event(1)
    z = q.sample((100_000,))
    mc = (q.log_prob(z) - dist.Normal(0.0, 1.0).expand([5]).to_event(1).log_prob(z)).mean(0)
    # the standard error of the MC mean is below 0.01 nats at this KL (≈ 1 nat per dim)
    assert torch.allclose(terms.kl["z"], mc, atol=0.03)


def test_instances_do_not_share_parameters(digits):
    a, b = VAE((1, 8, 8), 2, hidden=(8,)), VAE((1, 8, 8), 2, hidden=(8,))
    for vae in (a, b):
        Trace_ELBO().loss(vae.model, vae.guide, digits[:2])
    assert not torch.equal(
        a.encoder.state_dict()["body.0.weight"], b.encoder.state_dict()["body.0.weight"]
    )


@pytest.mark.parametrize(
    "x,error,match",
    [
        (torch.ones(3, 1, 7, 7), ValueError, r"shape \(batch, 1, 8, 8\)"),
        (torch.ones(3, 1, 8, 8, dtype=torch.long), TypeError, "floating-point"),
        (torch.full((3, 1, 8, 8), 0.5), ValueError, "binary"),
        (torch.full((3, 1, 8, 8), 2.0), ValueError, r"\[0, 1\]"),
        (torch.full((3, 1, 8, 8), float("nan")), ValueError, "NaN"),
    ],
)
def test_bad_images_get_clear_errors(x, error, match):
    vae = VAE((1, 8, 8), 2, hidden=(8,))
    with pytest.raises(error, match=match):
        Trace_ELBO().loss(vae.model, vae.guide, x)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="likelihood"):
        VAE((1, 8, 8), likelihood="poisson")
    with pytest.raises(ValueError, match="net"):
        VAE((1, 8, 8), net="transformer")
    with pytest.raises(ValueError, match="latent_dim"):
        VAE((1, 8, 8), latent_dim=0)


def test_input_shape_may_be_one_int_and_a_bad_one_is_named():
    vae = VAE(64, latent_dim=2)
    assert vae.input_shape == (64,) and vae.config["input_shape"] == [64]
    x = torch.bernoulli(torch.full((5, 64), 0.5))
    assert math.isfinite(pyro.infer.Trace_ELBO().loss(vae.model, vae.guide, x))
    with pytest.raises(TypeError, match="input_shape must be a tuple of ints"):
        VAE((1, "a"))
    with pytest.raises(ValueError, match="input_shape must have 3 dims"):
        VAE(64, net="conv")
