import math

import pyro
import pytest
import torch

from pyromem.diagnostics.compare_estimators import (
    EstimatorComparison,
    compare_estimators,
    exact_bound,
)
from pyromem.infer import VIMCO
from pyromem.infer.address_estimators import NVIL, ReweightedWakeSleep, address_objective
from pyromem.models import VMA

SHAPE = (1, 4, 4)


def tiny(address="enum"):
    torch.manual_seed(0)
    return VMA(SHAPE, latent_dim=2, embedding_dim=4, hidden=(8,), address=address)


def images(n, seed=1):
    return torch.bernoulli(
        torch.full((n,) + SHAPE, 0.5), generator=torch.Generator().manual_seed(seed)
    )


def test_rws_equals_pyros_for_one_datapoint_and_scales_outside():
    vma, x, memory = tiny("rws"), images(1), images(3, seed=2)
    ours, pyros = (
        ReweightedWakeSleep(3, max_plate_nesting=1),
        pyro.infer.ReweightedWakeSleep(3, max_plate_nesting=1),
    )
    results = []
    for elbo in (ours, pyros):
        pyro.set_rng_seed(4)
        theta, phi = elbo._loss(vma.model, vma.guide, (x,), {"memory": memory})
        vma.zero_grad()
        (theta + phi).backward()
        results.append((theta.item(), phi.item(), [p.grad.clone() for p in vma.parameters()]))
    assert results[0][:2] == pytest.approx(results[1][:2], rel=1e-5)
    for a, b in zip(results[0][2], results[1][2], strict=True):
        torch.testing.assert_close(a, b)
    # B = 2 of N = 10: the subsampling scale multiplies each datapoint's normalised bound
    x = images(2)
    losses = []
    for num_data in (None, 10):
        pyro.set_rng_seed(5)
        losses.append(ours.differentiable_loss(vma.model, vma.guide, x, memory, num_data).item())
    assert losses[1] == pytest.approx(5 * losses[0], rel=1e-5)
    with pytest.raises(ValueError, match="K >= 2"):
        ReweightedWakeSleep(1)


def test_nvil_is_tracegraph_elbo_made_differentiable():
    vma, x, memory = tiny("nvil"), images(3), images(3, seed=2)
    grads = []
    for step in ("ours", "pyro's"):
        vma.zero_grad()
        pyro.set_rng_seed(6)
        if step == "ours":
            loss = NVIL(max_plate_nesting=1).differentiable_loss(vma.model, vma.guide, x, memory)
            loss.backward()
            value = loss.item()
        else:
            value = pyro.infer.TraceGraph_ELBO(max_plate_nesting=1).loss_and_grads(
                vma.model, vma.guide, x, memory
            )
        grads.append((value, [p.grad.clone() for p in vma.parameters() if p.grad is not None]))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-5)
    assert len(grads[0][1]) == len(grads[1][1])
    for a, b in zip(grads[0][1], grads[1][1], strict=True):
        torch.testing.assert_close(a, b)
    # the baseline b(x) is trained: its parameters get a gradient
    assert all(p.grad is not None for p in vma.baseline.parameters())


def test_exact_bound_is_the_mean_of_vimco_and_of_enumeration():
    vma, x, memory = tiny("vimco"), images(2), images(3, seed=2)
    copies, chunks = 800, 8
    xs = x.repeat(copies, 1, 1, 1)
    pyro.set_rng_seed(7)
    with torch.no_grad():
        for k, elbo in ((1, pyro.infer.TraceEnum_ELBO(max_plate_nesting=1)), (2, VIMCO(2))):
            model = tiny("enum" if k == 1 else "vimco")
            parts = [xs[i::chunks] for i in range(chunks)]
            exact = torch.stack([exact_bound(model, part, memory, k) for part in parts])
            sampled = torch.tensor([-elbo.loss(model.model, model.guide, p, memory) for p in parts])
            # the means of independent sums, within 5 standard errors
            error = ((exact.var() + sampled.var()) / chunks).sqrt()
            assert abs(exact.mean() - sampled.mean()) < 5 * error
    with pytest.raises(ValueError, match="max_tuples"):
        exact_bound(vma, x, memory, 3, max_tuples=26)


def test_unbiased_estimators_are_unbiased_and_the_table_is_written(tmp_path):
    vma, x, memory = tiny(), images(3), images(3, seed=2)
    pyro.set_rng_seed(8)
    comparison = compare_estimators(
        vma,
        x,
        memory,
        estimators=("enum", "vimco", "gumbel"),
        num_particles=2,
        gradient_draws=10,
        mean_draws=300,
        reference_draws=300,
        step_repeats=2,
    )
    rows = {row["estimator"]: row for row in comparison.rows}
    assert list(rows) == ["enum", "vimco", "gumbel"]
    # enumeration and VIMCO estimate their objectives' gradients without bias: within
    # three times the Monte Carlo error of the comparison
    for name in ("enum", "vimco"):
        assert rows[name]["relative_bias"] < 3 * rows[name]["relative_bias_noise"]
    # one enumerated gradient varies less than one VIMCO gradient (z noise only)
    assert rows["enum"]["relative_std"] < rows["vimco"]["relative_std"]
    assert all(row["step_ms"] > 0 for row in comparison.rows)
    for row in comparison.rows:  # the timed steps kept, their median the step time
        assert len(row["step_ms_repeats"]) == 2
        assert row["step_ms"] == pytest.approx(sum(row["step_ms_repeats"]) / 2)
    table = comparison.table()
    assert table.count("\n") == 4 and "| vimco | IWAE-K |" in table
    assert comparison.plot(tmp_path / "e.png").stat().st_size > 0
    assert comparison.to_json(tmp_path / "e.json").read_text().startswith("{")
    assert not math.isnan(rows["gumbel"]["relative_bias"])


