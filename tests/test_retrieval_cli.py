import json

import pytest

from pyromem.cli import main


def test_retrieval_command_json_structure(tmp_path, capsys):
    methods = ["GMM", "Hopfield", "NTM", "MemN2N", "VAE-GMM", "VAE-GMM*"]
    code = main(
        ["retrieval", "--dataset", "digits", "--methods", *methods,
         "--corruptions", "clean", "noise-0.2", "--memory-size", "10", "--seeds", "2",
         "--vae-epochs", "2", "--no-progress", "--out", str(tmp_path), "--json"]
    )  # fmt: skip
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dataset"] == "digits" and out["memory_size"] == 10 and out["seeds"] == 2
    assert list(out["results"]) == methods
    for method in methods:
        for corruption in ("clean", "noise-0.2"):
            cell = out["results"][method][corruption]
            assert 0 <= cell["mean"] <= 100 and cell["std"] >= 0
            assert set(cell["nearest"]) == set(cell["threshold"]) == {"mean", "std"}
            assert len(cell["per_seed"]) == 2
        assert out["space"][method] == ("latent" if method.startswith("VAE") else "pixel")
        assert out["threshold"][method] > 0
    assert out["results"]["GMM"]["clean"]["mean"] == 100.0
    assert "sigma" in out["hyperparameters"]["GMM"] and "beta" in out["hyperparameters"]["Hopfield"]
    assert json.loads((tmp_path / "results.json").read_text())["results"] == out["results"]
    for figure in ("retrievals", "trajectory"):
        assert (tmp_path / f"{figure}.png").exists()
    assert "| GMM |" in (tmp_path / "table.md").read_text()
    # The figure's green and red frames are seed 0's whole memory here (10 queries): the same
    # reads as the table's first seed, scored apart from its batched evaluation. VAE-GMM* is
    # given again the reader of the table's second column, which the first column's training
    # draws led to.
    shown = out["figure_retrievals"]
    assert shown["corruption"] == "noise-0.2" and set(shown["retrieved"]) == set(methods)
    for method in methods:
        hits = shown["retrieved"][method]
        assert len(hits) == 10
        seed_0 = out["results"][method]["noise-0.2"]["per_seed"][0]
        assert 100 * sum(hits) / 10 == pytest.approx(seed_0, abs=1e-4)


def test_retrieval_capacity_command(tmp_path, capsys):
    code = main(
        ["retrieval", "--capacity", "--dataset", "digits", "--methods", "GMM",
         "--capacity-sizes", "5", "10", "100000", "--corruptions", "mask-4", "--seeds", "2",
         "--out", str(tmp_path), "--json"]
    )  # fmt: skip
    assert code == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["capacity"]["sizes"] == [5, 10] and out["capacity"]["skipped"] == [100000]
    assert "capacity: N = 100000 skipped: at most 360 fit" in captured.err
    # the corruption asked for is the one the queries had
    assert out["capacity"]["corruption"] == "mask-4"
    assert (tmp_path / "capacity.png").exists()


def test_no_progress_keeps_stderr_quiet_and_the_summary_names_skipped_sizes(tmp_path, capsys):
    code = main(
        ["retrieval", "--capacity", "--dataset", "digits", "--methods", "GMM",
         "--capacity-sizes", "5", "100000", "--seeds", "1", "--no-progress",
         "--out", str(tmp_path)]
    )  # fmt: skip
    assert code == 0
    captured = capsys.readouterr()
    assert "GMM" not in captured.err and "capacity:" not in captured.err
    assert "N = 100000 skipped: more images than the splits hold." in captured.out


