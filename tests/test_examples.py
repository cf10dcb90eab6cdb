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
