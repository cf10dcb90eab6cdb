import argparse
import json
import os
import re
import subprocess
import sys

import pytest
import torch

from pyromem.cli import main

TRAIN_KEYS = {
    "model",
    "dataset",
    "epochs",
    "device",
    "test_elbo_nats",
    "test_log_likelihood_nats",
    "num_samples",
    "kl",
    "checkpoint",
}
TINY = ["--epochs", "1", "--num-samples", "20", "--hidden", "32", "--latent-dim", "4"]


def run_json(capsys, argv):
    assert main([*argv, "--json"]) == 0
    out = capsys.readouterr().out
    return json.loads(out)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("train")
    code = main(["train", "vae", "--dataset", "digits", *TINY, "--out", str(out), "--no-progress"])
    assert code == 0
    return out


def test_train_vae_json(capsys, tmp_path):
    results = run_json(
        capsys,
        ["train", "vae", "--dataset", "digits", *TINY, "--out", str(tmp_path), "--no-progress"],
    )
    assert TRAIN_KEYS <= set(results)
    assert results["model"] == "vae" and results["dataset"] == "digits"
    assert results["epochs"] == 1 and results["num_samples"] == 20
    assert set(results["kl"]) == {"z"} and results["kl"]["z"] > 0
    # IWAE-K is a tighter bound than the ELBO, both negative nats per image
    assert results["test_elbo_nats"] <= results["test_log_likelihood_nats"] < 0
    assert os.path.isfile(results["checkpoint"])
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["test_elbo_nats"] == results["test_elbo_nats"]
    for name in ("reconstructions", "samples", "elbo_curve"):
        assert (tmp_path / f"{name}.png").stat().st_size > 0


def test_eval_vae_json(capsys, trained, tmp_path):
    results = run_json(
        capsys,
        [
            "eval",
            "vae",
            "--checkpoint",
            str(trained / "checkpoints" / "last.ckpt"),
            "--num-samples",
            "30",
            "--out",
            str(tmp_path),
        ],
    )
    assert {
        "model",
        "dataset",
        "epochs",
        "test_elbo_nats",
        "test_log_likelihood_nats",
        "num_samples",
        "kl",
        "checkpoint",
    } <= set(results)
    assert results["num_samples"] == 30 and results["epochs"] == 1
    assert (tmp_path / "results.json").is_file() and (tmp_path / "reconstructions.png").is_file()


def test_eval_twice_gives_the_same_numbers_and_another_seed_others(capsys, trained, tmp_path):
    checkpoint = str(trained / "checkpoints" / "last.ckpt")
    argv = ["eval", "vae", "--checkpoint", checkpoint, "--num-samples", "10", "--no-progress"]
    first, again, other = (
        run_json(capsys, [*argv, *extra, "--out", str(tmp_path / name)])
        for name, extra in (("a", []), ("b", []), ("c", ["--seed", "1"]))
    )
    keys = ("test_elbo_nats", "test_log_likelihood_nats")
    assert [first[k] for k in keys] == [again[k] for k in keys]
    assert [first[k] for k in keys] != [other[k] for k in keys]


def test_eval_says_what_it_evaluates_unless_told_not_to(capsys, trained, tmp_path):
    checkpoint = str(trained / "checkpoints" / "last.ckpt")
    argv = ["eval", "vae", "--checkpoint", checkpoint, "--num-samples", "10"]
    argv += ["--num-particles", "2", "--out", str(tmp_path)]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert re.search(r"vae: evaluating on \d+ test images \(ELBO with 2 particles, IWAE-10\)", err)
    assert main([*argv, "--no-progress"]) == 0
    assert "evaluating" not in capsys.readouterr().err


def test_eval_checks_its_out_folder_before_evaluating(capsys, monkeypatch, trained, tmp_path):
    def evaluated(*args, **kwargs):
        raise AssertionError("evaluated before --out was checked")

    monkeypatch.setattr("pyromem.experiments.vae.evaluate_checkpoint", evaluated)
    afile = tmp_path / "a-file"
    afile.write_text("")
    checkpoint = str(trained / "checkpoints" / "last.ckpt")
    for out in (afile, afile / "under", trained):
        assert main(["eval", "vae", "--checkpoint", checkpoint, "--out", str(out)]) == 2
        line = capsys.readouterr().err.strip()
        assert line.startswith("pyromem: error: --out: ") and "\n" not in line
    # the training run's folder: its results.json would be replaced
    assert "holds a run (its config.toml)" in line


