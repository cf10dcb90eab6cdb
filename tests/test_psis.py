"""PSIS k̂ of a guide's importance ratios, and the export of its draws to arviz."""

import functools
import importlib.metadata
import math

import matplotlib
import pyro
import pytest
import torch

from pyromem.diagnostics import log_importance_weights, pareto_khat, to_inference_data
from tests.linear_gaussian import LinearGaussian

matplotlib.use("Agg")


def test_khat_is_small_for_the_exact_posterior_and_large_for_a_badly_scaled_proposal():
    torch.manual_seed(0)
    lg = LinearGaussian()
    x = lg.sample(20)
    exact, _ = log_importance_weights(lg.model, lg.exact_guide, x, 500)
    assert (pareto_khat(exact) < 0.5).all()
    # badly scaled, too narrow or too wide for K = 500 (and shrunk): most weight in few draws
    for scale in (0.05, 3.0):
        proposal = functools.partial(lg.weak_guide, scale=scale)
        log_weight, _ = log_importance_weights(lg.model, proposal, x, 500)
        assert pareto_khat(log_weight).median() > 0.7, scale


def test_khat_recovers_the_tail_shape_of_pareto_ratios():
    # log r = xi * E with E ~ Exp(1) makes r Pareto with tail index 1/xi: its tail above any
    # threshold is a generalised Pareto of shape xi, the k̂ that PSIS estimates. Negated
    # log-ratios (arviz >= 1 takes log-likelihoods) would give bounded ratios and k̂ < 0.
    torch.manual_seed(0)
    for xi in (0.2, 0.9):
        log_weights = xi * torch.distributions.Exponential(1.0).sample((4000, 20)).double()
        assert abs(pareto_khat(log_weights).median().item() - xi) < 0.1, xi


def test_khat_agrees_with_arviz_stats_khat_of_the_ratios():
    # arviz >= 1 only: its generic k̂ of a sample's right tail, fed the ratios themselves
    # rather than their logarithms through psislw, as the fit pyromem's branch must match
    if int(importlib.metadata.version("arviz").split(".")[0]) < 1:
        pytest.skip("arviz < 1 has no arviz_stats branch")
    import xarray

    torch.manual_seed(1)
    log_weights = 0.6 * torch.distributions.Exponential(1.0).sample((500, 8)).double()
    ratios = (log_weights - log_weights.max(0).values).exp().T.numpy()
    reference = xarray.DataArray(ratios, dims=("datapoint", "draw")).azstats.pareto_khat(
        sample_dims=["draw"], r_eff=1.0, tail="right"
    )
    khat = pareto_khat(log_weights)
    assert torch.allclose(khat, torch.as_tensor(reference.values), atol=1e-8)


def test_khat_checks_its_input_and_is_zero_for_an_exact_proposal():
    with pytest.raises(ValueError, match="K >= 30"):
        pareto_khat(torch.zeros(29, 2))
    with pytest.raises(ValueError, match=r"\(K, B\)"):
        pareto_khat(torch.zeros(10))
    # equal ratios have no tail: k̂ is 0 for that datapoint, and fitted for the other
    torch.manual_seed(0)
    log_weights = torch.stack([torch.full((100,), -3.0), torch.randn(100)], 1)
    khat = pareto_khat(log_weights)
    assert khat[0] == 0 and khat[1] != 0


def test_export_works_with_arviz_summary_and_plots():
    import arviz as az

    torch.manual_seed(0)
    lg = LinearGaussian()
    x = lg.sample(5)
    data = to_inference_data(lg.model, lg.weak_guide, x, num_samples=50, num_chains=2)
    groups = data.children if hasattr(data, "children") else data.groups()  # arviz >= 1 / 0.x
    for group in ("posterior", "posterior_predictive", "observed_data", "log_likelihood"):
        assert group in groups
    posterior = data["posterior"]
    assert posterior["z"].shape == (2, 50, 5, 2)
    assert data["posterior_predictive"]["x"].shape == (2, 50, 5, 3)
    assert len(posterior.attrs["pareto_k"]) == 5
    summary = az.summary(data, var_names=["z"])
    assert len(summary) == 10 and summary["mean"].notna().all()
    plot = az.plot_posterior if hasattr(az, "plot_posterior") else az.plot_dist  # 0.x / >= 1
    plot(data, var_names=["z"], coords={"datapoint": [0]})


