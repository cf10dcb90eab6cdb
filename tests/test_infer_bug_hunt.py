"""Regressions found by checking pyromem.infer against closed forms: a ``poutine.mask`` around an
observed site (missing data) is honoured by every objective, as Pyro's ELBOs honour it."""

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch

from pyromem.infer import GaussianRefinement, LearnedPrecisionRetrieval, MAPRefinement
from pyromem.infer.address_estimators import ReweightedWakeSleep
from pyromem.infer.gaussian_refinement import GaussianState

# z_b ~ N(0, 1), x_bj ~ N(z_b, 1) for the observed pixels j of datapoint b: x[0, 1] is missing
X = torch.tensor([[1.0, 3.0], [-2.0, 0.5]], dtype=torch.float64)
OBSERVED = torch.tensor([[True, False], [True, True]])
COUNT = OBSERVED.sum(-1, keepdim=True).double()
POSTERIOR_LOC, POSTERIOR_VAR = (X * OBSERVED).sum(-1, keepdim=True) / (1 + COUNT), 1 / (1 + COUNT)


def model(x):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(x.new_zeros(1), 1.0).to_event(1))
        with pyro.plate("pixels", 2, dim=-2), poutine.mask(mask=OBSERVED.T):
            pyro.sample("x", dist.Normal(z.squeeze(-1), 1.0), obs=x.T)


def exact_guide(x):
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(POSTERIOR_LOC, POSTERIOR_VAR.sqrt()).to_event(1))


def prior_guide(x):
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(x.new_zeros(len(x), 1), 1.0).to_event(1))


def log_evidence():
    """log p(x_obs) per datapoint: the observed pixels are N(0, I + 11ᵀ)."""
    return torch.stack(
        [
            dist.MultivariateNormal(0 * x, torch.eye(len(x), dtype=x.dtype) + 1).log_prob(x)
            for x in (row[seen] for row, seen in zip(X, OBSERVED, strict=True))
        ]
    )


def test_rws_leaves_out_a_masked_observation():
    # before: the masked x[0, 1] = 3 was scored, a loss of 9.82 against 5.65
    pyro.set_rng_seed(0)
    loss = ReweightedWakeSleep(3, max_plate_nesting=2).differentiable_loss(model, exact_guide, X)
    torch.testing.assert_close(loss, -log_evidence().sum())


def test_map_refinement_ascends_the_log_joint_of_the_observed_pixels():
    # before: datapoint 0 went to (1 + 3) / 3 = 1.33, the mode with the missing pixel as data
    refinement = MAPRefinement(model, prior_guide, num_steps=200, lr=0.2)
    z = refinement.refine(X)
    torch.testing.assert_close(z, POSTERIOR_LOC)
    normal = torch.distributions.Normal
    by_hand = normal(0.0, 1.0).log_prob(z).sum(-1) + (normal(z, 1.0).log_prob(X) * OBSERVED).sum(-1)
    torch.testing.assert_close(refinement.log_joint(z, X), by_hand)


def test_gaussian_refinement_elbo_of_the_posterior_is_the_evidence_of_the_observed_pixels():
    # for a likelihood quadratic in z (d = 1) the held-noise ELBO is exact: at the posterior
    # it is log p(x_obs); before, the masked pixel was scored and the refined scale too small
    refinement = GaussianRefinement(model, prior_guide, num_steps=300, lr=0.1, num_particles=2)
    noise = refinement.initial(X).noise
    posterior = GaussianState(POSTERIOR_LOC, 0.5 * POSTERIOR_VAR.log(), noise)
    torch.testing.assert_close(refinement.elbo(posterior, X), log_evidence())
    state = refinement.refine(X)
    torch.testing.assert_close(state.loc, POSTERIOR_LOC)
    torch.testing.assert_close(state.log_scale.exp(), POSTERIOR_VAR.sqrt())


def test_a_full_learned_precision_keeps_the_dtype_of_its_parameters():
    # before: the ridge took the default dtype, so a float32 module under a float64 default
    # made P float64 and the memory refused it
    retrieval = LearnedPrecisionRetrieval(3, full=True)
    memory, queries = torch.randn(5, 3), torch.randn(4, 3)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        assert retrieval.precision.dtype == torch.float32
        assert retrieval(queries, memory).dtype == torch.float32
    finally:
        torch.set_default_dtype(default)


@pytest.fixture(autouse=True)
def _clear_param_store():
    pyro.clear_param_store()
