"""Diagnostics of a model with a plate nested in the data plate, checked against closed forms.

Pyro gives the first plate entered dim -1 and a plate nested in it dim -2, so a site in both
has batch shape (P, B): the datapoints are not the leftmost plate dim.
"""

import math

import pyro
import pyro.distributions as dist
import torch

from pyromem.diagnostics import log_importance_weights, log_likelihood, to_inference_data
from pyromem.diagnostics.log_likelihood import chunked_log_weights

P, PRIOR_U, SIGMA = 3, 0.5, 0.7


def model(x):
    # z ~ N(0, 1) per datapoint, u_p ~ N(0, 0.5²) and x_p ~ N(z + u_p, 0.7²) per pixel
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))
        with pyro.plate("pixels", P):
            u = pyro.sample("u", dist.Normal(x.new_zeros(()), PRIOR_U))
            pyro.sample("x", dist.Normal(z + u, SIGMA), obs=x.T)


def exact_guide(x):
    # q(z | x) = p(z | x) and q(u | z, x) = p(u | z, x): every importance weight is p(x)
    pixel_var = PRIOR_U**2 + SIGMA**2
    z_precision = 1 + P / pixel_var
    u_precision = 1 / PRIOR_U**2 + 1 / SIGMA**2
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(x.sum(-1) / pixel_var / z_precision, z_precision**-0.5))
        with pyro.plate("pixels", P):
            loc = (x.T - z) / SIGMA**2 / u_precision
            pyro.sample("u", dist.Normal(loc, u_precision**-0.5))


def log_evidence(x):
    cov = torch.ones(P, P, dtype=x.dtype) + (PRIOR_U**2 + SIGMA**2) * torch.eye(P, dtype=x.dtype)
    return dist.MultivariateNormal(torch.zeros(P, dtype=x.dtype), cov).log_prob(x)


def data(batch=4):
    return 1.5 * torch.randn(batch, P, generator=torch.Generator().manual_seed(0)).double()


def test_iwae_of_a_model_with_a_plate_in_the_data_plate_is_its_evidence():
    # the trial draw's per-datapoint log-weights (1, B) were reshaped to the plates' rank,
    # (1, 1, B), and then failed to expand to (1, B): every model with two plate dims failed
    x = data()
    estimate = log_likelihood(model, exact_guide, x, num_samples=20, chunk_size=7)
    assert estimate.log_likelihood.shape == (4,)
    assert torch.allclose(estimate.log_likelihood, log_evidence(x), rtol=0, atol=1e-9)
    assert torch.allclose(estimate.ess, torch.full((4,), 20.0, dtype=torch.float64))
    assert estimate.num_dims == P
    log_weight, num_dims = log_importance_weights(model, exact_guide, x, 5)
    assert log_weight.shape == (5, 4) and num_dims == P
    assert torch.allclose(log_weight, log_evidence(x).expand(5, 4), rtol=0, atol=1e-9)
    # keep_dims keeps the pixels' dim, left of the datapoints' as in the model
    kept, _ = chunked_log_weights(model, exact_guide, x, 6, chunk_size=4, keep_dims=True)
    assert kept.shape == (6, P, 4)


def test_export_of_a_model_with_a_plate_in_the_data_plate_keeps_each_datapoints_values():
    # the values of sites in both plates, shape (K, P, B), were reshaped to (K, B, P) without
    # moving the data plate's dim: each "datapoint" mixed pixels of several datapoints
    x = data()
    pyro.set_rng_seed(0)
    exported = to_inference_data(model, exact_guide, x, num_samples=20, num_chains=2)
    observed = torch.as_tensor(exported["observed_data"]["x"].values)
    assert torch.equal(observed, x)
    z = torch.as_tensor(exported["posterior"]["z"].values)
    u = torch.as_tensor(exported["posterior"]["u"].values)
    assert z.shape == (2, 20, 4) and u.shape == (2, 20, 4, P)
    # the exported log-likelihood is that of the exported draws of the same datapoint
    log_lik = torch.as_tensor(exported["log_likelihood"]["x"].values)
    by_hand = dist.Normal(z[..., None] + u, SIGMA).log_prob(x).sum(-1)
    assert torch.allclose(log_lik, by_hand, rtol=0, atol=1e-9)
    ratio = torch.as_tensor(exported["sample_stats"]["log_importance_ratio"].values)
    assert torch.allclose(ratio, log_evidence(x).expand(2, 20, 4), rtol=0, atol=1e-9)
    predictive = exported["posterior_predictive"]["x"]
    assert predictive.shape == (2, 20, 4, P)
    # u's draws sit about their guide's mean given z, datapoint by datapoint
    u_precision = 1 / PRIOR_U**2 + 1 / SIGMA**2
    residual = (u - (x - z[..., None]) / SIGMA**2 / u_precision) * math.sqrt(u_precision)
    assert residual.mean().abs() < 0.2 and (residual.std() - 1).abs() < 0.15


def test_khat_of_an_exact_proposal_in_float32_is_zero_not_a_fit_of_rounding():
    # float32 log-weights of an exact proposal spread by a few 1e-6 nats of rounding, above
    # the 1e-6 nats taken as constant: arviz fitted a tail to the rounding, k̂ up to inf
    from pyromem.diagnostics import pareto_khat

    x = data(6).float()
    log_weight, _ = log_importance_weights(model, exact_guide, x, 200)
    assert log_weight.dtype == torch.float32
    spread = log_weight.max(0).values - log_weight.min(0).values
    assert (spread > 1e-6).any()  # rounding, not a tail
    assert torch.equal(pareto_khat(log_weight), torch.zeros(6))
    # a guide that is not exact keeps its fit in float32, and some zero weights do not
    # make a datapoint's ratios read as constant
    torch.manual_seed(0)
    noisy = log_weight + 0.1 * torch.randn_like(log_weight)
    noisy[:5, 0] = -math.inf
    assert (pareto_khat(noisy) != 0).all()
