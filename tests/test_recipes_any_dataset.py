"""Every family on any dataset through the engine, from the CLI: torchvision-format
fixtures, --config round trips, presets, bad values, kill-and-resume and DDP."""

import json
import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torchvision

from pyromem.cli import main
from pyromem.experiments.configs import RetrievalConfig
from pyromem.nets import GaussianLikelihood
from pyromem.train import load_checkpoint
from tests.test_data_torchvision import _write_idx, _write_omniglot

pytestmark = pytest.mark.filterwarnings("ignore:.*treespec.*")

VMA_TINY = "--hidden 16 --latent-dim 2 --embedding-dim 8 --num-samples 5 --no-progress".split()


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory):
    """MNIST in torchvision's idx files: 200 train and 100 test images, 10 balanced classes."""
    root = tmp_path_factory.mktemp("mnist")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 200), ("t10k", 100)):
        labels = np.arange(n) % 10
        # each class a blob at its own place, so that the classes differ
        images = rng.integers(0, 60, size=(n, 28, 28))
        for i, label in enumerate(labels):
            images[i, 2 * label : 2 * label + 8, 4:24] = 255
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return str(root)


def run_json(capsys, argv):
    assert main([*argv, "--json"]) == 0, capsys.readouterr().err[-2000:]
    return json.loads(capsys.readouterr().out)