def test_eval_writes_beside_a_checkpoint_outside_a_run_folder(
    capsys, monkeypatch, trained, tmp_path
):
    import shutil

    written = []
    monkeypatch.setattr(
        "pyromem.experiments.vae.evaluate_checkpoint",
        lambda checkpoint, *, out_dir, **kwargs: written.append(out_dir) or {},
    )
    monkeypatch.setattr("pyromem.experiments.vae.summary", lambda results: "")
    moved = tmp_path / "kept" / "my.ckpt"
    moved.parent.mkdir()
    shutil.copy(trained / "checkpoints" / "last.ckpt", moved)
    assert main(["eval", "vae", "--checkpoint", str(moved), "--json"]) == 0
    assert written == [str(tmp_path / "kept" / "eval")]
    assert main(["eval", "vae", "--checkpoint", str(trained / "checkpoints" / "last.ckpt")]) == 0
    assert written[-1] == str(trained / "eval")


def test_ctrl_c_says_what_the_checkpoint_holds_and_how_to_go_on(capsys, monkeypatch, tmp_path):
    import signal
    from pathlib import Path

    from pyromem.train import TrainingInterrupted

    def interrupted(*args, **kwargs):
        raise TrainingInterrupted(3, 20, 2, Path("runs/vae/checkpoints/last.ckpt"))

    monkeypatch.setattr("pyromem.experiments.vae.fit", interrupted)
    argv = ["train", "vae", *TINY, "--out", str(tmp_path), "--no-progress"]
    assert main(argv) == 130
    assert capsys.readouterr().err.strip() == (
        "pyromem: interrupted in epoch 3 of 20; runs/vae/checkpoints/last.ckpt holds the 2 "
        "epochs completed; the same command with --resume continues the run"
    )

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("pyromem.experiments.vae.fit", stopped)
    assert main(argv) == 130
    assert capsys.readouterr().err.strip() == "pyromem: interrupted"

    def terminated(*args, **kwargs):
        raise TrainingInterrupted(3, 20, 2, Path("last.ckpt"), signal.SIGTERM)

    monkeypatch.setattr("pyromem.experiments.vae.fit", terminated)
    assert main(argv) == 143  # 128 + SIGTERM, as a shell reports it
    assert capsys.readouterr().err.startswith("pyromem: terminated in epoch 3 of 20; ")


def test_a_system_error_is_one_line(capsys, monkeypatch, tmp_path):
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("pyromem.experiments.vae.fit", full)
    assert main(["train", "vae", *TINY, "--out", str(tmp_path), "--no-progress"]) == 1
    assert capsys.readouterr().err.strip() == "pyromem: error: [Errno 28] No space left on device"


@pytest.mark.parametrize(
    "error, tried",
    [
        (
            RuntimeError(
                "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't "
                "allocate memory: you tried to allocate 25600000000 bytes. Error code 12"
            ),
            " (tried to allocate 23.8 GiB)",
        ),
        (
            torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0)"),
            " (tried to allocate 20.00 GiB)",
        ),
    ],
)
def test_out_of_memory_is_one_line(capsys, monkeypatch, tmp_path, error, tried):
    def allocate(*args, **kwargs):
        raise error

    monkeypatch.setattr("pyromem.experiments.vae.fit", allocate)
    assert main(["train", "vae", *TINY, "--out", str(tmp_path), "--no-progress"]) == 1
    assert capsys.readouterr().err.strip() == (
        f"pyromem: error: out of memory{tried}; a smaller model, batch or number of samples "
        "needs less"
    )


def test_another_runtime_error_keeps_its_traceback(monkeypatch, tmp_path):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr("pyromem.experiments.vae.fit", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["train", "vae", *TINY, "--out", str(tmp_path), "--no-progress"])


