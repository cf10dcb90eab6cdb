"""GaussianRefinement, IterativeAmortizedGuide and MAPRefinement on one model, checked against
the linear-Gaussian closed forms."""

import math

import pyro
import pytest
import torch

from pyromem.diagnostics import compare_guides, log_importance_weights
from pyromem.infer import VIMCO, GaussianRefinement, IterativeAmortizedGuide, MAPRefinement
from pyromem.models import VAE
from tests.linear_gaussian import LinearGaussian


def diagonal_posterior_model():
    """A linear-Gaussian model with orthogonal columns of W: its posterior is a diagonal
    Gaussian, inside the family of a mean-field Normal guide."""
    lg = LinearGaussian(latent_dim=2, obs_dim=3)
    q, _ = torch.linalg.qr(lg.W)
    lg.W = q * torch.tensor([1.0, 1.5], dtype=torch.float64)
    eye = torch.eye(2, dtype=torch.float64)
    lg.posterior_cov = torch.linalg.inv(eye + lg.W.T @ lg.W / lg.sigma**2)
    return lg


def test_gaussian_refinement_reaches_the_exact_posterior_and_closes_the_amortisation_gap():
    pyro.set_rng_seed(0)
    lg = diagonal_posterior_model()
    x = lg.sample(16)
    refined = GaussianRefinement(lg.model, lg.weak_guide, num_steps=60, lr=0.1)
    state = refined.refine(x)
    assert torch.allclose(state.loc, lg.posterior_loc(x), atol=1e-6)
    assert torch.allclose(state.log_scale.exp(), lg.posterior_cov.diag().sqrt().expand(16, 2))
    # with the exact posterior, every importance weight is p(x): the ELBO is log p(x)
    log_weight, _ = log_importance_weights(lg.model, refined, x, 50)
    assert torch.allclose(log_weight, lg.log_evidence(x).expand(50, 16), atol=1e-5)

    comparison = compare_guides(
        lg.model,
        {"weak": lg.weak_guide, "refined": refined},
        x,
        num_samples=100,
        num_particles=200,
        log_evidence=lg.log_evidence(x),
    )
    assert comparison.amortization_gap("refined").mean() > 5.0  # the weak encoder's gap
    assert comparison.best == "refined"
    assert comparison.approximation_gap.abs().mean() < 0.1  # ELBO of the refined ≈ log p(x)
    assert comparison.summary()["guides"]["refined"]["khat_max"] < 0.5


def test_refinement_trajectory_ascends_the_elbo():
    lg = diagonal_posterior_model()
    x = lg.sample(8)
    refined = GaussianRefinement(lg.model, lg.weak_guide, num_steps=10, lr=0.5)
    _, path = refined.refine(x, trajectory=True)
    values = torch.stack([refined.elbo(state, x) for state in path])
    assert (values[1:] >= values[:-1] - 1e-12).all()
    assert (values[-1] > values[0]).all()


def test_map_refinement_never_decreases_the_log_joint():
    lg = LinearGaussian()
    x = lg.sample(16)
    refinement = MAPRefinement(lg.model, lg.weak_guide, num_steps=15, lr=2.0)
    _, path = refinement.refine(x, trajectory=True)
    values = torch.stack([refinement.log_joint(z, x) for z in path])
    assert (values[1:] >= values[:-1]).all()
    assert (values[-1] > values[0]).all()


def small_vae():
    pyro.set_rng_seed(0)
    vae = VAE((1, 4, 4), latent_dim=2, hidden=(16,))
    x = torch.bernoulli(torch.full((6, 1, 4, 4), 0.5))
    return vae, x


def guides_of(vae):
    return {
        "gaussian": GaussianRefinement(vae.model, vae.guide, num_steps=3),
        "gaussian-differentiable": GaussianRefinement(
            vae.model, vae.guide, num_steps=3, differentiable=True
        ),
        "iterative": IterativeAmortizedGuide(vae.model, vae.guide, num_steps=3),
    }


@pytest.mark.parametrize("name", ["gaussian", "gaussian-differentiable", "iterative"])
def test_refining_leaves_the_model_parameters_and_their_grads_alone(name):
    vae, x = small_vae()
    for p in vae.parameters():
        p.grad = torch.full_like(p, 0.5)
    before = {n: (p.detach().clone(), p.grad.clone()) for n, p in vae.named_parameters()}
    guides_of(vae)[name].refine(x)
    for n, p in vae.named_parameters():
        assert torch.equal(p, before[n][0]) and torch.equal(p.grad, before[n][1]), n


