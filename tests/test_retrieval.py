import inspect
import math

import numpy as np
import pytest
import torch

from pyromem.data import gaussian_noise, load, square_mask
from pyromem.retrieval import (
    GRIDS,
    ContentReader,
    FixedPointReader,
    MemN2NReader,
    build_method,
    capacity_sweep,
    check_corruptions,
    corrupt,
    default_corruptions,
    dot_product_winners,
    evaluate,
    parse_corruption,
    retrieval_success,
    retrieval_table,
    rms_distance,
    sample_memory,
    save_capacity_plot,
    scale_unit,
    select_hyperparameters,
    select_threshold,
    train_reader,
)


@pytest.fixture(scope="module")
def digits():
    return load("digits", "train").images, load("digits", "test").images


def test_success_criterion_on_hand_made_vectors():
    memory = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    target = torch.tensor([0, 0, 0, 1])
    retrieved = torch.tensor([[0.1, 0.0], [0.5, 0.0], [0.9, 0.0], [0.5, 0.1]])
    # RMS distances to pattern 0: 0.1/√2, 0.5/√2, 0.9/√2; the tie at 0.5 is no success.
    outcome = retrieval_success(retrieved, memory, target, threshold=0.1)
    assert outcome.nearest.tolist() == [True, False, False, False]
    assert outcome.within.tolist() == [True, False, False, False]
    loose = retrieval_success(retrieved, memory, target, threshold=0.5)
    assert loose.within.tolist() == [True, True, False, True]
    # within the threshold but nearer another pattern: the two criteria differ
    assert loose.success.tolist() == [True, False, False, False]
    tight = retrieval_success(retrieved, memory, target, threshold=0.05)
    assert tight.nearest[0] and not tight.within[0] and not tight.success[0]
    assert rms_distance(retrieved[:1], memory)[0, 0].item() == pytest.approx(0.1 / math.sqrt(2))


def test_success_criterion_rejects_bad_input():
    memory = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="same width"):
        retrieval_success(torch.zeros(2, 3), memory, torch.tensor([0, 1]), 0.1)
    with pytest.raises(ValueError, match="threshold"):
        retrieval_success(torch.zeros(2, 2), memory, torch.tensor([0, 1]), 0.0)
    with pytest.raises(ValueError, match="index"):
        retrieval_success(torch.zeros(2, 2), memory, torch.tensor([0, 3]), 0.1)
    with pytest.raises(ValueError, match="NaN"):
        retrieval_success(torch.full((2, 2), math.nan), memory, torch.tensor([0, 1]), 0.1)


def test_gmm_retrieves_every_clean_query_with_small_sigma(digits):
    _, test = digits
    for images in (test, load("patches", "test").images):
        unit = scale_unit(images.flatten(1), 100)
        gmm = build_method("GMM", images.shape[1:], sigma=0.005 * unit)
        rates = evaluate(gmm, images, "clean", memory_size=100, seeds=2, threshold=0.01)
        assert rates.success == [100.0, 100.0]


def test_hopfield_prefers_large_norms_where_the_balanced_gmm_does_not():
    # Table 2's finding on a constructed memory: a pattern and a larger one in a nearby
    # direction. MCHN's softmax(β M z) (eq. 8) picks the larger pattern even for a clean query
    # of the smaller one; the balanced GMM (eq. 11) returns the query's own pattern.
    memory = torch.tensor([[1.0, 0.0], [3.0, 1.0], [-1.0, 2.0]])
    target = torch.arange(3)
    for scale in (0.1, 0.3):
        hopfield = FixedPointReader("hopfield", scale)(memory, memory)
        gmm = FixedPointReader("balanced", scale)(memory, memory)
        assert retrieval_success(gmm, memory, target, 0.01).success.all()
        assert not retrieval_success(hopfield, memory, target, 0.01).success[0]
        torch.testing.assert_close(hopfield[0], memory[1], atol=1e-3, rtol=0)


def test_hopfield_equals_gmm_for_equal_norm_patterns():
    memory = torch.nn.functional.normalize(torch.randn(20, 8), dim=-1)
    queries = memory + 0.1 * torch.randn(20, 8)
    hopfield = FixedPointReader("hopfield", 0.5, num_steps=3)(queries, memory)
    gmm = FixedPointReader("balanced", 0.5, num_steps=3)(queries, memory)
    torch.testing.assert_close(hopfield, gmm)