def test_a_capacity_sweep_with_no_size_that_fits_is_refused_before_any_work(tmp_path, capsys):
    argv = ["retrieval", "--capacity", "--dataset", "digits", "--methods", "GMM", "VAE-GMM"]
    argv += ["--capacity-sizes", "100000", "500", "--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--capacity-sizes: none fits the 360 test and 1437 train images of digits; " in err
    assert "sizes of at most 360 fit" in err
    assert not (tmp_path / "vae").exists() and not (tmp_path / "capacity.png").exists()


def test_resume_without_a_vae_to_continue_is_refused(tmp_path, capsys):
    argv = ["retrieval", "--dataset", "digits", "--methods", "GMM", "VAE-GMM", "--resume"]
    assert main([*argv, "--out", str(tmp_path)]) == 2
    checkpoint = tmp_path / "vae" / "checkpoints" / "last.ckpt"
    assert f"resume: there is no checkpoint at {checkpoint} to continue" in capsys.readouterr().err
    assert not (tmp_path / "vae").exists()


def test_resume_after_the_vae_finished_builds_the_table(tmp_path, capsys):
    argv = ["retrieval", "--dataset", "digits", "--methods", "VAE-GMM", "--corruptions", "clean"]
    argv += ["--memory-size", "5", "--seeds", "1", "--selection-seeds", "1", "--vae-epochs", "1"]
    argv += ["--no-progress", "--out", str(tmp_path), "--json"]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    # the table was interrupted after the VAE finished: its results are missing
    (tmp_path / "results.json").unlink()
    assert main([*argv, "--resume"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["vae"]["epochs"] == 1 and again["results"] == first["results"]


def test_retrieval_command_rejects_unknown_methods(tmp_path, capsys):
    code = main(["retrieval", "--methods", "SDM", "--out", str(tmp_path)])
    assert code == 2 and "unknown method" in capsys.readouterr().err


def test_a_memory_larger_than_a_split_is_refused_before_the_vae_trains(tmp_path, capsys):
    argv = ["retrieval", "--dataset", "digits", "--memory-size", "1000", "--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--memory-size: 1000 exceeds the 360 test images; memories of at most 360 fit" in err
    assert not (tmp_path / "vae").exists()


def test_a_corruption_the_images_do_not_allow_is_refused_before_the_vae_trains(tmp_path, capsys):
    argv = ["retrieval", "--dataset", "digits", "--corruptions", "clean", "mask-9"]
    assert main([*argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "corruptions: 'mask-9' does not apply here: width must lie in [0, 8]" in err
    assert not (tmp_path / "vae").exists()


def test_resume_continues_the_vae_of_an_interrupted_run_exactly(tmp_path):
    import torch

    from pyromem.experiments.retrieval import load_retrieval_data, retrieval_vae
    from pyromem.experiments.vae import evaluate_checkpoint
    from pyromem.train import load_checkpoint

    images = load_retrieval_data("digits")[0][:256]
    data = {"dataset": "digits", "root": None, "size": None}
    kwargs = dict(epochs=3, progress=False, data=data)
    torch.manual_seed(0)  # as the command line seeds every run: the same initial VAE
    whole, _ = retrieval_vae(images, out_dir=tmp_path / "whole", **kwargs)
    # a run stopped after its first epoch, then the same command with --resume
    torch.manual_seed(0)
    retrieval_vae(images, out_dir=tmp_path / "resumed", **dict(kwargs, epochs=1))
    resumed, info = retrieval_vae(images, out_dir=tmp_path / "resumed", resume=True, **kwargs)
    assert info["epochs"] == 3
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    checkpoint = tmp_path / "resumed" / "checkpoints" / "last.ckpt"
    assert [row["epoch"] for row in load_checkpoint(checkpoint).history] == [1, 2, 3]
    # another seed is another run: refused, not continued
    with pytest.raises(ValueError, match=r"resume: .* data\.seed=0, this run has data\.seed=1"):
        retrieval_vae(images, out_dir=tmp_path / "resumed", resume=True, seed=1, **kwargs)
    # the checkpoint names its data, so `pyromem eval vae` scores it on their test split
    results = evaluate_checkpoint(checkpoint, out_dir=tmp_path / "eval", num_samples=5)
    assert results["dataset"] == "digits" and results["epochs"] == 3


def test_a_bernoulli_vae_checkpoint_is_refused_before_the_table(capsys, tmp_path):
    # `pyromem train vae` on digits makes a Bernoulli VAE of binarised images; the
    # retrieval's images are grey levels, which its refining methods would score
    from pyromem.cli import main

    train = "train vae --epochs 1 --hidden 8 --latent-dim 2 --num-samples 2 --no-progress"
    assert main([*train.split(), "--out", str(tmp_path / "vae")]) == 0
    checkpoint = str(tmp_path / "vae" / "checkpoints" / "last.ckpt")
    capsys.readouterr()
    argv = ["retrieval", "--dataset", "digits", "--checkpoint", checkpoint, "--methods", "GMM"]
    argv += ["VAE-GMM", "--corruptions", "clean", "--seeds", "1", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "table")]) == 2
    line = capsys.readouterr().err.strip()
    assert "checkpoint:" in line and "--likelihood gaussian" in line and "\n" not in line
    assert not (tmp_path / "table" / "results.json").exists()


@pytest.mark.parametrize(
    "corruption, threshold, hits",
    [("clean", 1e9, [True] * 4), ("noise-0.6", 1e-9, [False] * 4), ("noise-0.6", 1e9, None)],
)
def test_the_trajectory_shows_failures_beside_successes(corruption, threshold, hits):
    import torch

    from pyromem.experiments.retrieval import _trajectory, load_retrieval_data
    from pyromem.retrieval import build_method, corrupt

    stored = load_retrieval_data("digits")[1][:40]
    queries = corrupt(stored, corruption, generator=torch.Generator().manual_seed(1))
    gmm = build_method("GMM", tuple(stored.shape[1:]), sigma=0.5)
    table = {"methods": {"GMM": gmm}, "threshold": {"GMM": threshold}}
    name, rows, outcome = _trajectory(table, stored, queries)
    assert name.startswith("GMM") and len(rows) == 4
    indices, shown = [i for i, _, _ in outcome], [hit for _, hit, _ in outcome]
    assert indices == sorted(indices) and len(set(indices)) == 4
    if hits is not None:  # all retrieved, or none: the first four
        assert shown == hits and indices == [0, 1, 2, 3]
    else:  # a mix among the first 32: two of each, the failures not only the first rows'
        assert shown.count(False) == 2 and shown.count(True) == 2
    # each row: the 8 steps' iterates, ẑ_0 included, then the stored pattern
    assert all(len(row) == 10 for row in rows)
    torch.testing.assert_close(rows[0][-1], stored[indices[0]])


def test_the_figure_reads_with_the_per_corruption_readers_of_the_table(tmp_path, capsys):
    # VAE-GMM*, VAE-NTM* and VAE-MemN2N* train one reader per column, each from the same
    # start but with the training draws left by the columns before it; the figure shows
    # noise-0.6, the third column, so its readers are those of a third fit in turn
    methods = ["VAE-GMM*", "VAE-NTM*", "VAE-MemN2N*"]
    code = main(
        ["retrieval", "--dataset", "digits", "--methods", *methods,
         "--corruptions", "clean", "noise-0.2", "noise-0.6", "--memory-size", "10",
         "--seeds", "1", "--vae-epochs", "2", "--no-progress", "--out", str(tmp_path), "--json"]
    )  # fmt: skip
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    shown = out["figure_retrievals"]
    assert shown["corruption"] == "noise-0.6"
    for method in methods:
        seed_0 = out["results"][method]["noise-0.6"]["per_seed"][0]
        assert 100 * sum(shown["retrieved"][method]) / 10 == pytest.approx(seed_0, abs=1e-4)
