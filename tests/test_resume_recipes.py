"""``pyromem train vae|vma|kpp --resume``: a run stopped anywhere goes on, a resume that would
change what the run trains on is refused in one line before any work, a run interrupted and
resumed scores as an uninterrupted one, and a long VMA run shows its progress at once."""

import io
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from lightning.pytorch.callbacks import Callback

from pyromem.cli import main
from pyromem.train import load_checkpoint
from tests import training_watch

# Lightning 2.6 on torch 2.14 warns from its own internals.
pytestmark = pytest.mark.filterwarnings("ignore:.*treespec.*")

TINY_VAE = (
    "train vae --epochs 2 --num-samples 5 --num-particles 2 --hidden 8 --latent-dim 2 --size 8 "
    "--batch-size 256 --eval-particles 2 --no-progress"
).split()
TINY_VMA = (
    "train vma --steps 20 --steps-per-epoch 10 --num-samples 5 --hidden 8 --latent-dim 2 "
    "--embedding-dim 4 --memory-size 4 --batch-size 4 --num-threads 1 --eval-particles 2 "
    "--no-progress"
).split()
TINY_KPP = (
    "train kpp --epochs 1 --num-samples 2 --num-particles 2 --latent-dim 2 --embed-dim 8 "
    "--episode-length 2 --size 8 --batch-size 64 --eval-particles 1 --num-threads 1 "
    "--no-progress"
).split()


class CtrlCAt(Callback):
    """Raises ``KeyboardInterrupt``, as Ctrl-C does, at step ``step`` of epoch ``epoch``
    (both from 0)."""

    def __init__(self, epoch, step=0):
        self.epoch, self.step = epoch, step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.step):
            raise KeyboardInterrupt


def watch_fit(monkeypatch, module, counts, interrupt=None, epoch=0, step=0):
    """:func:`tests.training_watch.watch_fit`, the training in the folder ``interrupt`` given
    Ctrl-C at ``(epoch, step)``."""
    training_watch.watch_fit(monkeypatch, module, counts, interrupt, CtrlCAt(epoch, step))


def results_of(out):
    """The results of the run in ``out``, less what differs between any two runs."""
    results = json.loads((Path(out) / "results.json").read_text())
    results.pop("seconds")
    results["config"].pop("resume")
    return results


@pytest.mark.parametrize("argv", [TINY_VAE, TINY_VMA, TINY_KPP], ids=["vae", "vma", "kpp"])
def test_a_finished_run_resumed_scores_as_it_did(tmp_path, argv):
    # nothing is left to train: the evaluation must not draw from where that training would
    # have left the generators
    argv = [*argv, "--out", str(tmp_path)]
    assert main(argv) == 0
    first = results_of(tmp_path)
    assert main([*argv, "--resume"]) == 0
    assert results_of(tmp_path) == first


def test_kpp_baselines_resume_after_a_stop_before_a_baselines_first_checkpoint(
    tmp_path, capsys, monkeypatch
):
    import pyromem.experiments.kanerva as kanerva

    out = tmp_path / "run"
    argv = [*TINY_KPP, "--baselines", "--out", str(out)]
    counts = {}
    # Ctrl-C after the dense-write ablation's first step: K++ is finished, no baseline has a
    # checkpoint
    watch_fit(monkeypatch, kanerva, counts, interrupt="dense", step=1)
    assert main(argv) == 130
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith("pyromem: interrupted; the same command with --resume continues the run")
    )
    assert counts == {"run": 1, "dense": 0}
    assert not (out / "dense" / "checkpoints" / "last.ckpt").exists()
    counts.clear()
    watch_fit(monkeypatch, kanerva, counts)
    assert main([*argv, "--resume"]) == 0
    # K++ is not trained again; each baseline trains from its start
    assert counts == {"run": 0, "dense": 1, "vae": 1}
    results = results_of(out)
    assert set(results["baselines"]) == {"vae", "dense_write"}
    for name in ("dense", "vae"):
        assert load_checkpoint(out / name / "checkpoints" / "last.ckpt").epoch == 1


