import io
import itertools
from functools import partial
from types import SimpleNamespace

import torch

from pyromem.diagnostics.log_likelihood import PASS_SCALARS
from pyromem.experiments.vae import evaluate_vae
from pyromem.models import VAE
from pyromem.train import fit
from pyromem.train.progress import EpochLines


def test_one_line_per_epoch_with_the_rows_elbos_and_an_eta(monkeypatch):
    clock = iter([100.0, 104.0, 108.0])
    monkeypatch.setattr("pyromem.train.progress.time.perf_counter", lambda: next(clock))
    stream = io.StringIO()
    lines = EpochLines(stream)
    trainer = SimpleNamespace(current_epoch=2, max_epochs=6, is_global_zero=True)
    module = SimpleNamespace(history=[])
    lines.on_train_start(trainer, module)  # resumed after 2 epochs, at t = 100 s
    module.history.append({"train_elbo_nats": -123.456, "eval_elbo_nats": -120.0})
    lines.on_train_epoch_end(trainer, module)  # epoch 3 ends at 104 s: 3 epochs left, 4 s each
    trainer.current_epoch = 3
    module.history.append({"train_elbo_nats": -110.0})
    lines.disable()
    lines.on_train_epoch_end(trainer, module)  # disabled: nothing (and no clock read)
    lines.enable()
    lines.on_train_epoch_end(trainer, module)  # epoch 4 at 108 s: 2 left, 4 s each
    assert stream.getvalue().splitlines() == [
        "epoch 3/6: train ELBO -123.46 nats, eval ELBO -120.00 nats (4.0 s, ETA 12 s)",
        "epoch 4/6: train ELBO -110.00 nats (8.0 s, ETA 8.0 s)",
    ]


def test_only_rank_zero_writes():
    stream = io.StringIO()
    lines = EpochLines(stream)
    trainer = SimpleNamespace(current_epoch=0, max_epochs=1, is_global_zero=False)
    lines.on_train_start(trainer, None)
    lines.on_train_epoch_end(trainer, SimpleNamespace(history=[{"train_elbo_nats": -1.0}]))
    assert stream.getvalue() == ""


def test_fit_prints_a_line_per_epoch_where_stderr_is_no_terminal(tmp_path, capsys):
    # pytest captures stderr, so it is no terminal: the lines replace Lightning's bar
    generator = torch.Generator().manual_seed(0)
    data = torch.bernoulli(torch.full((40, 1, 4, 4), 0.5), generator=generator)
    result = fit(VAE((1, 4, 4), 2, hidden=(8,)), data, out_dir=tmp_path, epochs=2, batch_size=20)
    err = capsys.readouterr().err
    assert "\r" not in err  # no bar's carriage returns
    lines = [line for line in err.splitlines() if line.startswith("epoch")]
    assert [line.split(":")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]
    for line, row in zip(lines, result.history, strict=True):
        assert f"train ELBO {row['train_elbo_nats']:.2f} nats" in line


def test_the_lines_name_the_datapoint_their_elbos_are_per(tmp_path, capsys):
    from pyromem.data import load
    from pyromem.experiments.kanerva import EpisodeDataset

    digits = load("digits", "train", size=4, binarize="static").subset(range(40))
    fit(VAE((1, 4, 4), 2, hidden=(8,)), digits, out_dir=tmp_path / "vae", epochs=1, batch_size=20)
    assert "nats per image (" in capsys.readouterr().err
    # K++ trains on episodes: its lines are per episode, its results per image
    lines = EpochLines(io.StringIO(), per=EpisodeDataset(digits.images, 4, 10).datapoint)
    trainer = SimpleNamespace(current_epoch=0, max_epochs=1, is_global_zero=True)
    lines.on_train_start(trainer, None)
    lines.on_train_epoch_end(trainer, SimpleNamespace(history=[{"train_elbo_nats": -400.0}]))
    assert "train ELBO -400.00 nats per episode of 4 images (" in lines.stream.getvalue()


def test_vae_evaluation_reports_each_tenth_of_its_draws(monkeypatch):
    # 300 images of 16 pixels, scored 256 then 44 at a time; a pass holds 20 480 pixels:
    # 5 draws of the 256 images, 29 of the 44
    monkeypatch.setitem(PASS_SCALARS, "cpu", 256 * 16 * 5)
    torch.manual_seed(0)
    vae = VAE((1, 4, 4), latent_dim=2, hidden=(8,))
    x = torch.bernoulli(torch.full((300, 1, 4, 4), 0.5))
    evaluate = partial(evaluate_vae, vae, x, num_samples=50, num_particles=2, device="cpu")
    clock = itertools.count()
    monkeypatch.setattr("pyromem.experiments.vae.time.perf_counter", lambda: next(clock) / 10)
    header = "vae: evaluating on 300 test images (ELBO with 2 particles, IWAE-50)"
    quiet = []
    evaluate(log=quiet.append)
    assert quiet == [header]  # a tenth of a second a pass: over before EVAL_QUIET_SECONDS
    clock = itertools.count()
    monkeypatch.setattr("pyromem.experiments.vae.time.perf_counter", lambda: 10.0 * next(clock))
    lines = []
    results = evaluate(log=lines.append)
    assert results["num_samples"] == 50 and results["num_test_images"] == 300
    # the draws done after each pass (the first is the trial draw), as a share of 300 x 50
    shares = [256 * min(1 + 5 * i, 50) / 15000 for i in range(11)]
    shares += [(12800 + 44 * min(1 + 29 * i, 50)) / 15000 for i in range(3)]
    tenths, expected = 0, []
    for share in shares:  # a line whenever the share passes a tenth
        if int(10 * share) > tenths:
            tenths = int(10 * share)
            expected.append(f"vae: IWAE-50 on 300 test images {share:4.0%}")
    assert lines[0] == header
    assert [line.split(" (")[0] for line in lines[1:]] == expected
    assert expected[-1].endswith("100%") and len(expected) == 10
    assert all(line.endswith(" s)") and ", ETA " in line for line in lines[1:])


def test_kpp_evaluation_reports_each_tenth_of_its_episodes(monkeypatch):
    from pyromem.experiments import kanerva
    from pyromem.models import KanervaPlusPlus

    torch.manual_seed(0)
    kpp = KanervaPlusPlus((1, 8, 8), latent_dim=3, memory_shape=(2, 8, 8), block_shape=(4, 4))
    episodes = torch.bernoulli(torch.full((10, 3, 1, 8, 8), 0.4))
    monkeypatch.setattr(kanerva, "EVAL_EPISODES_PER_CHUNK", 4)  # chunks of 4, 4 and 2
    clock = itertools.count()
    monkeypatch.setattr("pyromem.experiments.vae.time.perf_counter", lambda: 10.0 * next(clock))
    lines = []
    results = kanerva.evaluate_kpp_model(kpp, episodes, 3, 2, device="cpu", log=lines.append)
    assert results["num_test_episodes"] == 10
    label = "kpp: ELBO and IWAE-3 on 10 test episodes"
    assert [line.split(" (")[0] for line in lines] == [
        f"{label}  40%",
        f"{label}  80%",
        f"{label} 100%",
    ]
    assert lines[-1].endswith("ETA 0 s)")