def test_resume_continues_to_more_epochs(capsys, trained):
    results = run_json(
        capsys,
        [
            "train",
            "vae",
            "--dataset",
            "digits",
            *TINY[2:],
            "--epochs",
            "2",
            "--resume",
            "--out",
            str(trained),
            "--no-progress",
        ],
    )
    assert results["epochs"] == 2
    rows = (trained / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 3  # header + two epochs


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "vae", "--dataset", "nonesuch"], "nonesuch"),
        (["train", "vae", "--likelihood", "poisson"], "poisson"),
        (
            ["eval", "vae", "--checkpoint", "/nonexistent/last.ckpt"],
            "checkpoint: no checkpoint file at /nonexistent/last.ckpt",
        ),
        (
            ["retrieval", "--checkpoint", "/nonexistent/last.ckpt"],
            "checkpoint: no checkpoint file at /nonexistent/last.ckpt",
        ),
    ],
)
def test_bad_input_gets_one_clear_line(capsys, tmp_path, argv, message):
    assert main([*argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "pyromem: error:" in err and message in err


def test_a_failed_command_prints_no_json_and_exits_non_zero(capsys, tmp_path):
    # the contract of --json: one object on stdout for a result, nothing for a failure
    argv = ["train", "vae", "--dataset", "digits", "--hidden", "0", "--json"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("pyromem: error: --hidden:") and captured.err.count("\n") == 1


def test_corrupt_checkpoint(capsys, tmp_path):
    bad = tmp_path / "last.ckpt"
    bad.write_bytes(b"\x00not a checkpoint")
    assert main(["eval", "vae", "--checkpoint", str(bad), "--out", str(tmp_path)]) == 2
    assert "corrupt" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.device_count() >= 2, reason="this machine has two GPUs")
def test_two_devices_without_two_gpus(capsys, tmp_path):
    argv = ["train", "vae", *TINY, "--devices", "2", "--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "2" in err and "GPU" in err


def test_demo_quick_through_the_console_script(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pyromem",
            "demo",
            "--quick",
            "--json",
            "--no-progress",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout)
    report = (out / "report.md").read_text()
    assert results["report"] == str(out / "report.md")
    assert "IWAE-" in report and "ELBO" in report
    # the opening: the mode, a warning that quick numbers are not results, a headline table
    assert report.startswith("# pyromem demo report\n\nMode: quick; seed 0; 1 torch thread;")
    assert "**Quick mode**" in report
    glance, *sections = report.split("\n## ")[1:]
    assert glance.startswith("At a glance") and glance.count("\n| ") >= 6  # a row per run
    assert f"{results['vae']['test_log_likelihood_nats']:.2f} nats" in glance
    assert len(sections) == 4
    # every figure the report links was written
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report):
        assert (out / link).is_file(), link
    for section in sections:  # each says what to look at
        assert "look at" in section.lower(), section.splitlines()[0]
    for figure in results["vae"]["figures"].values():
        assert os.path.isfile(figure)
        assert os.path.relpath(figure, out) in report


def test_killed_run_leaves_a_loadable_checkpoint_and_resumes(tmp_path):
    import signal
    import time

    from pyromem.train import load_checkpoint

    checkpoint = tmp_path / "checkpoints" / "last.ckpt"
    argv = [
        sys.executable,
        "-m",
        "pyromem",
        "train",
        "vae",
        *TINY[2:],
        "--epochs",
        "500",
        "--no-progress",
        "--out",
        str(tmp_path),
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and load_epoch(checkpoint) < 2:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # no chance to clean up
        proc.wait(timeout=30)
    finally:
        proc.kill()
    killed_at = load_checkpoint(checkpoint).epoch
    assert killed_at >= 2
    code = main(
        [
            "train",
            "vae",
            *TINY[2:],
            "--epochs",
            str(killed_at + 1),
            "--resume",
            "--no-progress",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    assert load_checkpoint(checkpoint).epoch == killed_at + 1


def load_epoch(path):
    from pyromem.train import load_checkpoint

    try:
        return load_checkpoint(path).epoch
    except (FileNotFoundError, ValueError):
        return 0


def test_train_and_eval_vma_json(capsys, tmp_path):
    results = run_json(
        capsys,
        [
            "train",
            "vma",
            "--mode",
            "recall",
            "--address",
            "vimco",
            "--memory-size",
            "8",
            "--steps",
            "10",
            "--hidden",
            "16",
            "--latent-dim",
            "2",
            "--embedding-dim",
            "8",
            "--num-samples",
            "10",
            "--no-progress",
            "--out",
            str(tmp_path),
        ],
    )
    keys = {
        "mode",
        "address",
        "memory_size",
        "test_nll_nats",
        "num_samples",
        "kl_address",
        "kl_z",
        "log_memory_size",
    }
    assert keys <= set(results)
    assert results["mode"] == "recall" and results["address"] == "vimco"
    assert results["memory_size"] == 8 and results["num_samples"] == 10
    again = run_json(
        capsys,
        [
            "eval",
            "vma",
            "--checkpoint",
            results["checkpoint"],
            "--num-samples",
            "12",
            "--out",
            str(tmp_path / "eval"),
        ],
    )
    assert keys - {"log_memory_size"} <= set(again) and again["num_samples"] == 12


def test_train_and_eval_kpp_json(capsys, tmp_path):
    results = run_json(
        capsys,
        [
            "train",
            "kpp",
            "--dataset",
            "digits",
            "--episode-length",
            "4",
            "--reads",
            "2",
            "--same-class",
            "--key-scale",
            "2",
            "--epochs",
            "1",
            "--latent-dim",
            "4",
            "--num-samples",
            "5",
            "--num-particles",
            "2",
            "--no-progress",
            "--out",
            str(tmp_path),
        ],
    )
    keys = {
        "dataset",
        "episode_length",
        "reads",
        "test_conditional_elbo_nats",
        "kl_z",
        "kl_key",
        "reconstruction_nats",
    }
    assert keys <= set(results)
    assert results["episode_length"] == 4 and results["reads"] == 2
    assert results["same_class"] is True and results["key_scale"] == 2.0
    # the conditional ELBO of eq. 4 is its reconstruction term minus the two KL terms
    assert results["test_conditional_elbo_nats"] == pytest.approx(
        results["reconstruction_nats"] - results["kl_z"] - results["kl_key"], abs=1e-3
    )
    again = run_json(
        capsys,
        [
            "eval",
            "kpp",
            "--checkpoint",
            results["checkpoint"],
            "--num-samples",
            "4",
            "--num-particles",
            "2",
            "--out",
            str(tmp_path / "eval"),
        ],
    )
    assert again["num_samples"] == 4 and again["same_class"] is True


def test_train_kpp_baselines_with_the_resnet18_tsm_encoder(capsys, tmp_path):
    argv = "train kpp --episode-length 3 --epochs 1 --latent-dim 4 --num-samples 3"
    argv += " --num-particles 2 --baselines --encoder resnet18-tsm --encoder-width 4"
    results = run_json(capsys, argv.split() + ["--no-progress", "--out", str(tmp_path)])
    assert results["encoder"] == "resnet18-tsm" and results["channels"] == [4]
    keys = {"test_conditional_elbo_nats", "reconstruction_nats", "kl_z", "kl_key"}
    vae, dense = results["baselines"]["vae"], results["baselines"]["dense_write"]
    assert keys <= set(vae) and keys <= set(dense)
    assert vae["kl_key"] == 0.0 and dense["kl_key"] > 0.0
    for bound in (vae, dense):
        total = bound["reconstruction_nats"] - bound["kl_z"] - bound["kl_key"]
        assert abs(bound["test_conditional_elbo_nats"] - total) < 1e-3
    again = run_json(
        capsys,
        ["eval", "kpp", "--checkpoint", vae["checkpoint"], "--num-samples", "2"]
        + ["--num-particles", "2", "--out", str(tmp_path / "eval")],
    )
    assert abs(again["kl_key"]) == 0.0
    # the plain VAE reads no memory: its results say so, and name no reads
    assert again["write"] == "none" and "reads" not in again
    assert "| M" not in again["bounds"]["test_conditional_log_likelihood_nats"]


def test_kpp_episode_of_one_image_is_a_clear_error(capsys, tmp_path):
    argv = ["train", "kpp", "--episode-length", "1", "--epochs", "1", "--out", str(tmp_path)]
    assert main(argv) == 2
    assert "episode" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "vma", "--bogus"],
        ["train", "kpp", "--epochs", "two"],
        ["retrieval", "--seeds"],
    ],
)
def test_a_bad_flag_is_answered_before_torch_loads(argv):
    # the answer's speed is torch's import time (seconds) avoided: checked as its absence
    script = (
        "import sys\nfrom pyromem.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as stop:\n"
        "    print(stop.code, 'torch' in sys.modules)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, *argv], capture_output=True, text=True, check=True
    )
    assert run.stdout.split() == ["2", "False"]
    assert "error:" in run.stderr


@pytest.mark.parametrize("family", ["vma", "kpp"])
def test_eval_names_a_missing_checkpoint_before_torch_loads(family):
    script = (
        "import sys\nfrom pyromem.cli import main\n"
        "print(main(sys.argv[1:]), 'torch' in sys.modules)\n"
    )
    argv = ["eval", family, "--checkpoint", "/nonexistent/last.ckpt"]
    run = subprocess.run(
        [sys.executable, "-c", script, *argv], capture_output=True, text=True, check=True
    )
    assert run.stdout.split() == ["2", "False"]
    assert run.stderr.strip() == (
        "pyromem: error: --checkpoint: no checkpoint file at /nonexistent/last.ckpt"
    )


@pytest.mark.parametrize(
    "argv", [["train", "vae"], ["train", "vma"], ["train", "kpp"], ["retrieval"], ["eval", "vae"]]
)
def test_help_loads_neither_lightning_torchvision_nor_scikit_learn(argv):
    # each takes a second or more to import, and --help lists choices whose homes need only
    # torch and pyro: checked, as above, as the modules' absence
    script = (
        "import sys\nfrom pyromem.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as stop:\n"
        "    heavy = ('lightning', 'torchvision', 'sklearn')\n"
        "    print(stop.code, 'torch' in sys.modules, *[name in sys.modules for name in heavy])\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, *argv, "--help"], capture_output=True, text=True, check=True
    )
    assert run.stdout.split()[-5:] == ["0", "True", "False", "False", "False"]


def test_help_lists_the_choices_imported_from_their_homes(capsys):
    from pyromem.models.vma import ADDRESSING

    with pytest.raises(SystemExit):
        main(["train", "vma", "--help"])
    assert "{" + ",".join(ADDRESSING + ("soft",)) + "}" in capsys.readouterr().out


def test_every_option_help_says_its_default_once():
    from pyromem.cli import build_parser

    def actions(parser):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from actions(sub)
            elif action.option_strings and action.dest not in ("help", "version"):
                yield action

    seen = list(actions(build_parser()))
    assert len(seen) > 100
    for action in seen:
        if action.required:  # no default to show: eval's --checkpoint
            assert action.help.endswith("(required)") and "default:" not in action.help
            continue
        # "(default 3) (default: unset)" said it twice
        defaults = re.findall(r"\bdefault\b", action.help, re.IGNORECASE)
        assert len(defaults) == 1, (action.option_strings, action.help)
        if action.nargs == 0:  # a flag is off until given, and its help says what it does
            assert action.help.endswith("(default: off)"), (action.option_strings, action.help)
            assert ("--no-" in action.option_strings[0]) == action.help.startswith("do not ")


def test_demo_refuses_an_out_that_is_a_file_before_torch_loads(tmp_path):
    afile = tmp_path / "a-file"
    afile.write_text("")
    script = (
        "import sys\nfrom pyromem.cli import main\n"
        "print(main(sys.argv[1:]), 'torch' in sys.modules)\n"
    )
    for out in (afile, afile / "under"):
        argv = ["demo", "--quick", "--out", str(out)]
        run = subprocess.run(
            [sys.executable, "-c", script, *argv], capture_output=True, text=True, check=True
        )
        assert run.stdout.split() == ["2", "False"]
        assert run.stderr.startswith("pyromem: error: --out: ") and run.stderr.count("\n") == 1


@pytest.mark.parametrize(
    "argv, line",
    [
        (["train", "vae", "--out", ""], "--out: expected a folder, got an empty path"),
        (["demo", "--quick", "--out", ""], "--out: expected a folder, got an empty path"),
        (["train", "vae", "--seed", str(2**32)], "--seed: expected a value <= 4294967295"),
        (["demo", "--seed", "-1", "--out", "{tmp}"], "--seed: expected a value in [0, "),
        (["demo", "--num-threads", "0", "--out", "{tmp}"], "--num-threads: expected a value >="),
        (
            ["train", "vae", "--resume", "--overwrite", "--out", "{tmp}"],
            "--overwrite: it starts the run in --out again and --resume continues it",
        ),
    ],
)
def test_a_value_that_would_be_replaced_or_fail_late_is_refused(capsys, tmp_path, argv, line):
    assert main([arg.format(tmp=tmp_path / "run") for arg in argv]) == 2
    assert capsys.readouterr().err.startswith(f"pyromem: error: {line}")
    assert not (tmp_path / "run").exists()


def test_demo_refuses_a_bad_thread_count_before_any_work(tmp_path):
    from pyromem.experiments.demo import run_demo

    with pytest.raises(ValueError, match="num_threads"):
        run_demo(tmp_path / "demo", quick=True, num_threads=0)
    assert not (tmp_path / "demo").exists()


def test_train_prints_its_test_bounds_on_the_terminal(capsys, tmp_path):
    assert main(["train", "vae", *TINY, "--no-progress", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    results = json.loads((tmp_path / "results.json").read_text())
    assert f"| {results['test_log_likelihood_nats']:.2f} |" in out and "| IWAE-" in out


def test_vma_training_and_every_evaluation_print_their_bounds(capsys, tmp_path):
    vma = "train vma --steps 10 --steps-per-epoch 10 --num-samples 4 --hidden 8 --latent-dim 2"
    vma += " --embedding-dim 4 --memory-size 4 --batch-size 4 --num-threads 1 --no-progress"
    assert main([*vma.split(), "--out", str(tmp_path / "vma")]) == 0
    out = capsys.readouterr().out
    results = json.loads((tmp_path / "vma" / "results.json").read_text())
    assert f"| test NLL, −IWAE-4 (nats/image) | {results['test_nll_nats']:.3f} |" in out
    assert "| KL(q(a\\|x)‖p(a)) |" in out  # the pipe escaped: one row of two cells
    checkpoint = str(tmp_path / "vma" / "checkpoints" / "last.ckpt")
    assert main(["eval", "vma", "--checkpoint", checkpoint, "--num-samples", "4"]) == 0
    again = json.loads((tmp_path / "vma" / "eval" / "results.json").read_text())
    assert f"| {again['test_nll_nats']:.3f} |" in capsys.readouterr().out


def test_train_config_names_the_family_in_any_of_its_forms(tmp_path):
    from pyromem.cli import _with_config_family

    config = tmp_path / "config.toml"
    config.write_text('recipe = "kpp"\nepochs = 1\n')
    for argv in (
        ["train", "--config", str(config), "--resume"],
        ["train", f"--config={config}", "--resume"],
        ["train", "--resume", "--config", str(config)],
    ):
        assert _with_config_family(argv)[:2] == ["train", "kpp"]
        assert _with_config_family(argv)[2:] == argv[1:]
    # a family given, or none and no --config: as typed
    assert _with_config_family(["train", "vae", "--config", str(config)])[1] == "vae"
    assert _with_config_family(["train", "--epochs", "3"]) == ["train", "--epochs", "3"]


@pytest.mark.parametrize(
    "family, samples, particles",
    [("vae", "1000", "10"), ("vma", "1000", "the training run's K"), ("kpp", "100", "10")],
)
def test_each_eval_family_shows_its_own_defaults(capsys, family, samples, particles):
    with pytest.raises(SystemExit):
        main(["eval", family, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"K of the IWAE-K bound (default: {samples})" in text
    assert f"draws of the test ELBO (default: {particles})" in text
    assert "kpp: 100" not in text and "vma: the" not in text
