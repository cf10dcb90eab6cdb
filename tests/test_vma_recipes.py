import json
import math

import pytest
import torch

from pyromem.cli import main
from pyromem.experiments.vma import (
    DEMO_NETS,
    EVAL_EPISODES,
    compare_vma,
    evaluate_vma,
    sweep_episode,
    train_vma,
)
from pyromem.train.checkpoint import CHECKPOINT_KEY

pytestmark = pytest.mark.filterwarnings("ignore:.*treespec.*")

TINY = {"hidden": (16,), "latent_dim": 2, "embedding_dim": 8, "num_samples": 20, "progress": False}
KEYS = {"mode", "address", "memory_size", "test_nll_nats", "num_samples", "kl_address", "kl_z"}


def test_recall_with_vimco_writes_results_and_evaluates_again(tmp_path):
    results = train_vma(
        out_dir=tmp_path, mode="recall", address="vimco", memory_size=8, steps=20, **TINY
    )
    assert KEYS | {"log_memory_size", "reconstruction", "figures"} <= results.keys()
    assert results["log_memory_size"] == pytest.approx(math.log(8))
    assert results["num_samples"] == 20 and results["address"] == "vimco"
    # KL(q(a|x) ‖ p(a)) of a categorical over 8 slots lies in [0, log 8] up to p(a)'s shape
    assert 0 <= results["kl_address"]
    assert json.loads((tmp_path / "results.json").read_text())["mode"] == "recall"
    # a run of a version that accepted options its mode ignores stored them: it is evaluated
    # as it was trained, without them
    raw = torch.load(results["checkpoint"], weights_only=True)
    raw[CHECKPOINT_KEY]["config"]["options"].update(epochs=3, classes=3, temperature=2.0)
    torch.save(raw, results["checkpoint"])
    again = evaluate_vma(results["checkpoint"], out_dir=tmp_path / "eval", num_samples=20)
    assert KEYS <= again.keys() and (tmp_path / "eval" / "results.json").is_file()


@pytest.mark.parametrize("address", ["enum", "vimco"])
def test_recall_reaches_the_lookup_table(tmp_path, address):
    # x drawn from M: an ideal lookup table scores NLL = log |M| exactly (§4.1, Fig. 2A)
    memory_size, tolerance = 8, 0.3
    results = train_vma(
        out_dir=tmp_path,
        mode="recall",
        address=address,
        memory_size=memory_size,
        steps=2000,
        num_samples=100,
        num_threads=1,
        progress=False,
        **DEMO_NETS,
    )
    assert results["test_nll_nats"] <= math.log(memory_size) + tolerance


def test_learned_memory_trains_with_the_engine_and_reports_slots(tmp_path):
    results = train_vma(
        out_dir=tmp_path,
        mode="learned",
        address="enum",
        memory_size=8,
        epochs=1,
        num_test=32,
        accelerator="cpu",
        **TINY,
    )
    assert KEYS <= results.keys()
    assert 1 <= results["slots_used"] <= 8 and 1 <= results["effective_slots"] <= 8 + 1e-6


def test_fewshot_reports_the_sweep_and_classification(tmp_path):
    # one run through compare_vma, which also draws the sweep with its error bars
    comparison = compare_vma(
        out_dir=tmp_path,
        addresses=("enum",),
        mode="fewshot",
        steps=5,
        classes=2,
        shots=2,
        queries=2,
        memory_classes=(1, 2),
        size=8,
        **TINY,
    )
    results = comparison["runs"]["enum"]
    assert results["memory_size"] == 4
    assert [row["classes"] for row in results["memory_size_sweep"]] == [1, 2]
    sweep = results["memory_size_sweep"]
    assert sweep[1]["optimum_nll_nats"] == pytest.approx(sweep[0]["test_nll_nats"] + math.log(2))
    # every point is a mean over the episodes with its standard error; the paired distance to
    # the optimum is the difference of the means, zero at the smallest memory
    for row in sweep:
        assert row["episodes"] == EVAL_EPISODES and row["queries_per_episode"] == 2
        assert math.isfinite(row["test_nll_se_nats"]) and row["test_nll_se_nats"] >= 0
        assert math.isfinite(row["nll_above_optimum_se_nats"])
        assert row["nll_above_optimum_nats"] == pytest.approx(
            row["test_nll_nats"] - row["optimum_nll_nats"], abs=1e-9
        )
    assert sweep[0]["nll_above_optimum_nats"] == 0 == sweep[0]["nll_above_optimum_se_nats"]
    assert results["test_nll_se_nats"] == sweep[1]["test_nll_se_nats"]
    assert (tmp_path / "nll_by_classes.png").is_file()
    for row, point in zip(comparison["table"], sweep, strict=True):
        assert row["enum_test_nll_se_nats"] == point["test_nll_se_nats"]
    accuracy = results["classification_accuracy"]
    assert set(accuracy) == {"5-way 1-shot", "5-way 5-shot", "20-way 1-shot", "20-way 5-shot"}
    assert all(0 <= value <= 1 for value in accuracy.values())