@pytest.mark.parametrize(
    "elbo",
    [
        pyro.infer.Trace_ELBO(),
        pyro.infer.TraceMeanField_ELBO(),
        pyro.infer.TraceGraph_ELBO(),
        pyro.infer.Trace_ELBO(num_particles=3, vectorize_particles=True),
        pyro.infer.RenyiELBO(alpha=0.5, num_particles=2),
        VIMCO(num_particles=3),
    ],
    ids=["Trace", "TraceMeanField", "TraceGraph", "Trace-vectorised", "Renyi", "VIMCO"],
)
@pytest.mark.parametrize("name", ["gaussian", "gaussian-differentiable", "iterative"])
def test_every_elbo_trains_with_the_refined_guides(elbo, name):
    vae, x = small_vae()
    guide = guides_of(vae)[name]
    loss = elbo.loss_and_grads(vae.model, guide, x)
    assert torch.isfinite(torch.as_tensor(loss))
    named = dict(vae.named_parameters())
    assert all(p.grad is not None for n, p in named.items() if "decoder" in n)
    # the encoder learns through the steps only when they stay in the graph
    encoder = [p.grad for n, p in named.items() if "encoder" in n]
    trains_encoder = any(g is not None and g.abs().sum() > 0 for g in encoder)
    assert trains_encoder == (name != "gaussian")
    if name == "iterative":
        assert all(p.grad is not None for p in guide.parameters())


def test_iterative_guide_learns_to_improve_on_the_amortised_guide():
    pyro.set_rng_seed(0)
    lg = diagonal_posterior_model()
    x = lg.sample(64)
    guide = IterativeAmortizedGuide(lg.model, lg.weak_guide, num_steps=3, num_particles=4)
    guide.double()
    optimizer = torch.optim.Adam(guide.parameters(), lr=1e-2)
    loss_fn = pyro.infer.Trace_ELBO(num_particles=4, vectorize_particles=True)
    for _ in range(150):
        optimizer.zero_grad()
        loss_fn.differentiable_loss(lg.model, guide, x).backward()
        optimizer.step()
    comparison = compare_guides(
        lg.model, {"weak": lg.weak_guide, "iterative": guide}, x, num_samples=50, num_particles=50
    )
    assert comparison.amortization_gap("iterative").mean() > 5.0


