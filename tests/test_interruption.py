"""A command stopped by Ctrl-C loses no finished work: the message says how to go on, and the
same command with ``--resume`` (``resume=True`` for the demo) continues, without training or
measuring again what the interrupted run finished."""

import json
import os
import signal
from pathlib import Path

import pytest
from lightning.pytorch.callbacks import Callback

from pyromem.cli import main
from pyromem.train import TrainingInterrupted
from tests import training_watch

# Lightning 2.6 on torch 2.14 warns from its own internals.
pytestmark = pytest.mark.filterwarnings("ignore:.*treespec.*")

ESTIMATORS = (
    "compare-estimators --dataset digits --test-classes 5 6 7 8 9 --size 8 --estimators enum "
    "vimco --train-steps 10 --gradient-draws 2 --mean-draws 2 --reference-draws 2 "
    "--step-repeats 2 --num-samples 4 --hidden 8 --latent-dim 2 --embedding-dim 4 "
    "--nll-steps 200 --no-progress"
).split()
GUIDES = (
    "compare-guides --epochs 2 --steps 2 --iterative-steps 4 --num-test 4 --num-samples 30 "
    "--num-particles 2 --hidden 16 --latent-dim 2 --no-progress"
).split()
TINY_VAE = "train vae --epochs 1 --num-samples 5 --hidden 8 --latent-dim 2 --size 8 --no-progress"