def test_named_corruptions_apply_the_library_corruption(digits):
    _, test = digits
    x = test[:16]
    noisy = corrupt(x, "noise-0.6", torch.Generator().manual_seed(3))
    torch.testing.assert_close(
        noisy, gaussian_noise(x, 0.6, generator=torch.Generator().manual_seed(3))
    )
    masked = corrupt(x, "mask-4", torch.Generator().manual_seed(3))
    torch.testing.assert_close(
        masked, square_mask(x, 4, generator=torch.Generator().manual_seed(3))
    )
    # a 4x4 square of zeros in every image, and nothing else changed
    changed = (masked != x).flatten(1).sum(-1)
    assert (changed <= 16).all() and ((masked == 0).flatten(1).sum(-1) >= 16).all()
    torch.testing.assert_close(corrupt(x, "clean"), x)
    shifted = corrupt(x, "shift-2")
    torch.testing.assert_close(shifted[..., 2:, 2:], x[..., :-2, :-2])
    rgb = load("patches", "test").images[:4]
    rotated = corrupt(rgb, "colour-rotation")
    # a rotation about the grey axis keeps the brightness (up to clipping)
    assert (rotated.mean(-3) - rgb.mean(-3)).abs().median() < 1e-5
    assert parse_corruption("mask-16") == ("mask", 16)
    for bad in ("noise", "mask-x", "blur-3", "noise--1"):
        with pytest.raises(ValueError, match="unknown corruption"):
            parse_corruption(bad)
    assert default_corruptions((3, 32, 32)) == [
        "clean",
        "noise-0.2",
        "noise-0.6",
        "mask-16",
        "mask-24",
        "colour-rotation",
        "shift-4",
    ]
    assert default_corruptions((3, 64, 64))[3:5] == ["mask-32", "mask-48"]
    # tiny images: no mask of width 0 (the clean query), none twice, no shift past the image
    assert default_corruptions((1, 1, 1)) == ["clean", "noise-0.2", "noise-0.6"]
    assert default_corruptions((1, 2, 2)) == ["clean", "noise-0.2", "noise-0.6", "mask-1"]
    assert default_corruptions((3, 1, 1))[-1] == "colour-rotation"


def test_seeds_draw_independent_memories_and_give_mean_and_std(digits):
    _, test = digits
    memories = [
        set(sample_memory(len(test), 50, torch.Generator().manual_seed(s)).tolist())
        for s in range(3)
    ]
    assert memories[0] != memories[1] != memories[2]
    gmm = build_method("GMM", test.shape[1:], sigma=0.5)
    rates = evaluate(gmm, test, "noise-0.6", memory_size=50, seeds=4, threshold=0.1)
    assert len(rates.success) == 4 and len(set(rates.success)) > 1
    summary = rates.summary()
    values = torch.tensor(rates.success, dtype=torch.float64)
    assert summary["mean"] == pytest.approx(values.mean().item())
    assert summary["std"] == pytest.approx(values.std().item())
    assert set(summary) >= {"mean", "std", "nearest", "threshold"}
    # the same seed gives the same memory and queries
    assert evaluate(gmm, test, "noise-0.6", 50, 4, 0.1).success == rates.success
    with pytest.raises(ValueError, match="exceeds"):
        sample_memory(10, 11)


def test_selection_sees_only_the_training_split(digits):
    train, test = digits
    assert "test" not in " ".join(inspect.signature(select_hyperparameters).parameters)
    unit = scale_unit(train.flatten(1), 50)
    threshold = select_threshold(train.flatten(1), 50)
    chosen, scores = select_hyperparameters(
        "GMM", train, ["noise-0.6"], threshold=threshold, unit=unit, memory_size=50
    )
    assert (
        len(scores) > 1
        and chosen == max(scores, key=lambda s: s["train_success"])["hyperparameters"]
    )
    # the whole table: other test images change the rates, never the chosen values
    kwargs = {"memory_size": 50, "seeds": 2}
    lines = []  # and the table's progress: a line before each selection, one per cell
    a = retrieval_table(["GMM", "Hopfield"], ["noise-0.6"], train, test, log=lines.append, **kwargs)
    assert [line.split(":")[0].split() for line in lines] == [
        ["GMM"],
        ["[1/2]", "GMM", "noise-0.6"],
        ["Hopfield"],
        ["[2/2]", "Hopfield", "noise-0.6"],
    ]
    assert lines[0] == f"GMM: choosing among {len(scores)} candidates on training memories"
    assert lines[2].endswith(
        f"among {len(GRIDS['Hopfield']['beta'])} candidates on training memories"
    )
    b = retrieval_table(["GMM", "Hopfield"], ["noise-0.6"], train, test.flip(-1), **kwargs)
    assert a["hyperparameters"] == b["hyperparameters"]
    assert a["threshold"] == b["threshold"]


