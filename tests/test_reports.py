"""The text the comparison commands and the demo write around their tables: settings, units,
which guide or estimator wins and whether the run resolves it."""

import json
from types import SimpleNamespace

import torch

from pyromem.diagnostics.compare_guides import GuideComparison
from pyromem.experiments.demo import QUICK_NOTE, at_a_glance, header
from pyromem.experiments.estimator_comparison import setting_caption as estimator_setting
from pyromem.experiments.estimator_comparison import verdict
from pyromem.experiments.guide_comparison import rank_guides, ranking_caption


def comparison(elbos, point=()):
    elbo = {name: torch.tensor(values) for name, values in elbos.items()}
    first = next(iter(elbo.values()))
    return GuideComparison(
        elbo=elbo,
        kl={name: {} for name in elbo},
        iwae={},
        ess={},
        pareto_k={},
        log_evidence=first + 1.0,
        log_evidence_source="exact",
        amortized=next(iter(elbo)),
        point=list(point),
    )


def test_guide_ranking_says_whether_the_leader_is_resolved():
    amortized = [-10.0, -12.0, -11.0, -13.0]
    refined = [a + 1.0 + 0.01 * i for i, a in enumerate(amortized)]  # far beyond its s.e.
    close = [r - 0.01 * (-1) ** i for i, r in enumerate(refined)]  # within its s.e.
    result = comparison(
        {"amortized": amortized, "refined": refined, "close": close, "map": [0.0] * 4},
        point=["map"],
    )
    ranking = rank_guides(result)
    assert ranking["leader"] == "refined" and "map" not in ranking["order"]
    assert not ranking["differences"]["close"]["resolved"]
    assert ranking["differences"]["amortized"]["resolved"]
    text = ranking_caption(ranking)
    assert "does not rank it above the next" in text
    assert "amortized by +1.02 ± 0.01 (resolved)" in text
    assert "close by" in text and "not resolved" in text
    alone = ranking_caption(rank_guides(comparison({"amortized": amortized})))
    assert alone == "Highest ELBO: amortized, the only guide with a density."


def test_compare_guides_table_states_setting_ranking_and_figure(tmp_path, capsys):
    from pyromem.cli import main

    argv = "compare-guides --epochs 1 --steps 2 --iterative-steps 2 --num-test 4 --num-samples 30"
    out = tmp_path / "guides"
    assert main([*argv.split(), "--hidden", "16", "--no-progress", "--out", str(out)]) == 0
    table = (out / "table.md").read_text()
    assert "trained for 1 epoch on the `digits` train split (8×8, static binarisation)" in table
    assert "the first 4 of the 360 images of the test split" in table
    assert "Highest" in table and "± " in table
    assert "`compare_guides.png`: left, log p(x) − ELBO" in table
    assert "a hollow square is the IWAE-K that stands for log p(x), at 0 by construction" in table
    assert (out / "compare_guides.png").is_file()
    results = json.loads((out / "results.json").read_text())
    assert results["ranking"]["leader"] in results["guides"]
    assert results["num_test_images"] == 4 and results["image_shape"] == [1, 8, 8]
    capsys.readouterr()


SETTINGS = {
    "dataset": "glyphs",
    "image_size": 16,
    "binarization": "static",
    "classes": 4,
    "shots": 2,
    "train_steps": 300,
    "point_test_nll_nats": 63.7,
    "nll_steps": 0,
    "test_nll": "-IWAE-200 on 4-class test episodes",
    "seed": 0,
    "memory_size": 8,
    "batch": 16,
    "num_particles": 4,
    "gradient_draws": 100,
    "mean_draws": 1000,
    "reference_draws": 1000,
    "temperature": 0.5,
    "parameters": "the query net h^q of q(a|x)",
}


def row(name, bias, noise, std, nll=None):
    return {
        "estimator": name,
        "relative_bias": bias,
        "relative_bias_noise": noise,
        "relative_std": std,
        "test_nll_nats": nll,
    }


def test_estimator_caption_explains_the_columns_and_the_verdict():
    caption = estimator_setting(SETTINGS, SimpleNamespace(step_repeats=5))
    for words in (
        "|M| = 8 slots, 16 queries, K = 4",
        "‖E ĝ − g*‖ / ‖g*‖",
        "not told from 0",
        "the median of 5 timed training steps",
        "the figure's whiskers: the fastest to the slowest",
        "test NLL: not run (`--nll-steps N`",
        "unitless ratios",
    ):
        assert words in caption, words
    trained = estimator_setting({**SETTINGS, "nll_steps": 500}, SimpleNamespace(step_repeats=5))
    assert "after 500 training steps" in trained and "no error bar" in trained
    rows = [
        row("enum", 0.01, 0.013, 0.15, 58.8),
        row("rws", 1.21, 0.039, 0.88, 56.8),
        row("vimco", 0.057, 0.063, 1.41, 56.6),
        {**row("soft", None, None, None, 67.8)},
    ]
    text = verdict(rows, SETTINGS)
    assert "Bias resolved (beyond 2 × its MC noise): rws (1.21, 2 × noise = 0.078)" in text
    assert "not told from 0: enum, vimco." in text
    assert "Least noisy gradient: enum" in text and "7%" in text
    assert "whiskers: the fastest and slowest timed step" in text
    assert "Lowest test NLL: vimco (56.60 nats)" in text and "one training run" in text


def test_demo_header_states_the_mode_and_a_table_of_headline_numbers():
    vae = {
        "test_log_likelihood_nats": -98.46,
        "test_elbo_nats": -99.76,
        "num_samples": 1000,
        "num_particles": 10,
        "dataset": "digits",
        "num_test_images": 360,
        "config": {"size": 16},
        "binarization": {"train": "dynamic", "test": "static"},
    }
    kpp = {
        "test_conditional_log_likelihood_nats": -97.9,
        "test_conditional_elbo_nats": -99.3,
        "kl_key": 0.01,
        "num_samples": 100,
        "num_particles": 10,
        "dataset": "digits",
        "num_test_episodes": 88,
        "episode_length": 4,
        "binarization": {"test": "static"},
        "denoising": {"speckle": {"mse_noisy": 0.035, "mse_after_10_reads": 0.18}},
        "read_class_agreement": 0.7125,
    }
    results = {"vae": vae, "kpp": kpp, "vma": {"broken": {"no": "fields"}}, "other": {}}
    rows = at_a_glance(results)
    assert [r[0] for r in rows] == ["VAE", "Kanerva++"]  # fields missing: left out
    assert rows[0][1] == "log p(x) ≥ -98.46 nats (ELBO -99.76)"
    assert rows[0][3] == "`digits` test split, 360 images, 16×16, static binarisation"
    assert "10 reads raise the MSE of speckle images: they do not denoise" in rows[1][1]
    assert "; 71 % of random-key reads of the memory's class;" in rows[1][1]
    quick = "\n".join(header(True, 0, 1, 41.0, results))
    full = "\n".join(header(False, 0, 1, 154.0, results))
    assert QUICK_NOTE in quick and QUICK_NOTE not in full
    assert "Mode: full; seed 0; 1 torch thread; 154 s in all." in full
    assert "| VAE | log p(x) ≥ -98.46 nats" in full and "## At a glance" in full
    assert "## At a glance" not in "\n".join(header(False, 0, 2, 1.0, {}))
