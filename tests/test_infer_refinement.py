"""The refinement guides as Pyro guides: ELBO, diagnostics, errors, parameters left alone."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyromem.diagnostics import elbo_decomposition
from pyromem.infer import (
    GaussianRefinement,
    IterativeAmortizedGuide,
    MAPRefinement,
    MemoryFixedPoint,
    PredictiveCoding,
    Refinement,
)
from pyromem.models import VAE, MemoryVAE
from pyromem.models.plates import data_plate


def memory_vae(device, scale=0.7):
    vae = VAE((1, 4, 4), latent_dim=3, hidden=(8,)).to(device)
    return MemoryVAE(vae, torch.randn(6, 3, device=device), scale=scale)


def images(device, n=5):
    return torch.bernoulli(torch.full((n, 1, 4, 4), 0.5, device=device))


def guides(m):
    return [
        MemoryFixedPoint(m.model, m.guide, num_steps=3),
        MAPRefinement(m.model, m.guide, num_steps=3, lr=0.5),
        PredictiveCoding(m.model, m.guide, m.vae.decoder.body, num_steps=3),
        PredictiveCoding(m.model, m.guide, m.vae.decoder.body, num_steps=3, fixed_predictions=True),
    ]


def log_joint_by_hand(m, x, z):
    components = dist.Normal(m.memory, m.scale).to_event(1).log_prob(z.unsqueeze(-2))
    log_prior = components.logsumexp(-1) - torch.log(torch.tensor(len(m.memory)))
    logits = m.vae.decoder(z)
    log_lik = -torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none")
    return log_prior + log_lik.sum((-3, -2, -1))


@pytest.mark.parametrize("index", range(4))
def test_trace_elbo_is_minus_the_log_joint_at_the_refined_point(device, index):
    m = memory_vae(device)
    x = images(device)
    guide = guides(m)[index]
    z = guide.refine(x)
    assert z.shape == (5, 3) and not torch.equal(z, guide.initial(x))
    loss = pyro.infer.Trace_ELBO()(m.model, guide)(x, num_data=20)
    expected = -20 / 5 * log_joint_by_hand(m, x, z).sum()
    assert torch.allclose(loss, expected, rtol=1e-5)
    decomposition = elbo_decomposition(m.model, guide, x, num_particles=2)
    assert torch.allclose(decomposition.elbo, log_joint_by_hand(m, x, z), atol=1e-4)


def test_initial_is_the_amortised_mean_and_trajectory_has_every_step(device):
    m = memory_vae(device)
    x = images(device)
    guide = MemoryFixedPoint(m.model, m.guide, num_steps=4)
    z, path = guide.refine(x, trajectory=True)
    assert torch.equal(path[0], m.vae.encoder(x)[0].detach())
    assert len(path) == 5 and torch.equal(path[-1], z)
    assert torch.equal(MemoryFixedPoint(m.model, m.guide, num_steps=0).refine(x), path[0])


def test_refinement_leaves_parameters_and_gradients_alone(device):
    m = memory_vae(device)
    x = images(device)
    pyro.infer.Trace_ELBO()(m.model, m.guide)(x).backward()
    state = {k: v.clone() for k, v in m.state_dict().items()}
    grads = {k: p.grad.clone() for k, p in m.named_parameters()}
    for guide in guides(m):
        guide.refine(x)
        guide(x)
    for k, v in m.state_dict().items():
        assert torch.equal(v, state[k]), k
    for k, p in m.named_parameters():
        assert torch.equal(p.grad, grads[k]), k


def test_a_guide_without_the_site_is_named():
    m = memory_vae(torch.device("cpu"))

    def guide(x, num_data=None):
        with data_plate(x, num_data):
            pyro.sample("w", dist.Normal(torch.zeros(len(x), 3), 1.0).to_event(1))

    with pytest.raises(ValueError, match="guide must have a sample site 'z'.*'w'"):
        MAPRefinement(m.model, guide).refine(images(torch.device("cpu")))
    with pytest.raises(ValueError, match="model must have a sample site 'w'"):
        MemoryFixedPoint(m.model, guide, site="w").refine(images(torch.device("cpu")))


def test_memory_fixed_point_needs_a_memory_prior():
    vae = VAE((1, 4, 4), latent_dim=3, hidden=(8,))
    with pytest.raises(TypeError, match="GaussianMixtureMemory prior at site 'z'.*Independent"):
        MemoryFixedPoint(vae.model, vae.guide).refine(images(torch.device("cpu")))


def test_arguments_are_checked():
    m = memory_vae(torch.device("cpu"))
    with pytest.raises(ValueError, match="num_steps"):
        MemoryFixedPoint(m.model, m.guide, num_steps=-1)
    with pytest.raises(ValueError, match="alpha"):
        MemoryFixedPoint(m.model, m.guide, alpha=0.0)
    with pytest.raises(ValueError, match="lr"):
        MAPRefinement(m.model, m.guide, lr=-1.0)
    with pytest.raises(TypeError, match="layers"):
        PredictiveCoding(m.model, m.guide, [])
    with pytest.raises(NotImplementedError):
        Refinement(m.model, m.guide).refine(images(torch.device("cpu")))


W = torch.tensor([[1.0, 0.0], [0.0, 1.5], [0.0, 0.0]])


def linear_model(x, num_data=None):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z @ W.T, 0.5).to_event(1), obs=x)


def likelihood_outside_the_plate(x, num_data=None):
    # z per datapoint, but x scored as one event over the whole batch
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    pyro.sample("x", dist.Normal(z @ W.T, 0.5).to_event(2), obs=x)


def encoder(x, num_data=None):
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(0.3 * x[:, :2], 1.0).to_event(1))


def one_row_encoder(x, num_data=None):
    # forgot the data plate: one row for the whole batch
    pyro.sample("z", dist.Normal(torch.zeros(1, 2), 1.0).to_event(1))


def point_encoder(x, num_data=None):
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Delta(0.3 * x[:, :2]).to_event(1))


def diverged_encoder(x, num_data=None):
    with pyro.plate("data", len(x)):
        loc = torch.full((len(x), 2), math.nan)
        pyro.sample("z", dist.Normal(loc, 1.0, validate_args=False).to_event(1))


@pytest.mark.parametrize("refinement", [MAPRefinement, GaussianRefinement])
def test_an_observed_site_outside_the_data_plate_is_refused_not_scored_for_every_datapoint(
    refinement,
):
    # before: each datapoint's objective held the whole batch's log-likelihood, so the steps
    # moved on B times its gradient and datapoint 0's answer depended on the others
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"observed site 'x' must lie in pyro.plate\('data'"):
        refinement(likelihood_outside_the_plate, encoder, num_steps=2).refine(x)
    refinement(linear_model, encoder, num_steps=2).refine(x)  # the same model, in the plate


@pytest.mark.parametrize("refinement", [MAPRefinement, GaussianRefinement])
def test_a_guide_with_one_row_for_the_batch_is_refused_before_the_first_step(refinement):
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"batch shape \(4,\).*mean of shape \(1, 2\)"):
        refinement(linear_model, one_row_encoder, num_steps=2).refine(x)


def test_a_diverged_guide_is_refused_before_the_first_step():
    x = torch.randn(4, 3)
    for refinement in (MAPRefinement, GaussianRefinement):
        with pytest.raises(ValueError, match="'z' has a mean with NaN or infinite values"):
            refinement(linear_model, diverged_encoder, num_steps=2).refine(x)


def test_gaussian_refinement_of_a_point_mass_is_refused():
    # before: with Pyro's validation off, log σ = -inf and the emitted Normal(μ, 0) made the
    # ELBO NaN; with it on, torch's "Expected parameter scale ... of distribution Normal"
    x = torch.randn(4, 3)
    point = MAPRefinement(linear_model, encoder, num_steps=1)
    for guide in (point, point_encoder):
        for refinement in (GaussianRefinement, IterativeAmortizedGuide):
            with pyro.validation_enabled(False):
                with pytest.raises(ValueError, match="positive, finite stddev.*point mass"):
                    refinement(linear_model, guide, num_steps=2)(x)


def test_predictive_coding_takes_a_bool_for_fixed_predictions():
    m = memory_vae(torch.device("cpu"))
    # bool("False") is True: the other update would run, silently
    with pytest.raises(TypeError, match="fixed_predictions: expected a bool, got 'False'"):
        PredictiveCoding(m.model, m.guide, m.vae.decoder.body, fixed_predictions="False")