def test_the_sweep_measures_every_memory_size_on_the_same_queries():
    # Fig. 5A paired: one draw of the largest memory's classes; the queries are those of the
    # smallest memory's classes at every size, and a larger memory only adds confounding
    # classes (their shots) to the smaller one
    images = torch.arange(60.0).reshape(60, 1, 1, 1)
    labels = torch.arange(6).repeat_interleave(10)
    generator = torch.Generator().manual_seed(0)
    pairs = sweep_episode(images, (2, 1, 4), 3, 2, labels=labels, generator=generator)
    (memory_2, query), (memory_1, _), (memory_4, _) = pairs
    assert [len(memory) for memory, _ in pairs] == [6, 3, 12]
    assert all(torch.equal(q, query) for _, q in pairs) and len(query) == 2
    assert torch.equal(memory_2[:3], memory_1) and torch.equal(memory_4[:6], memory_2)
    # the queries belong to the class of the smallest memory, and are none of its shots
    query_class = labels[query.flatten().long()]
    assert (query_class == labels[memory_1.flatten().long()][0]).all()
    assert not set(query.flatten().tolist()) & set(memory_4.flatten().tolist())
    # the memory at C holds C distinct classes of 3 shots each
    classes = labels[memory_4.flatten().long()]
    assert classes.unique().numel() == 4 and (classes.reshape(4, 3) == classes[::3, None]).all()
    # seeded: the same draw again
    generator = torch.Generator().manual_seed(0)
    again = sweep_episode(images, (2, 1, 4), 3, 2, labels=labels, generator=generator)
    for (memory, query), (memory_again, query_again) in zip(pairs, again, strict=True):
        assert torch.equal(memory, memory_again) and torch.equal(query, query_again)
    with pytest.raises(ValueError, match="memory_classes"):
        sweep_episode(images, (), 3, 2, labels=labels)


@pytest.mark.parametrize("mode", ["recall", "learned", "fewshot"])
def test_soft_attention_baseline_trains_and_reports_the_same_keys(tmp_path, mode):
    options = {
        "recall": {"memory_size": 8, "steps": 20},
        "learned": {"memory_size": 8, "epochs": 1, "num_test": 32, "accelerator": "cpu"},
        "fewshot": {"steps": 5, "classes": 2, "shots": 2, "queries": 2, "memory_classes": (1, 2)},
    }[mode]
    results = train_vma(out_dir=tmp_path, mode=mode, address="soft", size=8, **options, **TINY)
    assert KEYS | {"reconstruction", "figures"} <= results.keys()
    assert results["address"] == "soft" and results["num_samples"] == 20
    # no address: no KL of it; the test NLL samples z alone
    assert results["kl_address"] is None and results["kl_z"] >= 0
    assert results["bounds"]["test_nll_nats"] == "-IWAE-20, samples from q(z | x)"
    assert math.isfinite(results["test_nll_nats"])
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["address"] == "soft" and saved["kl_address"] is None
    if mode == "fewshot":
        assert [row["kl_address"] for row in results["memory_size_sweep"]] == [None, None]
        assert all(0 <= value <= 1 for value in results["classification_accuracy"].values())
    again = evaluate_vma(results["checkpoint"], out_dir=tmp_path / "eval", num_samples=20)
    assert KEYS <= again.keys() and again["address"] == "soft"
    assert again["test_nll_nats"] == pytest.approx(results["test_nll_nats"], abs=0.5)


def test_cli_trains_and_evaluates_soft_attention(capsys, tmp_path):
    common = ["--num-samples", "10", "--out"]
    argv = ["train", "vma", "--address", "soft", "--memory-size", "8", "--steps", "10"]
    argv += ["--hidden", "16", "--latent-dim", "2", "--embedding-dim", "8", "--no-progress"]
    assert main([*argv, *common, str(tmp_path), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results["address"] == "soft" and results["kl_address"] is None
    argv = ["eval", "vma", "--checkpoint", results["checkpoint"], *common, str(tmp_path / "eval")]
    assert main([*argv, "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["address"] == "soft"
    # the evaluation says what it evaluated as training did, with training's draws by default
    for key in ("dataset", "image_size", "binarization", "split", "num_particles", "bounds"):
        assert again[key] == results[key], key


def test_bad_mode_and_address(tmp_path):
    with pytest.raises(ValueError, match="mode: expected one of"):
        train_vma(out_dir=tmp_path, mode="recal")
    with pytest.raises(ValueError, match="address: expected one of"):
        train_vma(out_dir=tmp_path, address="hard")


@pytest.mark.parametrize("address", ["rws", "nvil", "gumbel"])
def test_every_address_trains_with_the_engine_and_is_evaluated_discrete(tmp_path, address):
    results = train_vma(
        out_dir=tmp_path,
        mode="recall",
        address=address,
        memory_size=4,
        steps=4,
        steps_per_epoch=2,
        # the relaxation's τ, which the other addresses do not take
        **({"temperature": 1.0, "final_temperature": 0.25} if address == "gumbel" else {}),
        **TINY,
    )
    # evaluated as the discrete model (gumbel in eval mode): a finite bound, a KL of a ≥ 0
    assert math.isfinite(results["test_nll_nats"]) and results["address"] == address
    assert 0 <= results["kl_address"] <= math.log(4) + 1
    rows = [line for line in (tmp_path / "metrics.csv").read_text().splitlines()[1:] if line]
    assert len(rows) == 2  # two epochs of two steps each
