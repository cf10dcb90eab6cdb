import json
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_vae_svi_example_runs_with_each_elbo():
    for elbo in ("Trace_ELBO", "JitTrace_ELBO"):
        proc = subprocess.run(
            [
                sys.executable,
                str(EXAMPLES / "vae_svi.py"),
                "--epochs",
                "2",
                "--elbo",
                elbo,
                "--num-samples",
                "20",
                "--device",
                "cpu",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
        assert summary["elbo"] == elbo
        assert summary["elbo_nats"] <= summary["log_likelihood_nats"] < 0


def test_new_memory_model_example_compares_three_guides():
    proc = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "new_memory_model.py"),
            "--epochs",
            "1",
            "--num-train",
            "128",
            "--num-test",
            "8",
            "--num-samples",
            "30",
            "--steps",
            "2",
            "--iterative-steps",
            "2",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert list(summary["guides"]) == ["amortized", "gaussian-2", "iterative-5"]
    for row in summary["guides"].values():
        assert row["elbo_nats"] <= row["iwae_nats"] + 1.0 and row["khat_mean"] == row["khat_mean"]


def test_new_memory_model_weights_are_those_the_tutorial_states():
    # docs/tutorial-new-memory-model.md: w_k ∝ exp(‖m̃_k‖² / 2σ²), the distribution's default
    # β = 1/σ², not the read's β (the page gave the read's β to both)
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location(
        "new_memory_model", EXAMPLES / "new_memory_model.py"
    )
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    net = example.HopfieldPriorVAE((1, 8, 8), beta=2.0, scale=0.5)
    prior = net.prior()
    memory = net.memory.detach()
    read = torch.softmax(2.0 * memory @ memory.T, -1) @ memory
    torch.testing.assert_close(prior.memory.detach(), read)
    expected = (read.pow(2).sum(-1) / (2 * 0.5**2)).log_softmax(-1)
    torch.testing.assert_close(prior.log_weights.detach(), expected)
