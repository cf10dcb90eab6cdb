"""Bad input, tried as a new user would: through the CLI and the Python API, each answered
with one line that names the argument (or a correct result), before any training."""

import math
import os

import pytest
import torch

from pyromem.cli import main
from pyromem.data import load
from pyromem.memory import GaussianMixtureMemory
from pyromem.models import VAE, VMA
from pyromem.train import TrainingDiverged, fit, last_checkpoint, load_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore:.*treespec.*", "ignore:Encountered NaN")

TINY_VAE = "train vae --epochs 1 --hidden 8 --latent-dim 2 --num-samples 2 --num-particles 1"

#: (command line, a word the one error line must hold)
CLI_CASES = [
    ("train vae --steps 3", "unrecognized arguments"),
    ("train vae --epochs 0", "epochs"),
    ("train vae --epochs -5", "epochs"),
    ("train vae --lr inf", "lr"),
    ("train vae --lr nan", "lr"),
    ("train vae --lr 0", "lr"),
    ("train vae --batch-size 0", "--batch-size"),
    ("train vae --num-samples 0", "--num-samples"),
    ("train vae --num-particles 0", "--num-particles"),
    ("train vae --latent-dim 0", "--latent-dim"),
    ("train vae --hidden 0", "hidden"),
    ("train vae --size 0", "size"),
    ("train vae --seed -1", "seed"),
    ("train vae --devices 0", "devices"),
    ("train vae --accelerator tpu", "accelerator"),
    *([("train vae --accelerator gpu", "accelerator")] if not torch.cuda.is_available() else []),
    ("train vae --lr-schedule step", "--lr-schedule"),
    ("train vae --warmup-epochs -1", "--warmup-epochs"),
    ("train kpp --preset paper --dataset digits --epochs 1", "--warmup-epochs"),
    ("train vae --weight-decay -1", "--weight-decay"),
    ("train vae --gradient-clip 0", "--gradient-clip"),
    ("train vae --likelihood poisson", "likelihood"),
    ("train vae --net rnn", "net"),
    ("train vae --binarize soft", "binarize"),
    ("train vae --dataset nonesuch", "dataset"),
    ("train vae --dataset mnist", "root"),
    ("train vae --dataset mnist --root /nonexistent/data", "/nonexistent/data"),
    ("train vae --dataset npz --root /nonexistent/x.npz", "/nonexistent/x.npz"),
    ("train vae --preset nonesuch", "--preset"),
    ("train vae --config /nonexistent/run.toml", "--config"),
    ("train vae --strategy bogus", "strategy: 'bogus' is not one of Lightning's strategies"),
    ("train vae --resume", "resume: there is no checkpoint at"),
    ("train vma --steps 0", "steps"),
    ("train vma --steps -5", "steps"),
    ("train vma --memory-size 0", "--memory-size"),
    ("train vma --memory-size 100000", "--memory-size"),
    ("train vma --mode fewshot --classes 1000", "classes"),
    ("train vma --mode fewshot --memory-classes 1000", "--memory-classes"),
    ("train vma --mode recal", "mode"),
    ("train vma --address hard", "address"),
    ("train vma --num-particles 0", "--num-particles"),
    ("train vma --steps 30 --steps-per-epoch 20", "steps"),
    ("train vma --test-classes 1", "--test-classes"),
    ("train vma --mode fewshot --dataset digits", "--test-classes"),
    ("train vma --mode fewshot --dataset digits --test-classes 42", "--test-classes"),
    ("train kpp --episode-length 1", "--episode-length"),
    ("train kpp --reads 0", "reads"),
    ("train kpp --memory-shape 2 8", "--memory-shape: expected C H W, got 2 8"),
    ("train kpp --memory-shape 1 8 8 8", "--memory-shape: expected C H W"),
    ("train kpp --block-shape 4", "--block-shape: expected H W, got 4"),
    ("train kpp --encoder vit", "encoder"),
    ("train kpp --encoder-width 4", "--encoder-width"),
    ("train kpp --key-scale 0", "--key-scale"),
    ("retrieval --corruptions noise-inf", "corruptions"),
    ("retrieval --corruptions blur-3", "corruptions"),
    ("retrieval --methods XYZ", "methods"),
    ("retrieval --seeds 0", "seeds"),
    ("retrieval --memory-size 0", "--memory-size"),
    ("compare-guides --num-test 0", "--num-test"),
    ("compare-guides --model gmm", "model"),
    ("eval vae --checkpoint /nonexistent/last.ckpt", "/nonexistent/last.ckpt"),
    ("eval vae", "--checkpoint"),
]