def test_vma_resume_with_other_data_seed_or_episodes_is_refused_before_any_work(
    tmp_path, capsys, monkeypatch
):
    import pyromem.experiments.vma as vma
    from pyromem.experiments.vma import train_vma

    out = tmp_path / "run"
    argv = [*TINY_VMA, "--out", str(out)]
    assert main(argv) == 0
    capsys.readouterr()
    config = (out / "config.toml").read_text()
    checkpoint = out / "checkpoints" / "last.ckpt"
    counts = {}
    watch_fit(monkeypatch, vma, counts)
    for flags, name, was, now in (
        (["--seed", "1"], "seed", 0, 1),
        (["--dataset", "glyphs", "--size", "8"], "dataset", "'digits'", "'glyphs'"),
        (["--binarize", "dynamic"], "binarize", "'static'", "'dynamic'"),
        (["--memory-size", "8"], "memory_size", 4, 8),
        (["--batch-size", "8"], "batch_size", 4, 8),
    ):
        assert main([*argv, "--resume", *flags]) == 2
        assert capsys.readouterr().err.strip() == (
            f"pyromem: error: --resume: the checkpoint {checkpoint} was trained with "
            f"data.{name}={was}, this run has data.{name}={now}"
        )
        # the folder's config still describes the run it holds
        assert (out / "config.toml").read_text() == config
    # with progress on, the refusal is still its one line: no progress line comes before it
    shown = [flag for flag in argv if flag != "--no-progress"]
    assert main([*shown, "--resume", "--seed", "1"]) == 2
    assert capsys.readouterr().err.strip().startswith("pyromem: error: --resume: the checkpoint")
    # VIMCO's K is its objective: another K is another training
    vimco = tmp_path / "vimco"
    options = dict(mode="recall", address="vimco", steps=10, memory_size=4, batch_size=4)
    options |= dict(hidden=(8,), latent_dim=2, embedding_dim=4, num_samples=5, progress=False)
    train_vma(out_dir=vimco, **options)
    config = (vimco / "config.toml").read_text()
    with pytest.raises(ValueError, match="data.num_particles=4, this run has data.num_particles=2"):
        train_vma(out_dir=vimco, resume=True, num_particles=2, **options)
    assert (vimco / "config.toml").read_text() == config
    # the refused resumes trained nothing
    assert counts == {"run": 0, "vimco": 1}


def test_kpp_resume_with_other_episodes_and_vae_with_another_dataset_are_refused(tmp_path, capsys):
    out = tmp_path / "kpp"
    argv = [*TINY_KPP, "--out", str(out)]
    assert main(argv) == 0
    assert main([*argv, "--resume", "--episode-length", "4"]) == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith("was trained with data.episode_length=2, this run has data.episode_length=4")
    )
    out = tmp_path / "vae"
    argv = [*TINY_VAE, "--out", str(out)]
    assert main(argv) == 0
    # glyphs resized to 8x8 have the digits' shape: the nets alone would not tell them apart
    assert main([*argv, "--resume", "--dataset", "glyphs"]) == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith("was trained with data.dataset='digits', this run has data.dataset='glyphs'")
    )


def test_a_vma_checkpoint_that_predates_its_data_entry_resumes_as_before(tmp_path):
    import torch

    out = tmp_path / "run"
    argv = [*TINY_VMA, "--lr-schedule", "constant", "--out", str(out)]
    assert main([*argv, "--steps", "10"]) == 0
    # as an earlier pyromem wrote it: no "data" entry in its config
    path = out / "checkpoints" / "last.ckpt"
    raw = torch.load(path, weights_only=True)
    del raw["pyromem"]["config"]["data"]
    torch.save(raw, path)
    assert main([*argv, "--resume"]) == 0
    saved = load_checkpoint(path)
    assert saved.epoch == 2 and "data" not in saved.config


def test_an_interrupted_vae_resumed_scores_as_an_uninterrupted_one(tmp_path, monkeypatch):
    import pyromem.experiments.vae as vae

    assert main([*TINY_VAE, "--out", str(tmp_path / "whole")]) == 0
    argv = [*TINY_VAE, "--out", str(tmp_path / "run")]
    watch_fit(monkeypatch, vae, {}, interrupt="run", epoch=1)
    assert main(argv) == 130
    monkeypatch.undo()
    assert main([*argv, "--resume"]) == 0
    whole, resumed = results_of(tmp_path / "whole"), results_of(tmp_path / "run")
    for key in ("test_elbo_nats", "test_log_likelihood_nats", "ess", "kl"):
        assert resumed[key] == whole[key]


def test_resume_goes_on_with_the_options_the_run_was_started_with(tmp_path, monkeypatch):
    import pyromem.experiments.vae as vae

    out = tmp_path / "run"
    watch_fit(monkeypatch, vae, {}, interrupt="run", epoch=1)
    assert main([*TINY_VAE, "--out", str(out)]) == 130
    monkeypatch.undo()
    # only --resume and --out: the nets, data and 2 epochs come from the run's config.toml, not
    # the defaults (20 epochs of a wider net, which the checkpoint would refuse)
    assert main(["train", "vae", "--resume", "--out", str(out), "--no-progress"]) == 0
    assert load_checkpoint(out / "checkpoints" / "last.ckpt").epoch == 2
    assert "epochs = 2" in (out / "config.toml").read_text().splitlines()
    # a flag given again wins, and is checked as before
    assert main(["train", "vae", "--resume", "--out", str(out), "--epochs", "3"]) == 0
    assert load_checkpoint(out / "checkpoints" / "last.ckpt").epoch == 3
    assert main(["train", "vae", "--resume", "--out", str(out), "--hidden", "16"]) == 2


