"""Wrong arguments to the diagnostics get a one-line error naming the argument, before any
sampling, instead of a raw KeyError, ZeroDivisionError or AttributeError, or a silent answer."""

import math
from pathlib import Path

import matplotlib
import pytest
import torch

from pyromem.diagnostics import (
    compare_guides,
    elbo_decomposition,
    log_importance_weights,
    log_likelihood,
)
from pyromem.infer import MAPRefinement
from pyromem.models import VAE
from tests.linear_gaussian import LinearGaussian

matplotlib.use("Agg")


@pytest.fixture
def lg():
    return LinearGaussian()


def no_latent(x, num_data=None):
    pass


def test_a_guide_without_the_models_latent_site_is_named_by_every_estimator(lg):
    x = lg.sample(3)
    for run in (
        lambda: log_likelihood(lg.model, no_latent, x, num_samples=10),
        lambda: elbo_decomposition(lg.model, no_latent, x),
    ):
        with pytest.raises(ValueError, match=r"no sample site for the model's latent.*'z'"):
            run()


def test_swapped_model_and_guide_are_refused():
    vae = VAE((1, 4, 4), latent_dim=2, hidden=(8,))
    x = torch.bernoulli(torch.full((3, 1, 4, 4), 0.5))
    # the guide has no observed site: scoring it as a model would report an empty likelihood
    for run in (
        lambda: elbo_decomposition(vae.guide, vae.model, x),
        lambda: log_likelihood(vae.guide, vae.model, x, num_samples=5),
    ):
        with pytest.raises(ValueError, match="no observed site.*swapped"):
            run()


@pytest.mark.parametrize(
    "num_particles, plate_nesting, message",
    [
        (2.5, None, "num_particles must be a positive int, got 2.5"),
        (0, None, "num_particles must be a positive int, got 0"),
        (3, 0, "plate_nesting must be a positive int or None, got 0"),
    ],
)
def test_log_importance_weights_refuses_a_count_it_would_round_or_fail_on(
    lg, num_particles, plate_nesting, message
):
    x = lg.sample(4)
    with pytest.raises(ValueError, match=message):
        log_importance_weights(lg.model, lg.exact_guide, x, num_particles, plate_nesting)


def test_a_module_given_for_its_model_or_guide_is_named():
    vae = VAE((1, 4, 4), latent_dim=2, hidden=(8,))
    x = torch.bernoulli(torch.full((3, 1, 4, 4), 0.5))
    expected = r"model: expected a Pyro program such as vae.model, got the module VAE itself"
    for run in (
        lambda: elbo_decomposition(vae, vae.guide, x),
        lambda: log_likelihood(vae, vae.guide, x, num_samples=2),
        lambda: MAPRefinement(vae, vae.guide),
    ):
        with pytest.raises(TypeError, match=expected):
            run()


def test_on_pass_that_cannot_be_called_is_refused_before_any_draw(lg):
    calls = []

    def counting_guide(x, num_data=None):
        calls.append(1)
        lg.weak_guide(x, num_data)

    with pytest.raises(TypeError, match="on_pass must be callable"):
        log_likelihood(lg.model, counting_guide, lg.sample(3), num_samples=10, on_pass=3)
    assert calls == []


def test_compare_guides_checks_chunk_size_and_log_evidence(lg):
    x = lg.sample(5)
    guides = {"weak": lg.weak_guide}
    with pytest.raises(ValueError, match="chunk_size must be a positive int, got 0"):
        compare_guides(lg.model, guides, x, num_samples=30, chunk_size=0)
    with pytest.raises(ValueError, match=r"log_evidence must be a tensor of shape \(5,\)"):
        compare_guides(lg.model, guides, x, num_samples=30, log_evidence=[0.0] * 5)
    with pytest.raises(ValueError, match=r"log_evidence must be a tensor of shape \(5,\)"):
        compare_guides(lg.model, guides, x, num_samples=30, log_evidence=torch.zeros(5, 1))
    evidence = lg.log_evidence(x)
    evidence[2] = math.nan
    with pytest.raises(ValueError, match="log_evidence must be finite.*1 non-finite"):
        compare_guides(lg.model, guides, x, num_samples=30, log_evidence=evidence)


@pytest.fixture
def comparison(lg):
    x = lg.sample(4)
    point = MAPRefinement(lg.model, lg.weak_guide, num_steps=1)
    guides = {"weak": lg.weak_guide, "map": point}
    return compare_guides(lg.model, guides, x, num_samples=30, num_particles=2)


def test_plot_returns_the_file_it_wrote(comparison, tmp_path, monkeypatch):
    written = comparison.plot(tmp_path / "figure_noext")
    assert written == tmp_path / "figure_noext.png" and written.is_file()
    assert written.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "figure_noext").exists()
    monkeypatch.chdir(tmp_path)
    relative = comparison.plot("new/folder/figure.png")  # a relative path's folders are made
    assert relative == Path("new/folder/figure.png") and relative.is_file()


def test_plot_does_not_make_folders_at_the_filesystem_root(comparison):
    top = Path("/pyromem-nonexistent-test-folder")
    assert not top.exists()
    with pytest.raises(ValueError, match="does not exist"):
        comparison.plot(top / "dir" / "f.png")
    assert not top.exists()


@pytest.mark.parametrize(
    "flags, name",
    [
        (["--num-test", "100000"], "--num-test: at most the 360 images"),
        (["--model", "memory-vae", "--memory-size", "100000"], "--memory-size: at most the 1437"),
    ],
)
def test_compare_guides_refuses_more_images_than_the_split_before_training(
    flags, name, capsys, tmp_path
):
    from pyromem.cli import main

    out = tmp_path / "run"
    assert main(["compare-guides", *flags, "--out", str(out), "--no-progress"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(lines) == 1 and name in lines[0]
    assert not (out / "train").exists()  # nothing was trained


@pytest.mark.parametrize(
    "estimators, options, message",
    [
        (("enum", "vimco"), {"num_particles": 1}, "num_particles: expected an int >= 2, got 1"),
        (("enum", "rws"), {"posterior_samples": 0}, "posterior_samples: expected an int >= 1"),
        (("enum", "nvil"), {"baseline_steps": -1}, "baseline_steps: expected an int >= 0"),
        (("enum", "nvil"), {"baseline_steps": 1.5}, "baseline_steps: expected an int >= 0"),
        (("enum", "vimco"), {"max_tuples": "all"}, "max_tuples: expected an int >= 1"),
    ],
)
def test_compare_estimators_checks_every_setting_before_the_first_estimator(
    estimators, options, message
):
    # before: each was read only by the estimator that needs it, after the estimators before
    # it were measured (minutes at the defaults), or not at all (baseline_steps=-1 fitted
    # nothing, silently)
    from pyromem.diagnostics.compare_estimators import compare_estimators
    from pyromem.models import VMA

    torch.manual_seed(0)
    vma = VMA((1, 4, 4), latent_dim=2, embedding_dim=4, hidden=(8,))
    memory = torch.bernoulli(torch.full((3, 1, 4, 4), 0.5))
    small = {"gradient_draws": 2, "mean_draws": 2, "reference_draws": 2, "step_repeats": 2}
    measured = []
    with pytest.raises(ValueError, match=message):
        compare_estimators(
            vma, memory[:2], memory, estimators, progress=measured.append, **small, **options
        )
    assert measured == []  # no estimator was measured