@pytest.mark.parametrize("argv,named", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_answers_bad_input_in_one_line(capsys, tmp_path, argv, named):
    try:
        quiet = [] if argv.startswith("eval") else ["--no-progress"]
        code = main([*argv.split(), "--out", str(tmp_path / "run"), *quiet])
    except SystemExit as exit:  # argparse: unknown flags and malformed numbers
        code = exit.code
    err = capsys.readouterr().err
    assert code == 2, err[-2000:]
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and named in lines[0] and "Traceback" not in err
    # nothing was trained
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_out_that_is_a_file_or_unwritable(capsys, tmp_path):
    afile = tmp_path / "a-file"
    afile.write_text("")
    assert main([*TINY_VAE.split(), "--out", str(afile)]) == 2
    assert "--out" in capsys.readouterr().err
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert main([*TINY_VAE.split(), "--out", str(locked / "run")]) == 2
        assert "--out" in capsys.readouterr().err


def test_finished_run_is_not_overwritten_without_overwrite(capsys, tmp_path):
    argv = [*TINY_VAE.split(), "--size", "8", "--no-progress", "--out", str(tmp_path)]
    assert main(argv) == 0
    first = (tmp_path / "results.json").read_text()
    capsys.readouterr()
    assert main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "results.json").read_text() == first
    assert main([*argv, "--overwrite"]) == 0


def test_interrupted_run_is_not_restarted_without_resume_or_overwrite(capsys, tmp_path):
    argv = [*TINY_VAE.split(), "--size", "8", "--no-progress", "--out", str(tmp_path)]
    assert main(argv) == 0
    (tmp_path / "results.json").unlink()  # as a run stopped after its first epoch leaves it
    checkpoint = tmp_path / "checkpoints" / "last.ckpt"
    saved = checkpoint.read_bytes()
    capsys.readouterr()
    assert main([*argv, "--epochs", "2"]) == 2
    line = capsys.readouterr().err.strip()
    assert "interrupted run" in line and "--resume" in line and "--overwrite" in line
    assert checkpoint.read_bytes() == saved
    assert main([*argv, "--epochs", "2", "--resume"]) == 0
    assert load_checkpoint(checkpoint).epoch == 2


def test_a_run_refused_by_a_later_check_leaves_the_folder_config_as_it_was(capsys, tmp_path):
    argv = [*TINY_VAE.split(), "--size", "8", "--no-progress", "--out", str(tmp_path)]
    assert main(argv) == 0
    config = (tmp_path / "config.toml").read_text()
    capsys.readouterr()
    # refused once the data are loaded, after the config was written
    assert main([*argv, "--overwrite", "--dataset", "patches", "--binarize", "static"]) == 2
    assert "binarize" in capsys.readouterr().err
    assert (tmp_path / "config.toml").read_text() == config
    fresh = tmp_path / "fresh"
    assert main([*argv[:-1], str(fresh), "--dataset", "patches", "--binarize", "static"]) == 2
    assert not fresh.exists()  # the folder the refused run made is gone with its config
    # data that are not there: a FileNotFoundError, not a check's ValueError, leaves it too
    missing = ["--overwrite", "--dataset", "mnist", "--root", str(tmp_path / "nowhere")]
    assert main([*argv, *missing]) == 2
    assert "mnist" in capsys.readouterr().err
    assert (tmp_path / "config.toml").read_text() == config


def test_divergence_stops_with_one_line_and_keeps_the_good_checkpoint(capsys, tmp_path):
    argv = [*TINY_VAE.split(), "--size", "8", "--no-progress", "--out", str(tmp_path)]
    assert main([*argv, "--epochs", "1"]) == 0
    good = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt").state_dict
    capsys.readouterr()
    # resuming with an absurd rate: the first step diverges
    assert main([*argv, "--epochs", "3", "--lr", "1e20", "--resume"]) == 1
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if "error:" in line)
    assert "diverged" in line and "epoch 2" in line and "step" in line and "lr=1e+20" in line
    kept = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert kept.epoch == 1 and all(torch.equal(good[k], kept.state_dict[k]) for k in good)