def test_long_selection_and_training_report_each_step(digits, monkeypatch):
    import itertools

    train, test = digits
    kwargs = {"memory_size": 20, "seeds": 1, "selection_seeds": 1}
    methods, corruptions = ["GMM", "MemN2N"], ["clean"]
    clock = itertools.count()  # a millisecond a reading: every stage is short, no step lines
    monkeypatch.setattr("pyromem.retrieval.tables.time.perf_counter", lambda: next(clock) / 1e3)
    quiet = []
    retrieval_table(methods, corruptions, train[:100], test, log=quiet.append, **kwargs)
    heads = [" ".join(line.split(":")[0].split()) for line in quiet]
    assert heads == ["GMM", "[1/2] GMM clean", "[2/2] MemN2N clean"]
    clock = itertools.count()  # 10 s a reading: every stage is long
    monkeypatch.setattr("pyromem.retrieval.tables.time.perf_counter", lambda: 10.0 * next(clock))
    lines = []
    out = retrieval_table(methods, corruptions, train[:100], test, log=lines.append, **kwargs)
    scores, losses = out["selection"]["GMM"], out["training"]["MemN2N"]["train_loss_by_lr"]
    steps = [line for line in lines if line.startswith(("GMM: candidate", "MemN2N: trained"))]
    expected = [
        f"GMM: candidate {i}/{len(scores)} (sigma={s['hyperparameters']['sigma']:.3g}): "
        f"{s['train_success']:.1f} % retrieved"
        for i, s in enumerate(scores, 1)
    ]
    expected += [
        f"MemN2N: trained {i}/{len(losses)} (train_lr={lr:g}): last loss {loss:.4g}"
        for i, (lr, loss) in enumerate(losses.items(), 1)
    ]
    assert [line.rsplit(" (", 1)[0] for line in steps] == expected
    assert all(", ETA " in line and line.endswith(" s)") for line in steps)
    # the last step of a stage has nothing left
    assert steps[len(scores) - 1].endswith("ETA 0 s)") and steps[-1].endswith("ETA 0 s)")


@pytest.mark.parametrize("reader_type", [ContentReader, MemN2NReader])
def test_learned_readers_train_and_retrieve_clean_patterns(reader_type, digits):
    train, test = digits
    torch.manual_seed(0)
    patterns = train.flatten(1)
    reader = reader_type(patterns.shape[1])
    lr = 0.05 if reader_type is ContentReader else 1e-3
    losses = train_reader(
        reader, patterns, 50, steps=150, lr=lr, generator=torch.Generator().manual_seed(0)
    )
    assert sum(losses[-10:]) < 0.5 * sum(losses[:10])
    memory = test[:50].flatten(1)
    with torch.no_grad():
        outcome = retrieval_success(reader(memory, memory), memory, torch.arange(50), 0.1)
    assert outcome.nearest.float().mean() > 0.5  # chance: 1/50


def test_build_method_rejects_bad_names_and_missing_vae():
    with pytest.raises(ValueError, match="unknown method"):
        build_method("SDM", (1, 8, 8))
    with pytest.raises(ValueError, match="vae"):
        build_method("VAE-GMM", (1, 8, 8))
    with pytest.raises(TypeError, match="hyper-parameters"):
        build_method("GMM", (1, 8, 8), gamma=1.0)


