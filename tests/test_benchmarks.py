"""Every benchmark script runs end to end with tiny settings and prints one JSON object."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
TINY = {
    "retrieval_throughput.py": "--sizes 50 200 --batch 8 --dim 4 --steps 2 --repeats 1"
    " --chunked-size 500 --chunk 64",
    "engine_overhead.py": "--num-data 64 --epochs 1 --repeats 1 --batch-size 32 --floor-steps 5",
    "evaluation_overhead.py": "--batch 4 --num-samples 5 --chunk 2 --num-particles 2 --repeats 1",
    "data_check_cost.py": "--num-data 300 --repeats 1 --steps 2",
    "kpp_accountings.py": "--epochs 1 --size 8 --lengths 2 3 --num-samples 2 --num-particles 1"
    " --max-episodes 4",
    "kpp_memory_gain.py": "--steps 2 --seeds 0 --variants kpp --same-class --episode-length 3",
    "kpp_throughput.py": "--steps 2 --repeats 1 --episodes 2 --length 2 --size 8",
    "svi_overhead.py": "--steps 3 --warmup 1 --batch-size 8",
    "train_vae_end_to_end.py": "--epochs 1 --num-images 100 --num-samples 3",
    "vma_addressing.py": "--sizes 4 8 --batch 2 --particles 2 --repeats 1 --image 8 --profile 2",
    "vma_engine_overhead.py": "--steps 3 --repeats 1",
    "vimco_scaling.py": "--particles 2 4 --repeats 3 --memory-particles 8 --num-data 4",
}


def test_every_benchmark_has_tiny_settings():
    assert sorted(TINY) == sorted(path.name for path in BENCHMARKS.glob("*.py"))


def test_the_gpu_pass_runs_every_benchmark():
    script = (BENCHMARKS.parent / ".ci" / "cuda-pass").read_text()
    listed = re.findall(r'^    "(\w+\.py)[ "]', script, flags=re.MULTILINE)
    assert sorted(listed) == sorted(TINY)


def test_the_benchmarks_page_gives_every_benchmarks_command():
    page = (BENCHMARKS.parent / "docs" / "benchmarks.md").read_text()
    # a command in inline code, after any environment variables
    commands = set(re.findall(r"`(?:\w+=\S+ )*python benchmarks/(\w+\.py)", page))
    assert sorted(commands) == sorted(TINY)


@pytest.mark.parametrize("script", sorted(TINY))
def test_benchmark_prints_json(script):
    run = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *TINY[script].split()],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout)
    assert result["benchmark"] == script.removesuffix(".py")


def test_the_fused_retrieval_step_is_the_full_fixed_point_step():
    # retrieval_throughput's fused form against the form that materialises every difference,
    # at a width and σ where no weight saturates (the read is no stored pattern)
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("rt", BENCHMARKS / "retrieval_throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    generator = torch.Generator().manual_seed(0)
    memory, z = torch.randn(50, 4, generator=generator), torch.randn(8, 4, generator=generator)
    fused = module.fused_step(z, module.fused_keys(memory, 1.0), memory, 1.0)
    naive = module.naive_step(z, memory, 1.0)
    torch.testing.assert_close(fused, naive, atol=1e-5, rtol=1e-5)
    assert torch.cdist(naive, memory).min() > 0.1