def test_a_rate_that_blows_up_the_gradient_stops_the_run(capsys, tmp_path):
    argv = [*TINY_VAE.split(), "--size", "8", "--no-progress", "--out", str(tmp_path)]
    assert main([*argv, "--lr", "1e6"]) == 1
    line = next(line for line in capsys.readouterr().err.splitlines() if "error:" in line)
    assert "diverged at epoch 1" in line and "lr=1e+06" in line


def test_resume_checks_the_architecture_and_the_file(capsys, tmp_path):
    argv = [*TINY_VAE.split(), "--size", "8", "--no-progress", "--out", str(tmp_path)]
    assert main(argv) == 0
    capsys.readouterr()
    changed = [*argv, "--latent-dim", "3", "--resume", "--epochs", "2"]
    assert main(changed) == 2
    assert "latent_dim=2" in capsys.readouterr().err
    other = ["train", "kpp", "--size", "8", "--episode-length", "2", "--epochs", "2"]
    assert main([*other, "--resume", "--no-progress", "--out", str(tmp_path)]) == 2
    assert "model='vae'" in capsys.readouterr().err
    checkpoint = tmp_path / "checkpoints" / "last.ckpt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])  # truncated
    assert main([*argv, "--resume", "--epochs", "2"]) == 2
    assert "corrupt" in capsys.readouterr().err


def test_resume_refuses_a_pickled_payload(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "ran"),))

    data = torch.bernoulli(torch.full((8, 1, 4, 4), 0.5))
    fit(VAE((1, 4, 4), 2, hidden=(8,)), data, out_dir=tmp_path, epochs=1, progress=False)
    checkpoint = tmp_path / "checkpoints" / "last.ckpt"
    raw = torch.load(checkpoint, weights_only=True)
    raw["payload"] = Payload()
    torch.save(raw, checkpoint)
    with pytest.raises(ValueError, match="corrupt or not a pyromem checkpoint"):
        fit(
            VAE((1, 4, 4), 2, hidden=(8,)),
            data,
            out_dir=tmp_path,
            epochs=2,
            resume=True,
            progress=False,
        )
    assert not (tmp_path / "ran").exists()