def test_bad_input():
    vma, x, memory = tiny(), images(2), images(3, seed=2)
    with pytest.raises(ValueError, match="estimators: expected names of"):
        compare_estimators(vma, x, memory, estimators=("reinforce",))
    with pytest.raises(ValueError, match="gradient_draws: expected an int >= 2"):
        compare_estimators(vma, x, memory, gradient_draws=1)
    with pytest.raises(ValueError, match="address: expected one of"):
        address_objective("reinforce")


def test_command_line_runs_on_a_dataset_of_shared_classes_given_test_classes(tmp_path, capsys):
    from pyromem.cli import main

    tiny_run = "--size 8 --train-steps 10 --gradient-draws 2 --mean-draws 2 --reference-draws 2"
    tiny_run += " --posterior-samples 4 --baseline-steps 1 --step-repeats 2 --max-tuples 100"
    argv = ["compare-estimators", "--dataset", "digits", *tiny_run.split(), "--no-progress"]
    # digits has the same classes in train and test: the episodes need some held out
    assert main([*argv, "--out", str(tmp_path / "shared")]) == 2
    assert "--test-classes" in capsys.readouterr().err
    out = tmp_path / "held-out"
    assert main([*argv, "--test-classes", "5", "6", "7", "8", "9", "--out", str(out)]) == 0
    assert "test_classes = [5, 6, 7, 8, 9]" in (out / "config.toml").read_text()
    # the table says its setting, what each column is, and what the run resolves
    table = (out / "table.md").read_text()
    assert "Setting: one parameter point, a VMA trained 10 steps" in table
    assert "`digits` (8×8, static binarisation" in table
    assert "the median of 2 timed training steps" in table
    assert "Bias resolved (beyond 2 × its MC noise)" in table
    assert "Least noisy gradient:" in table
    assert main(["compare-estimators", "--estimators", "vimco", "vimco"]) == 2
    assert "given twice" in capsys.readouterr().err


def test_the_figure_states_its_setting_keeps_its_legend_off_the_points_and_shows_the_spread(
    tmp_path,
):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import LineCollection
    from matplotlib.ticker import NullFormatter

    def row(name, bias, noise, std, times):
        median = sorted(times)[len(times) // 2] if times else 4.0
        return {
            "estimator": name,
            "objective": "ELBO",
            "relative_bias": bias,
            "relative_bias_noise": noise,
            "relative_std": std,
            "step_ms": median,
            **({"step_ms_repeats": times} if times else {}),
        }

    rows = [
        row("enum", 0.04, 0.03, 0.16, [6.0, 6.5, 8.0]),
        row("rws", 0.89, 0.065, 0.46, [5.0, 5.6, 5.7]),
        row("soft", None, None, None, None),  # timed without its repeats: a bar, no whisker
    ]
    settings = {"memory_size": 8, "batch": 16, "num_particles": 4, "temperature": 0.5}
    settings |= {"dataset": "glyphs", "image_size": 16, "classes": 4, "shots": 2}
    settings |= {"train_steps": 50, "mean_draws": 50, "reference_draws": 50, "seed": 0}
    comparison = EstimatorComparison(rows, settings)
    figure = comparison.figure()
    title = "\n".join(text.get_text() for text in figure.texts)
    assert "VMA trained 50 steps" in title and "`glyphs` (16×16)" in title
    assert "4-class × 2-shot" in title and "|M| = 8 slots, 16 queries, K = 4, τ = 0.5" in title
    bias, std, steps = figure.axes
    # the legend lies below the bias panel, clear of every point in it
    FigureCanvasAgg(figure)
    figure.tight_layout()
    renderer = figure.canvas.get_renderer()
    legend = bias.get_legend()
    assert [t.get_text() for t in legend.get_texts()][2] == "MC noise"
    assert legend.get_window_extent(renderer).y1 <= bias.get_window_extent(renderer).y0
    # whiskers from the fastest to the slowest timed step, where the repeats were kept
    segments = [
        s for c in steps.collections if isinstance(c, LineCollection) for s in c.get_segments()
    ]
    spans = sorted((float(s[:, 1].min()), float(s[:, 1].max())) for s in segments)
    assert spans == [(5.0, 5.7), (6.0, 8.0)]
    assert "whisker: fastest to slowest" in steps.get_title()
    # log axes labelled at their major ticks only, in plain numbers
    for ax in (bias, std):
        assert isinstance(ax.yaxis.get_minor_formatter(), NullFormatter)
        labels = [label.get_text() for label in ax.get_yticklabels() if label.get_text()]
        assert labels and all("\\times" not in label and "^" not in label for label in labels)
    assert comparison.plot(tmp_path / "e.png", title="mine").is_file()