def test_vma_says_what_it_trains_before_its_first_block_of_steps(tmp_path, capsys):
    from pyromem.experiments.vma import train_vma

    options = dict(mode="recall", steps=20, steps_per_epoch=10, memory_size=4, batch_size=4)
    options |= dict(hidden=(8,), latent_dim=2, embedding_dim=4, num_samples=5)
    options |= dict(lr_schedule="constant")
    train_vma(out_dir=tmp_path, **options)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == (
        "vma: training recall with the enum address on digits: 20 steps in 2 blocks of 10, "
        "a line after each"
    )
    assert [line.split(":")[0] for line in lines[1:3]] == ["epoch 1/2", "epoch 2/2"]
    assert lines[3] == "vma: evaluating on the test split (digits, IWAE-5)"
    train_vma(out_dir=tmp_path, resume=True, **dict(options, steps=30))
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == (
        "vma: continuing recall with the enum address on digits from step 20: 30 steps in 3 "
        "blocks of 10, a line after each"
    )
    assert lines[1].startswith("epoch 3/3: ")


def test_a_long_first_epoch_shows_its_steps_with_an_eta(monkeypatch):
    from pyromem.train.progress import EpochLines

    # read at the start, at each tenth of the first epoch (steps 10 to 90) and at its end
    clock = iter([100.0, 102.0, 106.0, 107.0, 110.0, 112.0, 114.0, 116.0, 118.0, 120.0, 130.0])
    monkeypatch.setattr("pyromem.train.progress.time.perf_counter", lambda: next(clock))
    stream = io.StringIO()
    lines = EpochLines(stream)
    trainer = SimpleNamespace(
        current_epoch=0, max_epochs=3, is_global_zero=True, num_training_batches=100
    )
    module = SimpleNamespace(history=[{"train_elbo_nats": -50.0}])
    lines.on_train_start(trainer, module)
    for step in range(100):
        lines.on_train_batch_end(trainer, module, None, None, step)
    lines.on_train_epoch_end(trainer, module)
    trainer.current_epoch = 1
    for step in range(100):  # the epoch lines give the ETA from here on (no clock read)
        lines.on_train_batch_end(trainer, module, None, None, step)
    # 2 s at step 10, under the quiet 5 s: no line; then the ETA of the run's 300 steps
    assert stream.getvalue().splitlines() == [
        "epoch 1/3: step 20/100 (6.0 s, ETA 84 s)",
        "epoch 1/3: step 30/100 (7.0 s, ETA 63 s)",
        "epoch 1/3: step 40/100 (10 s, ETA 65 s)",
        "epoch 1/3: step 50/100 (12 s, ETA 60 s)",
        "epoch 1/3: step 60/100 (14 s, ETA 56 s)",
        "epoch 1/3: step 70/100 (16 s, ETA 53 s)",
        "epoch 1/3: step 80/100 (18 s, ETA 50 s)",
        "epoch 1/3: step 90/100 (20 s, ETA 47 s)",
        "epoch 1/3: train ELBO -50.00 nats (30 s, ETA 60 s)",
    ]


def test_a_demo_resumed_continues_the_run_of_the_section_it_stopped_in(tmp_path, monkeypatch):
    from pyromem.experiments import demo, vae

    monkeypatch.setattr(demo, "DEMO_SECTIONS", ("vae",))
    epochs = vae.DEMO_SETTINGS["quick"]["epochs"]
    counts = {}
    watch_fit(monkeypatch, vae, counts, interrupt="vae", epoch=3)
    with pytest.raises(KeyboardInterrupt):
        demo.run_demo(tmp_path, quick=True, progress=False)
    assert counts == {"vae": 3}
    counts.clear()
    watch_fit(monkeypatch, vae, counts)
    results = demo.run_demo(tmp_path, quick=True, progress=False, resume=True)
    # the three epochs done are not trained again
    assert counts == {"vae": epochs - 3} and results["vae"]["epochs"] == epochs
    rows = (tmp_path / "vae" / "metrics.csv").read_text().strip().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == [str(e) for e in range(1, epochs + 1)]