def test_stale_temporaries_are_removed_and_files_follow_the_umask(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    stale = folder / ".last.ckpt.abc123.tmp"
    stale.write_bytes(b"partial")
    data = torch.bernoulli(torch.full((8, 1, 4, 4), 0.5))
    umask = os.umask(0o022)
    try:
        result = fit(
            VAE((1, 4, 4), 2, hidden=(8,)), data, out_dir=tmp_path, epochs=1, progress=False
        )
    finally:
        os.umask(umask)
    assert result.checkpoint == last_checkpoint(tmp_path) == folder / "last.ckpt"
    assert not stale.exists()
    assert (folder / "last.ckpt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "metrics.csv").stat().st_mode & 0o777 == 0o644


def test_a_write_stopped_midway_leaves_the_old_file_and_no_temporary(tmp_path):
    from pyromem.train.checkpoint import write_atomically

    path = tmp_path / "results.json"
    path.write_text("old")

    def stopped(file):
        file.write("par")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(path, stopped)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]
    umask = os.umask(0o027)
    try:
        assert write_atomically(path, lambda file: file.write("new\n")) == path
    finally:
        os.umask(umask)
    assert path.read_bytes() == b"new\n"
    assert path.stat().st_mode & 0o777 == 0o640


API_DATA = {
    "grey levels into a Bernoulli likelihood": torch.full((16, 1, 8, 8), 0.5),
    "NaN": torch.full((16, 1, 8, 8), math.nan),
    "integers": torch.zeros(16, 1, 8, 8, dtype=torch.long),
    "the wrong shape": torch.zeros(16, 1, 6, 6),
    "one bad image after the first batch": torch.cat(
        [torch.zeros(200, 1, 8, 8), torch.full((1, 1, 8, 8), 0.5)]
    ),
}


@pytest.mark.parametrize("case", sorted(API_DATA))
def test_fit_checks_the_data_once_whatever_pyros_validation(tmp_path, case):
    import pyro

    with pyro.validation_enabled(False), pytest.raises(ValueError, match="train_data"):
        fit(
            VAE((1, 8, 8), 2, hidden=(8,)),
            API_DATA[case],
            out_dir=tmp_path,
            epochs=1,
            batch_size=128,
            progress=False,
        )
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("case", sorted(API_DATA))
def test_fit_checks_the_eval_data_before_training(tmp_path, case):
    # the held-out data are scored only after the first epoch: a mismatch found then would
    # waste the epoch, and Pyro's error would carry its trace's shapes over several lines
    with pytest.raises(ValueError, match="eval_data") as raised:
        fit(
            VAE((1, 8, 8), 2, hidden=(8,)),
            torch.zeros(16, 1, 8, 8),
            eval_data=API_DATA[case],
            out_dir=tmp_path,
            epochs=1,
            batch_size=8,
            progress=False,
        )
    assert "\n" not in str(raised.value)
    assert not (tmp_path / "checkpoints").exists()


def test_fit_checks_labels_in_range(tmp_path):
    data = load("digits", "train", binarize="static")
    bad = data.subset(torch.arange(64))
    bad.labels = bad.labels.clone()
    bad.labels[5] = -3
    with pytest.raises(ValueError, match="label -3 of datapoint 5 is negative"):
        fit(VAE((1, 8, 8), 2, hidden=(8,)), bad, out_dir=tmp_path, epochs=1, progress=False)
    unlabelled = data.subset(torch.arange(64))
    unlabelled.labels = torch.full((64,), -1)
    fit(
        VAE((1, 8, 8), 2, hidden=(8,)),
        unlabelled,
        out_dir=tmp_path / "ok",
        epochs=1,
        progress=False,
    )


def test_float64_end_to_end_and_mixed_dtypes_named():
    import pyro

    x = load("digits", "test", binarize="static").images[:8]
    vae = VAE((1, 8, 8), 2, hidden=(8,))
    with pytest.raises(TypeError, match="float64.*float32"):
        pyro.infer.Trace_ELBO().loss(vae.model, vae.guide, x.double())
    assert math.isfinite(pyro.infer.Trace_ELBO().loss(vae.double().model, vae.guide, x.double()))
    memory = GaussianMixtureMemory(torch.randn(3, 4, dtype=torch.float64), scale=1.0)
    with pytest.raises(TypeError, match="float32.*float64"):
        memory.log_prob(torch.zeros(4))
    # against the closed form: one pattern at 0, unit scale, log N(0; 0, I_4)
    single = GaussianMixtureMemory(torch.zeros(1, 4, dtype=torch.float64), scale=1.0)
    closed_form = -2 * math.log(2 * math.pi)
    assert single.log_prob(torch.zeros(4, dtype=torch.float64)).item() == pytest.approx(closed_form)


def test_vma_refuses_a_nan_memory():
    vma = VMA((1, 8, 8), hidden=(8,), latent_dim=2, embedding_dim=4)
    memory = torch.zeros(4, 1, 8, 8)
    memory[1, 0, 0, 0] = math.nan
    with pytest.raises(ValueError, match="memory: expected finite values"):
        vma.address_posterior(torch.zeros(2, 1, 8, 8), memory)


def test_divergence_in_the_api_raises_training_diverged(tmp_path):
    data = torch.bernoulli(torch.full((64, 1, 4, 4), 0.5))
    with pytest.raises(TrainingDiverged, match=r"diverged at epoch \d+, step \d+"):
        fit(
            VAE((1, 4, 4), 2, hidden=(8,)),
            data,
            out_dir=tmp_path,
            epochs=2,
            lr=1e20,
            batch_size=32,
            progress=False,
        )
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()


def test_config_toml_leaves_out_what_to_do_with_the_run_folder(capsys, tmp_path):
    argv = [*TINY_VAE.split(), "--size", "8", "--no-progress", "--out", str(tmp_path)]
    assert main([*argv, "--overwrite"]) == 0
    config = (tmp_path / "config.toml").read_text()
    assert "epochs = 1" in config and "overwrite" not in config and "resume" not in config
    capsys.readouterr()
    # run again from its own config, the finished run is refused unless --overwrite is given
    rerun = ["train", "--config", str(tmp_path / "config.toml"), "--out", str(tmp_path)]
    assert main(rerun) == 2
    assert "--overwrite" in capsys.readouterr().err