def test_entry_points_refuse_images_of_another_shape_in_one_line(digits):
    train, test = digits
    larger = load("digits", "test", size=16).images
    gmm = build_method("GMM", (1, 8, 8))
    # train 8 × 8 and test 16 × 16 ran, tuned on one size and scored on the other
    with pytest.raises(ValueError, match=r"^train_images must have shape \(M, 1, 16, 16\)"):
        retrieval_table(["GMM"], ["clean"], train, larger, seeds=1)
    with pytest.raises(ValueError, match=r"^test_images must have shape \(M, C, H, W\), got"):
        retrieval_table(["GMM"], ["clean"], train.flatten(1), test.flatten(1), seeds=1)
    # a method built for 8 × 8 read 16 × 16 images without a word
    expected = r"^images must have shape \(M, 1, 8, 8\), the image_shape GMM was built for, got"
    with pytest.raises(ValueError, match=rf"{expected} \(360, 1, 16, 16\)$"):
        evaluate(gmm, larger, "clean", threshold=0.1)
    # flattened images failed eight calls deep, on a reader's "queries"
    with pytest.raises(ValueError, match=rf"{expected} \(360, 64\)$"):
        evaluate(gmm, test.flatten(1), "clean", threshold=0.1)
    with pytest.raises(TypeError, match="images must be a floating-point torch.Tensor"):
        evaluate(gmm, test.numpy(), "clean", threshold=0.1)


def test_a_shift_that_moves_the_whole_image_out_is_refused_like_a_wide_mask():
    for name, match in [
        ("shift-8", r"dx must lie in \[-7, 7\]"),
        ("mask-9", r"width must lie in \[0, 8\]"),
    ]:
        with pytest.raises(
            ValueError, match=rf"^corruptions: '{name}' does not apply here: {match}"
        ):
            check_corruptions([name], (1, 8, 8))
    check_corruptions(["shift-7"], (1, 8, 8))


def test_capacity_sweep_on_a_tiny_grid_writes_its_plot(digits, tmp_path):
    train, test = digits
    sweep = capacity_sweep(["GMM", "Hopfield"], train, test, sizes=(5, 20, 10_000), seeds=2)
    assert sweep["sizes"] == [5, 20] and sweep["skipped"] == [10_000]
    assert [len(rows) for rows in sweep["results"].values()] == [2, 2]
    path = save_capacity_plot(sweep, tmp_path / "capacity.png")
    assert path.stat().st_size > 1000


def test_reader_trained_under_a_transformation_retrieves_it_better(digits):
    # Table 4's asterisk rows: a reader trained on transformed queries (here a 1-pixel shift)
    # retrieves transformed queries more often than the same reader trained on clean ones.
    train, test = digits
    patterns, memory = train.flatten(1), test[:50]
    shifted = corrupt(train, "shift-1").flatten(1)
    hits = []
    for queries in (None, shifted):
        torch.manual_seed(0)
        reader = ContentReader(patterns.shape[1], key_dim=patterns.shape[1])
        train_reader(
            reader, patterns, 50, 150, 0.01, torch.Generator().manual_seed(0), queries=queries
        )
        with torch.no_grad():
            read = reader(corrupt(memory, "shift-1").flatten(1), memory.flatten(1))
        outcome = retrieval_success(read, memory.flatten(1), torch.arange(50), 0.1)
        hits.append(outcome.nearest.float().mean().item())
    assert hits[1] > hits[0] + 0.2
    with pytest.raises(ValueError, match="queries"):
        train_reader(ContentReader(64), patterns, queries=shifted[:10])


def test_memn2n_starts_centred_and_each_fit_starts_afresh(digits):
    train, _ = digits
    method = build_method("MemN2N", train.shape[1:], train_steps=3, train_lr=1e-3)
    first = method.fit(train, "clean", 50, torch.Generator().manual_seed(0))
    again = method.fit(train, "clean", 50, torch.Generator().manual_seed(0))
    assert first == again  # the second fit starts from the same reader, not the trained one
    reader, patterns = MemN2NReader(train[0].numel(), 16), train.flatten(1)
    reader.initialise(patterns)
    with torch.no_grad():
        centre = reader.query_embedding(patterns.mean(0, keepdim=True))
        self_scores = reader.query_embedding(patterns).pow(2).sum(-1).mean()
    torch.testing.assert_close(centre, torch.zeros_like(centre), atol=1e-5, rtol=0)
    torch.testing.assert_close(reader.log_temperature.exp() * self_scores, torch.tensor(10.0))


