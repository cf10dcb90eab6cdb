"""PSIS k̂ of a guide's importance ratios, and the export of its draws to arviz."""

import functools

import matplotlib
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


def test_khat_checks_its_input():
    with pytest.raises(ValueError, match="K >= 5"):
        pareto_khat(torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"\(K, B\)"):
        pareto_khat(torch.zeros(10))


def test_export_works_with_arviz_summary_and_plots():
    import arviz as az

    torch.manual_seed(0)
    lg = LinearGaussian()
    x = lg.sample(5)
    data = to_inference_data(lg.model, lg.weak_guide, x, num_samples=50, num_chains=2)
    for group in ("posterior", "posterior_predictive", "observed_data", "log_likelihood"):
        assert group in data.groups() if hasattr(data, "groups") else group in data.children
    posterior = data["posterior"]
    assert posterior["z"].shape == (2, 50, 5, 2)
    assert data["posterior_predictive"]["x"].shape == (2, 50, 5, 3)
    assert len(posterior.attrs["pareto_k"]) == 5
    summary = az.summary(data, var_names=["z"])
    assert len(summary) == 10 and summary["mean"].notna().all()
    az.plot_posterior(data, var_names=["z"], coords={"datapoint": [0]})
