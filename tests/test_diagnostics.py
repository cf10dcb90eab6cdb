import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyromem.diagnostics import elbo_decomposition, log_likelihood
from pyromem.diagnostics.log_likelihood import PASS_SCALARS, draws_per_pass
from tests.linear_gaussian import LinearGaussian


@pytest.fixture
def lg():
    return LinearGaussian()


def test_elbo_below_evidence_and_exact_with_true_posterior(lg):
    x = lg.sample(8)
    log_px = lg.log_evidence(x)
    weak = elbo_decomposition(lg.model, lg.weak_guide, x, num_particles=4000)
    # the weak guide's gap KL(q || p(z|x)) is > 0.3 nats here, far above the MC error
    assert (weak.elbo < log_px - 0.1).all()
    exact = elbo_decomposition(lg.model, lg.exact_guide, x, num_particles=4000)
    assert torch.allclose(exact.elbo, log_px, atol=0.05)
    assert exact.num_dims == 3
    assert torch.allclose(exact.bits_per_dim, -exact.elbo / (3 * math.log(2)))


def test_analytic_kl_matches_monte_carlo(lg):
    x = lg.sample(5)
    decomposition = elbo_decomposition(lg.model, lg.weak_guide, x, num_particles=1)
    assert decomposition.analytic_kl == {"z": True}
    # independent MC estimate of KL(q || N(0, I)) from many draws of q
    q = dist.Normal(0.3 * lg.posterior_loc(x), 1.0).to_event(1)
    z = q.sample((200_000,))
    p = dist.Normal(torch.zeros(2, dtype=torch.float64), 1.0).to_event(1)
    mc = (q.log_prob(z) - p.log_prob(z)).mean(0)
    # std of the MC mean is below 0.005 nats here
    assert torch.allclose(decomposition.kl["z"], mc, atol=0.02)


def test_monte_carlo_kl_when_not_registered(lg):
    def student_guide(x, num_data=None):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.StudentT(5.0, lg.posterior_loc(x), 0.5).to_event(1))

    x = lg.sample(4)
    d = elbo_decomposition(lg.model, student_guide, x, num_particles=20_000)
    assert d.analytic_kl == {"z": False}
    log_px = lg.log_evidence(x)
    assert (d.elbo <= log_px + 0.02).all()


def test_iwae_approaches_evidence(lg):
    x = lg.sample(16)
    log_px = lg.log_evidence(x)
    gaps = []
    for k in (1, 10, 1000):
        estimate = log_likelihood(lg.model, lg.weak_guide, x, num_samples=k, chunk_size=64)
        assert estimate.num_samples == k
        assert estimate.log_likelihood.shape == (16,)
        gaps.append((log_px - estimate.log_likelihood).mean().item())
    assert gaps[0] > gaps[1] > gaps[2] > -0.02
    assert gaps[2] < 0.1
    assert gaps[0] > 0.3


def test_iwae_exact_with_true_posterior_and_full_ess(lg):
    x = lg.sample(4)
    estimate = log_likelihood(lg.model, lg.exact_guide, x, num_samples=50, chunk_size=7)
    # every importance weight equals p(x) when the proposal is the posterior
    assert torch.allclose(estimate.log_likelihood, lg.log_evidence(x), atol=1e-9)
    assert torch.allclose(estimate.ess, torch.full((4,), 50.0, dtype=torch.float64))


def test_default_passes_keep_to_the_scalar_budget_and_report_each(lg, monkeypatch):
    x = lg.sample(16)  # 16 datapoints of 3 observed scalars
    draws = draws_per_pass(x, 3)
    budget = PASS_SCALARS.get(x.device.type, 2**24)
    assert draws * 48 <= budget < (draws + 1) * 48
    assert draws_per_pass(torch.zeros(10**6, 1), 10) == 1  # one draw when even one is over
    monkeypatch.setitem(PASS_SCALARS, x.device.type, 7 * 48 + 47)  # 7 draws a pass
    passes = []
    estimate = log_likelihood(
        lg.model, lg.exact_guide, x, num_samples=50, on_pass=lambda *done: passes.append(done)
    )
    # the trial draw, then passes of 7 draws, the last one of the 0 left after 1 + 7 * 7
    assert passes == [(1 + 7 * i, 50) for i in range(8)]
    assert torch.allclose(estimate.log_likelihood, lg.log_evidence(x), atol=1e-9)
    assert estimate.num_samples == 50


def test_site_outside_data_plate_is_named(lg):
    def model(x):
        pyro.sample("w", dist.Normal(0.0, 1.0))
        lg.model(x)

    def guide(x):
        pyro.sample("w", dist.Normal(0.0, 1.0))
        lg.exact_guide(x)

    with pytest.raises(ValueError, match="'w'"):
        elbo_decomposition(model, guide, lg.sample(2))


def test_guide_missing_latent_is_named(lg):
    def guide(x):
        pass

    with pytest.raises(ValueError, match="'z'"):
        elbo_decomposition(lg.model, guide, lg.sample(2))