def test_compare_guides_refuses_fewer_draws_than_psis_needs_before_any_work(capsys, tmp_path):
    from pyromem.cli import main
    from pyromem.diagnostics.psis import MIN_DRAWS
    from pyromem.experiments.configs import CompareGuidesConfig

    CompareGuidesConfig.build(num_samples=MIN_DRAWS)  # enough
    with pytest.raises(ValueError, match=f"num_samples: expected a value >= {MIN_DRAWS}, got 29"):
        CompareGuidesConfig.build(num_samples=MIN_DRAWS - 1)
    out = tmp_path / "run"
    assert main(["compare-guides", "--num-samples", "29", "--out", str(out)]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(lines) == 1 and f">= {MIN_DRAWS}" in lines[0]
    assert not out.exists()  # nothing was trained


def test_khat_is_nan_not_excellent_for_log_weights_with_no_tail_to_fit():
    # a diverged guide's log-ratios: NaN, +inf, or every weight zero (-inf). None of these
    # has a tail to fit, so k̂ is no score (NaN), never the 0 of an exact proposal
    torch.manual_seed(0)
    finite = torch.randn(100, 5).double()
    log_weights = finite.clone()
    log_weights[:, 0] = math.nan  # every draw NaN
    log_weights[7, 1] = math.nan  # one NaN draw
    log_weights[3, 2] = math.inf  # one infinite ratio
    log_weights[:, 3] = -math.inf  # every weight zero
    khat = pareto_khat(log_weights)
    assert khat[:4].isnan().all()
    # the finite column is fitted as if alone, and some zero weights are still a sample
    assert torch.equal(khat[4:], pareto_khat(finite[:, 4:]))
    partly_zero = finite[:, 4:].clone()
    partly_zero[:10] = -math.inf
    assert pareto_khat(partly_zero).isfinite().all()
    # one NaN row (one draw) spoils every datapoint's fit
    row = finite.clone()
    row[0] = math.nan
    assert pareto_khat(row).isnan().all()


def test_khat_refuses_integer_log_weights():
    with pytest.raises(ValueError, match="floating-point"):
        pareto_khat(torch.zeros(40, 2, dtype=torch.long))


def test_khat_summary_counts_an_unfitted_datapoint_as_unreliable():
    from pyromem.diagnostics.psis import khat_summary

    summary = khat_summary(torch.tensor([0.1, 0.2, math.nan, 0.9], dtype=torch.float64))
    assert math.isnan(summary["khat_mean"]) and math.isnan(summary["khat_max"])
    assert summary["khat_frac_ge_0.7"] == 0.5  # 0.9 and the NaN
    assert summary["khat_frac_nan"] == 0.25


def test_export_leaves_out_khat_of_a_point_guide_as_compare_guides_does():
    from pyromem.diagnostics import compare_guides
    from pyromem.infer import MAPRefinement

    torch.manual_seed(0)
    lg = LinearGaussian()
    x = lg.sample(2)
    point = MAPRefinement(lg.model, lg.weak_guide, num_steps=1)
    # the guide emits a Delta: a point mass, with no density to take importance ratios of
    trace = pyro.poutine.trace(point).get_trace(x)
    assert isinstance(trace.nodes["z"]["fn"].base_dist, pyro.distributions.Delta)
    data = to_inference_data(lg.model, point, x, num_samples=30)
    attrs = data["posterior"].attrs
    assert "pareto_k" not in attrs and attrs["point_mass"] == 1
    groups = data.children if hasattr(data, "children") else data.groups()
    assert "sample_stats" not in groups
    comparison = compare_guides(
        lg.model, {"weak": lg.weak_guide, "point": point}, x, num_samples=30, num_particles=2
    )
    assert "point" not in comparison.pareto_k and comparison.point == ["point"]
    # a guide with a density keeps its k̂
    density = to_inference_data(lg.model, lg.weak_guide, x, num_samples=30)
    assert len(density["posterior"].attrs["pareto_k"]) == 2
    assert density["posterior"].attrs["point_mass"] == 0