def test_memn2n_starts_at_the_ridge_whitening_of_the_training_patterns():
    # Independent truth: numpy's eigen-decomposition of the covariance. Along each of the top
    # e axes the embedded patterns have variance λ / (λ + ρ λ̄), so 1 as ρ -> 0.
    generator = torch.Generator().manual_seed(0)
    patterns = torch.randn(400, 6, generator=generator) * torch.tensor([5.0, 3, 2, 1, 0.5, 0.1])
    patterns = patterns @ torch.linalg.qr(torch.randn(6, 6, generator=generator))[0] + 2.0
    # 400 patterns take the scatter-matrix branch, 5 (fewer than D = 6) the Gram-matrix one
    for rows, ridge in ((patterns, 1e-6), (patterns, 0.5), (patterns[:5], 1e-6)):
        covariance = np.cov(rows.double().numpy().T, bias=True)
        variances = np.sort(np.linalg.eigvalsh(covariance))[::-1][:4]
        reader = MemN2NReader(6, embed_dim=4, ridge=ridge).initialise(rows)
        with torch.no_grad():
            embedded = reader.memory_embedding(rows).double().numpy()
        floor = ridge * covariance.trace() / 6
        np.testing.assert_allclose(
            np.cov(embedded.T, bias=True), np.diag(variances / (variances + floor)), atol=1e-5
        )
    # embedding rows beyond the principal axes of the patterns start at zero: four centred
    # patterns span three axes (the Gram branch, M < D), 400 span all six (the scatter branch)
    reader = MemN2NReader(6, embed_dim=8).initialise(patterns[:4])
    assert reader.query_embedding.weight[3:].abs().max() == 0
    assert reader.query_embedding.weight[:3].abs().amax(1).min() > 0
    reader = MemN2NReader(6, embed_dim=8).initialise(patterns)
    assert reader.query_embedding.weight[6:].abs().max() == 0
    with pytest.raises(ValueError, match="ridge"):
        MemN2NReader(6, ridge=0.0)
    with pytest.raises(ValueError, match="patterns"):
        MemN2NReader(6).initialise(patterns[:1])


def test_whitened_memn2n_undoes_the_norm_bias_of_the_dot_product():
    # Patterns of very different norms along a shared direction: few win their own plain dot
    # product (2.5-5 % over seeds 0-3), most their whitened one (82-88 %), the read the
    # untrained MemN2N starts from.
    generator = torch.Generator().manual_seed(1)
    memory = torch.randn(40, 8, generator=generator) * 0.3
    memory += torch.linspace(0.5, 4.0, 40)[:, None] * torch.ones(8)
    assert dot_product_winners(memory).float().mean() < 0.1
    reader = MemN2NReader(8, embed_dim=8, ridge=1e-3).initialise(memory)
    with torch.no_grad():
        scores = reader.query_embedding(memory) @ reader.memory_embedding(memory).mT
    assert (scores.argmax(-1) == torch.arange(40)).float().mean() > 0.75


def test_dot_product_winners_predict_the_sharp_hopfield_read():
    # A loop over pairs is the independent truth; the MCHN at a large β, one step from each
    # clean query, retrieves exactly the winners (eq. 8's softmax becomes the argmax).
    generator = torch.Generator().manual_seed(0)
    memory = torch.randn(30, 4, generator=generator) * torch.rand(30, 1, generator=generator)
    memory[:, 0] += 1.0
    expected = [
        all(memory[k] @ memory[k] > memory[k] @ memory[j] for j in range(30) if j != k)
        for k in range(30)
    ]
    winners = dot_product_winners(memory)
    assert winners.tolist() == expected and 0 < sum(expected) < 30
    read = FixedPointReader("hopfield", 1e-3, num_steps=1)(memory, memory)
    hit = retrieval_success(read, memory, torch.arange(30), 1e-3).success
    assert hit.tolist() == expected
    with pytest.raises(ValueError, match="patterns"):
        dot_product_winners(torch.zeros(3))


def test_a_learning_rate_whose_training_ended_nan_is_never_chosen(monkeypatch):
    import math

    from pyromem.retrieval import tables

    grid = tables.TRAINING_GRIDS["MemN2N"]
    assert len(grid) >= 2

    class Trained:
        def __init__(self, hyperparameters):
            self.hyperparameters = hyperparameters

    def trained(name, image_shape, vae, hyperparameters, train_images, memory_size):
        # the first learning rate diverges, the others end at losses that fall with the rate
        lr = hyperparameters["train_lr"]
        return Trained(hyperparameters), {"train_loss_last": math.nan if lr == grid[0] else lr}

    monkeypatch.setattr(tables, "_trained", trained)
    method, training = tables._fit_lowest_loss("MemN2N", (1, 4, 4), None, {}, None, 5)
    assert method.hyperparameters["train_lr"] == min(grid[1:])
    assert math.isnan(training["train_loss_by_lr"][grid[0]])