def test_bad_particle_counts(lg):
    x = lg.sample(2)
    with pytest.raises(ValueError, match="num_particles"):
        elbo_decomposition(lg.model, lg.exact_guide, x, num_particles=0)
    with pytest.raises(ValueError, match="num_samples"):
        log_likelihood(lg.model, lg.exact_guide, x, num_samples=-3)


def test_decomposition_is_the_elbo_of_its_draws_by_hand(lg):
    # the draws are the trial's and then K - 1 vectorised ones, in that order from the seed;
    # scored here with torch's own densities and closed-form KL
    x, k = lg.sample(5), 4
    pyro.set_rng_seed(0)
    d = elbo_decomposition(lg.model, lg.weak_guide, x, num_particles=k)
    pyro.set_rng_seed(0)
    loc = 0.3 * lg.posterior_loc(x)
    scale = torch.ones_like(loc)
    z = torch.cat([torch.normal(loc, scale)[None], torch.normal(loc.expand(k - 1, 5, 2), 1.0)])
    log_lik = torch.distributions.Normal(z @ lg.W.T + lg.b, lg.sigma).log_prob(x).sum(-1).mean(0)
    kl = torch.distributions.kl_divergence(
        torch.distributions.Normal(loc, scale), torch.distributions.Normal(0.0, scale)
    ).sum(-1)
    assert torch.allclose(d.log_likelihood["x"], log_lik, rtol=0, atol=1e-12)
    assert torch.allclose(d.kl["z"], kl, rtol=0, atol=1e-12)


def test_masked_sites_add_nothing_as_in_pyros_elbo(lg):
    # a datapoint whose observation is masked out (poutine.mask, e.g. missing data) adds no
    # log-likelihood; before, the diagnostics scored it as if observed
    x = lg.sample(4)
    keep = torch.tensor([True, False, True, False])

    def masked_model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(x.new_zeros(lg.latent_dim), 1.0).to_event(1))
            with pyro.poutine.mask(mask=keep):
                pyro.sample("x", dist.Normal(z @ lg.W.T + lg.b, lg.sigma).to_event(1), obs=x)

    pyro.set_rng_seed(3)
    masked = elbo_decomposition(masked_model, lg.weak_guide, x, num_particles=5)
    pyro.set_rng_seed(3)
    whole = elbo_decomposition(lg.model, lg.weak_guide, x, num_particles=5)
    assert torch.equal(masked.log_likelihood["x"][~keep], torch.zeros(2, dtype=torch.float64))
    assert torch.equal(masked.log_likelihood["x"][keep], whole.log_likelihood["x"][keep])
    assert torch.equal(masked.kl["z"], whole.kl["z"])
    # Pyro's own estimator of the same sum, with the same analytic KL: the masked-out
    # datapoints' log-likelihoods were about 64 nats
    pyro.set_rng_seed(3)
    decomposition = elbo_decomposition(masked_model, lg.weak_guide, x, num_particles=4000)
    elbo = pyro.infer.TraceMeanField_ELBO(
        num_particles=4000, vectorize_particles=True, max_plate_nesting=1
    )
    assert decomposition.elbo.sum().item() == pytest.approx(
        -elbo.loss(masked_model, lg.weak_guide, x), abs=3.0
    )

    # the prior as proposal of the masked-out datapoints: log p(x) = 0 exactly, draw by draw
    def prior_guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(x.new_zeros(len(x), lg.latent_dim), 1.0).to_event(1))

    estimate = log_likelihood(masked_model, prior_guide, x, num_samples=50)
    assert torch.equal(estimate.log_likelihood[~keep], torch.zeros(2, dtype=torch.float64))
    assert torch.all(estimate.log_likelihood[keep] < 0)


def test_an_enumerated_site_the_guide_lacks_is_named_as_enumerated():
    def model(x):
        with pyro.plate("data", len(x)):
            a = pyro.sample(
                "a", dist.Categorical(logits=x.new_zeros(2)), infer={"enumerate": "parallel"}
            )
            pyro.sample("x", dist.Normal(a.to(x.dtype), 1.0), obs=x)

    def guide(x):
        pass

    with pytest.raises(ValueError, match=r"sample sites: \[\] \(\['a'\] enumerated in the model"):
        elbo_decomposition(model, guide, torch.zeros(3))


def test_a_gap_over_one_datapoint_has_no_standard_error():
    from pyromem.diagnostics.compare_guides import paired_mean_se

    mean, error = paired_mean_se(torch.tensor([0.7]))
    assert mean == pytest.approx(0.7) and math.isnan(error)
    mean, error = paired_mean_se(torch.tensor([1.0, 3.0]))
    # std of (1, 3) is √2 (Bessel's correction), over √2
    assert mean == 2.0 and error == pytest.approx(1.0)


def test_the_iwae_of_a_point_guide_is_refused():
    # a MAP refinement's Delta gives log p(x, ẑ) as its "weight": no bound on log p(x)
    from pyromem.infer import MAPRefinement

    lg = LinearGaussian()
    point = MAPRefinement(lg.model, lg.weak_guide, num_steps=1)
    with pytest.raises(ValueError, match="^guide: a point mass .* no bound on log p"):
        log_likelihood(lg.model, point, lg.sample(3), num_samples=5)