def test_bad_input_names_the_site():
    lg = LinearGaussian()
    x = lg.sample(4)

    def no_latent(x, num_data=None):
        pass

    with pytest.raises(ValueError, match="latent site.*'z'"):
        compare_guides(lg.model, {"empty": no_latent}, x, num_samples=30)
    with pytest.raises(ValueError, match="'w'"):
        GaussianRefinement(lg.model, lg.weak_guide, site="w").refine(x)
    with pytest.raises(ValueError, match="'w'"):
        MAPRefinement(lg.model, lg.weak_guide, site="w").refine(x)
    with pytest.raises(ValueError, match="observed site 'x'"):
        compare_guides(lg.model, {"weak": lg.weak_guide}, torch.zeros(4, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="amortized"):
        compare_guides(lg.model, {"weak": lg.weak_guide}, x, amortized="other")


def test_amortisation_gaps_of_one_guide_are_within_their_standard_errors():
    # three copies of one guide: their true amortisation gaps are 0, so what the table
    # reports is Monte Carlo noise, and its standard error must say so
    pyro.set_rng_seed(0)
    lg = LinearGaussian()
    x = lg.sample(32)
    guides = {"a": lg.weak_guide, "b": lg.weak_guide, "c": lg.weak_guide}
    comparison = compare_guides(
        lg.model, guides, x, num_samples=30, num_particles=2, log_evidence=lg.log_evidence(x)
    )
    summary = comparison.summary()
    for g in ("b", "c"):
        row = summary["guides"][g]
        # the standard error of the mean of the 32 paired differences, by hand
        difference = comparison.elbo[g] - comparison.elbo["a"]
        se = (difference.std() / 32**0.5).item()
        assert row["amortization_gap_se_nats"] == pytest.approx(se, rel=1e-9)
        assert abs(row["amortization_gap_nats"]) < 3 * se
        assert f"{row['amortization_gap_nats']:+.2f} ± {se:.2f}" in comparison.table()
    assert summary["guides"]["a"]["amortization_gap_se_nats"] == 0.0
    gap = lg.log_evidence(x) - comparison.elbo[comparison.best]
    assert summary["approximation_gap_se_nats"] == pytest.approx((gap.std() / 32**0.5).item())


def test_the_amortisation_reference_is_the_first_guide_with_a_density():
    lg = LinearGaussian()
    x = lg.sample(4)
    point = MAPRefinement(lg.model, lg.weak_guide, num_steps=1)
    comparison = compare_guides(
        lg.model, {"map": point, "weak": lg.weak_guide}, x, num_samples=30, num_particles=2
    )
    assert comparison.amortized == "weak"
    assert comparison.amortization_gap("weak").eq(0).all()
    with pytest.raises(ValueError, match="amortized must name a guide with a density.*'map'"):
        compare_guides(lg.model, {"map": point, "weak": lg.weak_guide}, x, amortized="map")
    with pytest.raises(ValueError, match="every guide is a point mass"):
        compare_guides(lg.model, {"map": point}, x, log_evidence=lg.log_evidence(x))


def test_a_diverged_guide_gets_no_khat_and_is_never_the_best(tmp_path):
    # a guide whose means blew up: every importance weight underflows to 0 (log-ratio -inf)
    lg = LinearGaussian()
    x = lg.sample(4)

    def diverged(x, num_data=None):
        with pyro.plate("data", len(x)):
            pyro.sample(
                "z", pyro.distributions.Normal(torch.full_like(x[:, :2], 1e200), 1.0).to_event(1)
            )

    comparison = compare_guides(
        lg.model, {"weak": lg.weak_guide, "diverged": diverged}, x, num_samples=30
    )
    row = comparison.summary()["guides"]["diverged"]
    assert comparison.pareto_k["diverged"].isnan().all()
    assert math.isnan(row["khat_mean"]) and row["khat_frac_ge_0.7"] == 1.0
    assert comparison.best == "weak" and "weak" in comparison.log_evidence_source
    line = next(line for line in comparison.table().splitlines() if line.startswith("| diverged"))
    assert "nan" in line and "100% (100% NaN)" in line
    assert comparison.plot(tmp_path / "figure.png").is_file()


def test_a_guide_whose_log_ratios_reach_plus_inf_is_never_the_best():
    # the model's density is +inf where z[0] > 50 (a diverged likelihood head, say): a guide
    # that draws there has +inf log-ratios, whose logsumexp would be an IWAE of +inf
    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", pyro.distributions.Normal(torch.zeros_like(x), 1.0).to_event(1))
            pyro.factor("blowup", torch.where(z[..., 0] > 50, math.inf, 0.0))
            pyro.sample("x", pyro.distributions.Normal(z, 1.0).to_event(1), obs=x)

    def guide(shift):
        def draw(x):
            with pyro.plate("data", len(x)):
                pyro.sample("z", pyro.distributions.Normal(x / 2 + shift, 0.7).to_event(1))

        return draw

    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    guides = {"good": guide(0.0), "diverged": guide(100.0)}
    comparison = compare_guides(model, guides, x, num_samples=30)
    assert comparison.iwae["diverged"].isnan().all()
    assert comparison.ess["diverged"].isnan().all()
    assert comparison.log_evidence_source == "IWAE-30 of good"
    assert comparison.log_evidence.isfinite().all()
    # the good guide's IWAE is below log p(x), here in closed form: x ~ N(0, 2 I)
    log_px = pyro.distributions.Normal(0.0, math.sqrt(2.0)).log_prob(x).sum(-1)
    assert (comparison.iwae["good"] <= log_px + 0.05).all()
    # an ELBO of +inf ranks last too
    comparison.elbo["diverged"] = torch.full((4,), math.inf)
    assert comparison.best == "good"


def test_the_figure_names_its_data_labels_the_khat_lines_and_the_zero_by_construction(tmp_path):
    lg = LinearGaussian()
    x = lg.sample(6)
    point = MAPRefinement(lg.model, lg.weak_guide, num_steps=1)
    guides = {"weak": lg.weak_guide, "exact": lg.exact_guide, "map": point}
    comparison = compare_guides(lg.model, guides, x, num_samples=30, num_particles=2)
    defining = comparison.log_evidence_source.removeprefix("IWAE-30 of ")
    assert defining in ("weak", "exact")
    figure = comparison.figure(dataset="digits", split="test", model="vae")
    title = suptitle(figure)
    assert "Guides of `vae` on `digits` test split: N = 6 datapoints" in title
    assert "log p(x): IWAE-30 of" in title
    left, right = figure.axes
    labels = [t.get_text() for t in left.get_legend().get_texts()]
    assert f"IWAE-30 of {defining}: log p(x) itself, 0 by construction" in labels
    assert "IWAE-30" in labels and "ELBO" in labels  # the other guide's square, unmarked
    khat = [t.get_text() for t in right.get_legend().get_texts()]
    assert khat[0].startswith("k̂ = 0.5") and khat[1].startswith("k̂ = 0.7")
    assert "unreliable" in khat[1]
    # an exact log p(x): no square is log p(x) itself; without a name the title keeps N
    exact = compare_guides(
        lg.model, guides, x, num_samples=30, num_particles=2, log_evidence=lg.log_evidence(x)
    )
    figure = exact.figure()
    assert suptitle(figure).startswith("Guides compared: N = 6 datapoints")
    labels = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert not any("by construction" in label for label in labels)
    assert exact.plot(tmp_path / "figure", dataset="digits").is_file()


def suptitle(figure):
    """The figure's title (matplotlib 3.7 has no ``Figure.get_suptitle``)."""
    return "\n".join(text.get_text() for text in figure.texts)