class CtrlCAt(Callback):
    """Delivers SIGINT to this process at the first step of ``epoch`` (from 0), as Ctrl-C in a
    terminal does."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if (trainer.current_epoch, batch_idx) == (self.epoch, 0):
            os.kill(os.getpid(), signal.SIGINT)


def watch_fit(monkeypatch, module, counts, interrupt=None):
    """:func:`tests.training_watch.watch_fit`, the training in the folder ``interrupt`` given
    Ctrl-C in its second epoch."""
    training_watch.watch_fit(monkeypatch, module, counts, interrupt, CtrlCAt(1))


def test_compare_estimators_resumes_without_training_or_measuring_again(
    tmp_path, capsys, monkeypatch
):
    import pyromem.experiments.estimator_comparison as recipe
    import pyromem.experiments.vma as vma

    out = tmp_path / "run"
    argv = [*ESTIMATORS, "--out", str(out)]
    counts = {}
    watch_fit(monkeypatch, vma, counts, interrupt="nll-vimco")
    assert main(argv) == 130
    checkpoint = out / "nll-vimco" / "checkpoints" / "last.ckpt"
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith(
            f"interrupted in epoch 2 of 2; {checkpoint} holds the 1 epochs completed; the same "
            "command with --resume continues the run"
        )
    )
    assert counts == {"point": 1, "nll-enum": 2, "nll-vimco": 1}
    # the comparison was kept as soon as it was measured
    measured = json.loads((out / "estimators.json").read_text())
    assert [row["estimator"] for row in measured["rows"]] == ["enum", "vimco"]
    # a stage is continued only where its checkpoint is of this setting (a run that
    # --overwrite replaced leaves those of its stages until they train again)
    from pyromem.experiments.estimator_comparison import _trained_with

    point = out / "point" / "checkpoints" / "last.ckpt"
    options = {"mode": "fewshot", "dataset": "digits", "test_classes": (5, 6, 7, 8, 9)}
    options |= {"size": 8, "classes": 4, "shots": 2, "queries": 4, "memory_classes": (4,)}
    options |= {"hidden": (8,), "latent_dim": 2, "embedding_dim": 4, "lr": 3e-3}
    options |= {"num_samples": 4, "num_threads": 1, "overwrite": True, "address": "enum"}
    options |= {"steps": 10, "steps_per_epoch": 10, "progress": False}
    assert _trained_with(point, options)
    assert _trained_with(point, dict(options, progress=True, num_threads=2))
    assert not _trained_with(point, dict(options, seed=1))
    assert not _trained_with(point, dict(options, lr=1e-3))
    assert not _trained_with(out / "nowhere" / "last.ckpt", options)

    # the same command is refused, and so is --resume with another setting, before any work
    assert main(argv) == 2
    assert "pass --resume to continue it" in capsys.readouterr().err
    config = (out / "config.toml").read_text()
    assert main([*argv, "--resume", "--seed", "1"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"pyromem: error: --resume: the run in {out} has seed=0, this one seed=1; give its "
        "options to continue it, or pass --overwrite to start again"
    )
    assert (out / "config.toml").read_text() == config

    # --resume trains only the epoch left, and measures or scores nothing again
    def measure(*args, **kwargs):
        raise AssertionError("the comparison was measured again")

    monkeypatch.setattr(recipe, "compare_estimators", measure)
    scored = {
        name: json.loads((out / name / "results.json").read_text())["test_nll_nats"]
        for name in ("point", "nll-enum")
    }
    counts.clear()
    watch_fit(monkeypatch, vma, counts)
    assert main([*argv, "--resume"]) == 0
    assert counts == {"nll-vimco": 1}
    results = json.loads((out / "results.json").read_text())
    for row, before in zip(results["rows"], measured["rows"], strict=True):
        assert {k: v for k, v in row.items() if k != "test_nll_nats"} == before
        assert row["test_nll_nats"] > 0
    assert results["rows"][0]["test_nll_nats"] == scored["nll-enum"]
    assert results["settings"]["point_test_nll_nats"] == scored["point"]
    assert "test NLL: -IWAE-4" in (out / "table.md").read_text()


def test_compare_guides_resumes_both_trainings_after_ctrl_c_in_the_comparison(
    tmp_path, capsys, monkeypatch
):
    import pyromem.experiments.guide_comparison as recipe

    out = tmp_path / "run"
    argv = [*GUIDES, "--out", str(out)]

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    real_compare = recipe.compare_guides
    monkeypatch.setattr(recipe, "compare_guides", stopped)
    counts = {}
    watch_fit(monkeypatch, recipe, counts)
    assert main(argv) == 130
    # stopped outside any training: the message still says how to go on
    assert capsys.readouterr().err.strip() == (
        "pyromem: interrupted; the same command with --resume continues the run"
    )
    assert counts == {"train": 2, "iterative": 1}
    assert main(argv) == 2
    assert "pass --resume to continue it" in capsys.readouterr().err
    # another seed is another run: the engine refuses to continue this one with it
    assert main([*argv, "--resume", "--seed", "1"]) == 2
    assert "data.seed=0, this run has data.seed=1" in capsys.readouterr().err
    monkeypatch.setattr(recipe, "compare_guides", real_compare)
    counts.clear()
    assert main([*argv, "--resume"]) == 0
    assert counts == {"train": 0, "iterative": 0}
    results = json.loads((out / "results.json").read_text())
    assert results["epochs"] == 2 and results["ranking"]["order"]


def test_compare_guides_resume_with_nothing_to_continue_is_refused(tmp_path, capsys):
    assert main([*GUIDES, "--out", str(tmp_path), "--resume"]) == 2
    checkpoint = tmp_path / "train" / "checkpoints" / "last.ckpt"
    assert capsys.readouterr().err.strip() == (
        f"pyromem: error: --resume: there is no checkpoint at {checkpoint} to continue"
    )
    assert not (tmp_path / "config.toml").exists()


def test_ctrl_c_after_the_training_says_how_to_go_on(tmp_path, capsys, monkeypatch):
    argv = [*TINY_VAE.split(), "--out", str(tmp_path)]

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("pyromem.experiments.vae.evaluate_vae", stopped)
    assert main(argv) == 130
    assert capsys.readouterr().err.strip() == (
        "pyromem: interrupted; the same command with --resume continues the run"
    )
    monkeypatch.undo()
    assert main([*argv, "--resume"]) == 0


def fake_sections(monkeypatch, calls, stop=None):
    """Sections of the demo that record their calls in ``calls``; ``stop`` raises Ctrl-C."""
    import types

    import pyromem.experiments.demo as demo

    def section(name):
        def demo_section(out_dir, quick, seed=0, progress=True, resume=False):
            calls.append(f"{name} (resumed)" if resume else name)
            if name == stop:
                raise TrainingInterrupted(3, 20, 2, Path(out_dir) / name / "last.ckpt")
            (Path(out_dir) / name).mkdir(parents=True, exist_ok=True)
            return f"## {name}", {"quick": quick, "seed": seed}

        return types.SimpleNamespace(demo_section=demo_section)

    recipes = {name: section(name) for name in demo.DEMO_SECTIONS}
    monkeypatch.setattr(
        demo, "recipe", lambda name: types.SimpleNamespace(load=lambda: recipes[name])
    )


def test_the_demo_resumes_after_its_finished_sections(tmp_path, monkeypatch, capsys):
    from pyromem.experiments.demo import DEMO_SECTIONS, run_demo

    first, *_, last = DEMO_SECTIONS
    calls = []
    fake_sections(monkeypatch, calls, stop=last)
    with pytest.raises(KeyboardInterrupt):
        run_demo(tmp_path, quick=True, progress=False)
    assert calls == list(DEMO_SECTIONS)
    # another setting is refused before any work
    with pytest.raises(ValueError, match="holds a quick demo of seed 0, this run is a full demo"):
        run_demo(tmp_path, quick=False, progress=False, resume=True)
    with pytest.raises(
        ValueError, match="holds a quick demo of seed 0, this run is a quick demo of seed 1"
    ):
        run_demo(tmp_path, quick=True, seed=1, progress=False, resume=True)
    calls.clear()
    fake_sections(monkeypatch, calls)
    results = run_demo(tmp_path, quick=True, progress=False, resume=True)
    # the section interrupted continues its runs; the finished ones are kept
    assert calls == [f"{last} (resumed)"]
    assert all(results[name] == {"quick": True, "seed": 0} for name in DEMO_SECTIONS)
    report = (tmp_path / "report.md").read_text()
    assert all(f"## {name}" in report for name in DEMO_SECTIONS)
    # a demo started again (no resume) replaces the record, and says so: nothing of it is kept
    calls.clear()
    fake_sections(monkeypatch, calls, stop=first)
    with pytest.raises(KeyboardInterrupt):
        run_demo(tmp_path, quick=True)
    assert f"demo: replacing the demo in {tmp_path}" in capsys.readouterr().err
    # resumed, only the section it was interrupted in continues its runs: the later sections'
    # folders hold the replaced demo's
    calls.clear()
    fake_sections(monkeypatch, calls)
    run_demo(tmp_path, quick=True, progress=False, resume=True)
    assert calls == [f"{first} (resumed)", *DEMO_SECTIONS[1:]]
    (tmp_path / "sections.json").unlink()
    with pytest.raises(ValueError, match="resume: there is no demo in .* to continue"):
        run_demo(tmp_path, quick=True, progress=False, resume=True)


def test_ctrl_c_in_the_demo_says_what_the_same_command_does(tmp_path, capsys, monkeypatch):
    from pyromem.experiments.demo import DEMO_SECTIONS

    first, second, *_ = DEMO_SECTIONS
    command = ["demo", "--quick", "--no-progress", "--out", str(tmp_path)]
    calls = []
    go_on = (
        "pyromem: interrupted; the same command with --resume keeps the finished sections and "
        "continues the one interrupted"
    )
    # in the first section nothing is finished, but its runs can go on
    fake_sections(monkeypatch, calls, stop=first)
    assert main(command) == 130
    assert capsys.readouterr().err.strip() == go_on
    # later, the finished sections are kept by --resume, which runs only the others
    fake_sections(monkeypatch, calls, stop=second)
    assert main(command) == 130
    assert capsys.readouterr().err.strip() == go_on
    calls.clear()
    fake_sections(monkeypatch, calls)
    assert main(command + ["--resume"]) == 0
    assert calls == [f"{second} (resumed)", *DEMO_SECTIONS[2:]]
