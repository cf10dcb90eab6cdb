"""Every benchmark script runs end to end with tiny settings and prints one JSON object."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
HELPERS = {"arguments.py"}  # modules the scripts import, not benchmarks
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
    found = {path.name for path in BENCHMARKS.glob("*.py")} - HELPERS
    assert sorted(TINY) == sorted(found)


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
    # every figure names the device it was measured on (issue 15.7)
    assert result["device"] == "cpu" and result["device_name"]
    if script == "svi_overhead.py":  # --steps 3: three timed steps, not a rounded ten
        assert result["steps"] == 3


def _has_option(script, option):
    return f'"{option}"' in (BENCHMARKS / script).read_text()


REFUSALS = [
    pytest.param(script, ["--device", "cuda"], id=f"{script}-cuda") for script in sorted(TINY)
] + [
    pytest.param(script, ["--repeats", "0"], id=f"{script}-repeats0")
    for script in sorted(TINY)
    if _has_option(script, "--repeats")
]


@pytest.mark.parametrize("script, bad", REFUSALS)
def test_benchmark_refuses_a_bad_argument_in_one_line(script, bad):
    # the refusal comes before any work: the run costs its imports only
    if bad[0] == "--device":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    run = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *bad],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 2, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert bad[0] in lines[0] and "error" in lines[0]
    assert run.stdout == ""


def _arguments(monkeypatch):
    import importlib

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("arguments")


def test_the_device_check_refuses_in_one_line(monkeypatch, capsys):
    import torch

    arguments = _arguments(monkeypatch)
    parser = arguments.Parser(prog="bench")
    assert arguments.device(parser, "cpu") == torch.device("cpu")
    bad = ["tpu", "cuda:x", ""]
    if not torch.cuda.is_available():
        bad += ["cuda", "cuda:0"]
    else:
        bad.append(f"cuda:{torch.cuda.device_count()}")
    for name in bad:
        with pytest.raises(SystemExit) as exit:
            arguments.device(parser, name)
        assert exit.value.code == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("bench: error: argument --device")


def test_the_integer_types_and_the_help_defaults(monkeypatch, capsys):
    arguments = _arguments(monkeypatch)
    parser = arguments.Parser(prog="bench")
    parser.add_argument("--steps", type=arguments.positive_int, default=20)
    parser.add_argument("--warmup", type=arguments.non_negative_int, default=5, help="untimed")
    parser.add_argument("--k", type=arguments.at_least_two, default=2, help="K (default: two)")
    assert parser.parse_args(["--steps", "1", "--warmup", "0", "--k", "2"]).steps == 1
    for bad in (["--steps", "0"], ["--steps", "-1"], ["--steps", "x"], ["--warmup", "-1"]):
        with pytest.raises(SystemExit) as exit:
            parser.parse_args(bad)
        assert exit.value.code == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
    with pytest.raises(SystemExit):
        parser.parse_args(["--k", "1"])
    capsys.readouterr()
    helped = parser.format_help()
    assert "(default: 20)" in helped and "untimed (default: 5)" in helped
    assert "K (default: two)" in helped and "(default: 2)" not in helped


def test_the_fused_retrieval_step_is_the_full_fixed_point_step(monkeypatch):
    # retrieval_throughput's fused form against the form that materialises every difference,
    # at a width and σ where no weight saturates (the read is no stored pattern)
    import importlib.util

    import torch

    monkeypatch.syspath_prepend(str(BENCHMARKS))  # its `import arguments`
    spec = importlib.util.spec_from_file_location("rt", BENCHMARKS / "retrieval_throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    generator = torch.Generator().manual_seed(0)
    memory, z = torch.randn(50, 4, generator=generator), torch.randn(8, 4, generator=generator)
    fused = module.fused_step(z, module.fused_keys(memory, 1.0), memory, 1.0)
    naive = module.naive_step(z, memory, 1.0)
    torch.testing.assert_close(fused, naive, atol=1e-5, rtol=1e-5)
    assert torch.cdist(naive, memory).min() > 0.1