FAMILIES = {
    "vae": "train vae --size 8 --epochs 1 --hidden 16 --latent-dim 2 --num-samples 5"
    " --num-particles 2 --no-progress",
    "vma-recall": "train vma --size 8 --steps 4 --memory-size 4 " + " ".join(VMA_TINY),
    "vma-fewshot": "train vma --mode fewshot --size 8 --test-classes 5 6 7 8 9 --classes 2"
    " --shots 2 --queries 2 --memory-classes 1 2 --steps 4 " + " ".join(VMA_TINY),
    "kpp": "train kpp --size 8 --episode-length 2 --epochs 1 --latent-dim 2 --num-samples 2"
    " --num-particles 2 --batch-size 8 --same-class --no-progress",
    "retrieval": "retrieval --size 8 --methods GMM VAE-GMM --corruptions clean noise-0.6"
    " --memory-size 5 --seeds 1 --selection-seeds 1 --vae-epochs 1 --no-progress",
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_trains_on_a_torchvision_fixture(capsys, tmp_path, mnist_root, family):
    argv = FAMILIES[family].split() + ["--dataset", "mnist", "--root", mnist_root]
    results = run_json(capsys, [*argv, "--out", str(tmp_path)])
    saved = (tmp_path / "config.toml").read_text()
    assert 'dataset = "mnist"' in saved and f"root = {json.dumps(mnist_root)}" in saved
    if family == "retrieval":
        assert set(results["results"]) == {"GMM", "VAE-GMM"} and results["dataset"] == "mnist"
        return
    checkpoint = load_checkpoint(results["checkpoint"])
    assert checkpoint.epoch >= 1 and (tmp_path / "metrics.csv").is_file()
    # grey-scale images: binarised by default, as each recipe's option says
    binarized = results["binarization"]
    if family.startswith("vma"):
        assert binarized == "static"
    else:
        assert binarized == {"train": "dynamic", "test": "static"}
        assert checkpoint.config["data"]["binarize"] == "dynamic"
    if family == "vma-fewshot":
        # trained on classes 0-4, tested on 5-9 (the sweep draws test-split classes)
        assert [row["classes"] for row in results["memory_size_sweep"]] == [1, 2]


@pytest.mark.parametrize("family", ["vae", "vma-recall", "kpp"])
def test_colour_images_train_unbinarised_by_default(capsys, tmp_path, family):
    rng = np.random.default_rng(0)
    images = rng.random((40, 3, 8, 8), dtype=np.float32)
    np.savez(tmp_path / "rgb.npz", images=images, labels=np.arange(40) % 4)
    argv = FAMILIES[family].replace("--size 8 ", "").split()
    argv += ["--dataset", "npz", "--root", str(tmp_path / "rgb.npz")]
    results = run_json(capsys, [*argv, "--out", str(tmp_path / "run")])
    binarized = results["binarization"]
    assert binarized is None if family.startswith("vma") else binarized["train"] is None
    if not family.startswith("vma"):
        assert results["likelihood"] == "gaussian"  # grey levels in [0, 1]
    # asked for explicitly, a binarisation of colour images is refused in one line
    assert main([*argv, "--binarize", "dynamic", "--out", str(tmp_path / "asked")]) == 2
    assert "needs grey-scale images (C = 1), got C = 3" in capsys.readouterr().err


@pytest.mark.parametrize("colour", [False, True])
def test_compare_guides_on_grey_and_colour_images(capsys, tmp_path, mnist_root, colour):
    if colour:
        images = np.random.default_rng(0).random((40, 3, 8, 8), dtype=np.float32)
        np.savez(tmp_path / "rgb.npz", images=images)
        data = ["--dataset", "npz", "--root", str(tmp_path / "rgb.npz")]
    else:
        data = ["--dataset", "mnist", "--root", mnist_root, "--size", "8"]
    argv = "compare-guides --epochs 1 --steps 2 --iterative-steps 2 --num-test 4 --num-samples 30"
    results = run_json(
        capsys, [*argv.split(), *data, "--hidden", "16", "--no-progress", "--out", str(tmp_path)]
    )
    expected = (None, "gaussian") if colour else ("static", "bernoulli")
    assert (results["binarization"], results["likelihood"]) == expected
    assert len(results["guides"]) == 4


def test_config_round_trips_through_toml_and_json(capsys, tmp_path, mnist_root):
    argv = FAMILIES["vae"].split() + ["--dataset", "mnist", "--root", mnist_root, "--seed", "3"]
    first = run_json(capsys, [*argv, "--out", str(tmp_path / "a")])
    again = run_json(
        capsys,
        ["train", "--config", str(tmp_path / "a" / "config.toml"), "--out", str(tmp_path / "b")],
    )
    assert again["config"] == first["config"] and first["config"]["seed"] == 3
    assert (tmp_path / "b" / "config.toml").read_text() == (
        tmp_path / "a" / "config.toml"
    ).read_text()
    # the same run on CPU: the same parameters, so the same test ELBO
    assert again["test_elbo_nats"] == pytest.approx(first["test_elbo_nats"], abs=1e-4)
    # JSON works too, and flags override the file
    path = tmp_path / "run.json"
    path.write_text(json.dumps(dict(first["config"], recipe="vae", latent_dim=3)))
    third = run_json(
        capsys,
        ["train", "vae", "--config", str(path), "--epochs", "2", "--out", str(tmp_path / "c")],
    )
    assert third["config"]["latent_dim"] == 3 and third["epochs"] == 2


@pytest.mark.parametrize(
    "argv,named",
    [
        ("train vae --dataset nonesuch", "dataset"),
        ("train vae --dataset mnist --root /nonexistent/data", "/nonexistent/data"),
        ("train vae --config /nonexistent/run.toml", "--config"),
        ("train vae --preset nonesuch", "--preset"),
        (
            "train vma --mode fewshot --dataset mnist --root {root} --test-classes 42",
            "--test-classes",
        ),
        ("train vma --mode fewshot --dataset mnist --root {root}", "test_classes"),
        ("train vma --steps 30 --steps-per-epoch 20", "steps"),
    ],
)
def test_bad_values_get_one_line_naming_the_option(capsys, tmp_path, mnist_root, argv, named):
    assert main([*argv.format(root=mnist_root).split(), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if line.startswith("pyromem: error:"))
    assert named in line and "Traceback" not in err


def test_config_of_another_family_is_refused(capsys, tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('recipe = "kpp"\nepochs = 1\n')
    assert main(["train", "vae", "--config", str(path), "--out", str(tmp_path)]) == 2
    assert "--config" in capsys.readouterr().err
    path.write_text('recipe = "vae"\nepochz = 1\n')
    assert main(["train", "--config", str(path), "--out", str(tmp_path)]) == 2
    assert "epochz: not an option of vae; did you mean epochs? its" in capsys.readouterr().err
    path.write_text('recipe = "vae"\nwibble = 1\n')
    assert main(["train", "--config", str(path), "--out", str(tmp_path)]) == 2
    assert "wibble: not an option of vae; its options are" in capsys.readouterr().err


FEWSHOT = ["train", "vma", "--mode", "fewshot", "--size", "8", "--classes", "2", "--shots", "2"]
FEWSHOT += ["--queries", "2", "--memory-classes", "1", "--steps-per-epoch", "5", *VMA_TINY]


def _states(path):
    return load_checkpoint(path).state_dict


def test_vma_fewshot_resumes_bit_exactly_after_a_kill(capsys, tmp_path):
    steps = ["--steps", "100", "--accelerator", "cpu"]
    run_json(capsys, [*FEWSHOT, *steps, "--out", str(tmp_path / "full")])
    cut = tmp_path / "cut"
    command = [sys.executable, "-m", "pyromem", *FEWSHOT, *steps, "--out", str(cut)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = cut / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if checkpoint.is_file() and load_checkpoint(checkpoint).epoch >= 2:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = load_checkpoint(checkpoint).epoch
    assert 2 <= killed_at < 20
    run_json(capsys, [*FEWSHOT, *steps, "--resume", "--out", str(cut)])
    full, resumed = _states(tmp_path / "full" / "checkpoints" / "last.ckpt"), _states(checkpoint)
    assert full.keys() == resumed.keys()
    assert all(torch.equal(full[k], resumed[k]) for k in full)


def test_vma_fewshot_under_ddp_on_two_cpu_processes(tmp_path):
    command = [
        sys.executable,
        "-m",
        "pyromem",
        *FEWSHOT,
        "--steps",
        "10",
        "--accelerator",
        "cpu",
        "--devices",
        "2",
        "--strategy",
        "ddp",
        "--out",
        str(tmp_path),
        "--json",
    ]
    completed = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert load_checkpoint(tmp_path / "checkpoints" / "last.ckpt").epoch == 2
    # rank 0 alone evaluates and prints: one JSON object
    assert isinstance(json.loads(completed.stdout), dict)


@pytest.fixture
def omniglot_root(tmp_path):
    rng = np.random.default_rng(0)
    for folder, alphabets in (("images_background", ("A", "B")), ("images_evaluation", ("C",))):
        characters = {a: [f"character{i:02d}" for i in range(1, 5)] for a in alphabets}
        _write_omniglot(tmp_path, folder, characters, list(range(1, 7)), rng)
    return str(tmp_path)


@pytest.fixture
def cifar10_root(tmp_path, monkeypatch):
    # torchvision checks the md5 sums of the real batches: only that check is replaced
    monkeypatch.setattr(
        torchvision.datasets.cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path)
    )
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for batch, n in [(f"data_batch_{i}", 8) for i in range(1, 6)] + [("test_batch", 12)]:
        data = rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8)
        with open(folder / batch, "wb") as f:
            pickle.dump({"data": data, "labels": (np.arange(n) % 10).tolist()}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)
    return str(tmp_path)


PRESETS = {
    "vae": ("mnist", "train vae --preset paper --epochs 1 --num-samples 2 --num-particles 1"),
    "vma-paper-mnist": (
        "mnist",
        "train vma --preset paper-mnist --steps 2 --steps-per-epoch 2 --num-samples 2",
    ),
    "vma-paper": (
        "omniglot",
        "train vma --preset paper --size 16 --steps 2 --steps-per-epoch 2 --num-samples 2"
        " --classes 2 --shots 2 --queries 2 --memory-classes 1 --channels 8",
    ),
    "kpp": (
        "mnist",
        "train kpp --preset paper --episode-length 2 --batch-size 50 --epochs 1 --num-samples 2"
        " --num-particles 1 --encoder-width 4 --warmup-epochs 0.5",
    ),
    "retrieval": (
        "cifar10",
        "retrieval --preset paper --methods VAE-GMM --corruptions clean --memory-size 4"
        " --seeds 1 --selection-seeds 1 --vae-epochs 1",
    ),
    "retrieval-authors-code": (
        "cifar10",
        "retrieval --preset authors-code --methods VAE-GMM --corruptions clean --memory-size 4"
        " --seeds 1 --selection-seeds 1 --vae-epochs 1 --vae-augment dihedral",
    ),
}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_runs_a_few_steps(capsys, tmp_path, request, preset):
    dataset, argv = PRESETS[preset]
    root = request.getfixturevalue(f"{dataset}_root")
    results = run_json(
        capsys, [*argv.split(), "--root", root, "--no-progress", "--out", str(tmp_path / "run")]
    )
    assert results["config"]["dataset"] == dataset
    assert (tmp_path / "run" / "config.toml").is_file()
    if preset.startswith("retrieval"):
        # the preset's VAE is the one trained, not the defaults'
        trained = results["vae"]["config"]
        assert trained["latent_dim"] == results["config"]["vae_latent_dim"]
        assert trained["net"] == results["config"]["vae_net"]
        assert trained["likelihood_kwargs"]["scale"] == results["config"]["vae_scale"]
        assert results["vae"]["augment"] == results["config"]["vae_augment"]


def test_authors_code_preset_has_the_notebooks_loss():
    # The authors' notebook (sino7/predictive_coding_associative_memories, experiments.ipynb)
    # trains its CIFAR10 VAE on batches of 20 with
    #   MSELoss(reduction="sum")(x_pred, x) + 0.1 * mean over the batch of the summed KL.
    # The preset's Gaussian likelihood and the KL of a standard-normal prior must give the
    # same loss up to a positive factor and a constant: the same gradients, rescaled.
    preset = RetrievalConfig.presets["authors-code"]
    assert preset["vae_latent_dim"] == 64 and preset["vae_net"] == "conv"
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(20, 3, 32, 32, generator=generator)
    x_pred = torch.rand(20, 3, 32, 32, generator=generator).requires_grad_()
    mu = torch.randn(20, 64, generator=generator).requires_grad_()
    logvar = torch.randn(20, 64, generator=generator).requires_grad_()

    kl = 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(1)
    notebook = torch.nn.functional.mse_loss(x_pred, x, reduction="sum") + 0.1 * kl.mean()
    likelihood = GaussianLikelihood((3, 32, 32), scale=preset["vae_scale"])
    ours = -(likelihood(x_pred).log_prob(x) - kl).sum()

    wrt = (x_pred, mu, logvar)
    notebook_grads = torch.autograd.grad(notebook, wrt, retain_graph=True)
    ours_grads = torch.autograd.grad(ours, wrt)
    factor = ours_grads[1].flatten()[0] / notebook_grads[1].flatten()[0]
    assert factor > 0
    for a, b in zip(ours_grads, notebook_grads, strict=True):
        torch.testing.assert_close(a, factor * b, rtol=1e-5, atol=1e-6)


def test_episodes_the_data_cannot_hold_are_refused_before_training(capsys, tmp_path):
    rng = np.random.default_rng(0)
    images = rng.random((62, 1, 8, 8), dtype=np.float32)
    labels = np.r_[np.repeat(np.arange(6), 10), [6, 6]]  # class 6 has two images
    np.savez(tmp_path / "few.npz", images=images, labels=labels)
    data = ["--dataset", "npz", "--root", str(tmp_path / "few.npz"), "--no-progress"]
    fewshot = "train vma --mode fewshot --test-classes 5 6 --classes 2 --shots 1 --queries 1"
    argv = [*fewshot.split(), "--memory-classes", "1", "2", "--steps", "4", *data]
    assert main([*argv, "--out", str(tmp_path / "vma")]) == 2
    err = capsys.readouterr().err
    assert "shots: every class of the test split needs shots + 2 test queries = 3 images, " in err
    assert "but class 6 has 1" in err and not (tmp_path / "vma" / "checkpoints").exists()
    # K++'s episodes of one class need labels: an npz without them has none
    np.savez(tmp_path / "unlabelled.npz", images=images)
    data[3] = str(tmp_path / "unlabelled.npz")
    kpp = ["train", "kpp", "--same-class", "--epochs", "1", *data, "--out", str(tmp_path / "k")]
    assert main(kpp) == 2
    assert "--same-class: the train split of npz has no labels (all -1)" in capsys.readouterr().err
    assert not (tmp_path / "k" / "checkpoints").exists()
