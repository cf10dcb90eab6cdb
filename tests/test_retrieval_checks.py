"""The retrieval benchmark's arguments are checked before any work, and its rates are exact."""

import numpy as np
import pytest
import torch

from pyromem.models import VAE
from pyromem.retrieval import (
    build_method,
    capacity_sweep,
    evaluate,
    parse_corruption,
    retrieval_table,
)
from pyromem.retrieval import tables as tables_module
from pyromem.retrieval.protocol import evaluate_corruptions


def _images(count, shape=(1, 4, 4), seed=0):
    return torch.rand((count, *shape), generator=torch.Generator().manual_seed(seed))


class _Spy:
    """Counts the reads of a method."""

    def __init__(self, method):
        self.calls, self.inner = 0, method.retrieve_many

        def counted(*args, **kwargs):
            self.calls += 1
            return self.inner(*args, **kwargs)

        method.retrieve_many = counted


def test_evaluate_matches_a_by_hand_fixed_point_and_nearest_pattern_with_exact_rates():
    images = _images(12, (1, 3, 3), seed=1).double()
    sigma, threshold, size = 0.12, 0.08, 10
    method = build_method("GMM", (1, 3, 3), sigma=sigma, num_steps=7)
    rates = evaluate(method, images, "noise-0.3", size, seeds=3, threshold=threshold)
    by_hand = []
    for seed in range(3):
        generator = torch.Generator().manual_seed(seed)
        stored = images[torch.randperm(12, generator=generator)[:size]]
        noise = torch.randn(stored.shape, generator=generator, dtype=stored.dtype)
        queries = (stored + 0.3 * noise).clamp(0, 1)
        memory, z = stored.flatten(1).numpy(), queries.flatten(1).numpy()
        for _ in range(7):  # eq. 11: z <- sum_k softmax_k(-|z - M_k|^2 / 2 sigma^2) M_k
            logits = -((z[:, None] - memory[None]) ** 2).sum(-1) / (2 * sigma**2)
            weights = np.exp(logits - logits.max(-1, keepdims=True))
            z = (weights / weights.sum(-1, keepdims=True)) @ memory
        rms = np.sqrt(((z[:, None] - memory[None]) ** 2).mean(-1))
        correct = rms[np.arange(size), np.arange(size)]
        np.fill_diagonal(rms, np.inf)
        hits = (correct < rms.min(-1)) & (correct < threshold)
        by_hand.append(100.0 * hits.sum() / size)
    # the queries of seed s are those evaluate draws (noise after the memory, one generator)
    assert rates.success == by_hand
    # exact shares of N: 70.0, not float32's 69.9999988
    assert all(rate * size / 100 == round(rate * size / 100) for rate in rates.success)
    summary = rates.summary()
    assert summary["mean"] == pytest.approx(np.mean(by_hand))
    assert summary["std"] == pytest.approx(np.std(by_hand, ddof=1))
    assert 0 < summary["mean"] < 100  # the check can tell right from wrong


def test_evaluate_refuses_bad_arguments_before_any_read():
    images = _images(20)
    method = build_method("GMM", (1, 4, 4), sigma=0.1)
    spy = _Spy(method)
    bad = [
        (dict(corruptions=["clean", "clean"]), "corruptions: each may be given once"),
        (dict(corruptions="clean"), "corruptions must be a list"),
        (dict(corruptions=[]), "corruptions must not be empty"),
        (dict(corruptions=["mask-10"]), "corruptions: 'mask-10' does not apply here"),
        (dict(threshold=0.0), "threshold must be a positive finite float"),
        (dict(threshold=float("nan")), "threshold must be a positive finite float"),
        (dict(seed_offset=1.5), "seed_offset must be an int"),
        (
            dict(images=images * 3 - 1, corruptions=["noise-0.2"]),
            r"images must take values in \[0, 1\]",
        ),
        (dict(images=images.masked_fill(images > 0.9, float("nan"))), "images must be finite"),
    ]
    for change, message in bad:
        args = {"images": images, "corruptions": ["clean"], "threshold": 0.1, "seed_offset": 0}
        args.update(change)
        with pytest.raises((ValueError, TypeError), match=message):
            evaluate_corruptions(
                method,
                args["images"],
                args["corruptions"],
                5,
                2,
                args["threshold"],
                args["seed_offset"],
            )
    assert spy.calls == 0
    # a NumPy float is a threshold like a Python float; clean queries may leave [0, 1]
    assert evaluate(method, images, "clean", 5, 1, np.float32(0.1)).success == [100.0]
    assert evaluate(method, images * 3 - 1, "clean", 5, 1, 0.1).success == [100.0]


@pytest.mark.parametrize("name", ["mask- 2", "mask-2 ", "mask-1_6", "noise-1e3", "shift-+1"])
def test_corruption_names_with_other_spellings_of_a_number_are_refused(name):
    with pytest.raises(ValueError, match="unknown corruption"):
        parse_corruption(name)


def test_corruption_names_with_plain_numbers_parse():
    assert parse_corruption("noise-0.6") == ("noise", 0.6)
    assert parse_corruption("noise-.5") == ("noise", 0.5)
    assert parse_corruption("mask-16") == ("mask", 16)


def test_build_method_refuses_hyperparameters_out_of_range_and_bad_shapes():
    vae = VAE((1, 4, 4), 2, "gaussian", "mlp", (8,), {"scale": 0.1})
    for name, change, message in [
        ("Hopfield", {"beta": 0.0}, "Hopfield: beta must be a finite number > 0, got 0.0"),
        ("GMM", {"sigma": -1.0}, "GMM: sigma must be a finite number > 0"),
        ("VAE-GMM", {"sigma": 0}, "VAE-GMM: sigma must be a finite number > 0"),
        ("VAE-GMM", {"num_steps": 0}, "VAE-GMM: num_steps must be a positive int"),
        ("VAE-BP-GMM", {"gamma": -1.0}, "VAE-BP-GMM: gamma must be a finite number >= 0"),
        ("VAE-BP-GMM", {"lr": 0.0}, "VAE-BP-GMM: lr must be a finite number > 0"),
        ("NTM", {"train_lr": float("inf")}, "NTM: train_lr must be a finite number > 0"),
    ]:
        with pytest.raises(ValueError, match=message):
            build_method(name, (1, 4, 4), vae, **change)
    with pytest.raises(TypeError, match=r"image_shape must be three positive ints"):
        build_method("GMM", (4, 4))
    with pytest.raises(TypeError, match=r"image_shape must be three positive ints"):
        build_method("GMM", (1, 0, 4))
    with pytest.raises(TypeError, match="vae must be a trained pyromem VAE, got str"):
        build_method("VAE-GMM", (1, 4, 4), "vae.ckpt")
    assert build_method("VAE-BP-GMM", (1, 4, 4), vae, gamma=0.0).hyperparameters["gamma"] == 0


@pytest.fixture
def no_selection(monkeypatch):
    """Fails the test if the table starts choosing a method's hyper-parameters."""

    def refuse(*args, **kwargs):
        raise AssertionError("the table started work before refusing its arguments")

    monkeypatch.setattr(tables_module, "select_hyperparameters", refuse)


def test_retrieval_table_refuses_bad_arguments_before_the_first_method_runs(no_selection):
    train, test = _images(40, seed=2), _images(30, seed=3)
    vae_other = VAE((1, 8, 8), 2, "gaussian", "mlp", (8,), {"scale": 0.1})
    bernoulli = VAE((1, 4, 4), 2, "bernoulli", "mlp", (8,))
    cases = [
        (dict(methods=["GMM", "GMM"]), "methods: each may be given once, got GMM"),
        (dict(methods="GMM"), "methods must be a list of method names, got str"),
        (dict(methods=[]), "methods must not be empty"),
        (dict(methods=["GMM", "Foo"]), "unknown method 'Foo'"),
        (dict(methods=["GMM", "VAE-GMM"]), "VAE-GMM works on VAE codes"),
        (
            dict(methods=["GMM", "VAE-GMM"], vae=vae_other),
            r"the vae takes images of shape \(1, 8, 8\)",
        ),
        (dict(methods=["GMM", "VAE-BP-GMM"], vae=bernoulli), "VAE-BP-GMM score the images"),
        (dict(corruptions=["clean", "clean"]), "corruptions: each may be given once"),
        (dict(corruptions=["clean", "mask-9"]), "corruptions: 'mask-9' does not apply here"),
        (dict(corruptions=[]), "corruptions must not be empty"),
        (dict(memory_size=1), "memory_size must be >= 2, got 1"),
        (dict(seeds=0), "seeds must be a positive int"),
        (dict(selection_seeds=0), "selection_seeds must be a positive int"),
        (dict(threshold_fraction=2), r"threshold_fraction must lie in \(0, 1\]"),
        (dict(corruptions=["noise-0.2"], test_images=test * 2), r"test_images must take values"),
        (
            dict(
                methods=["GMM", "VAE-GMM"],
                vae=VAE((1, 4, 4), 2, "gaussian", "mlp", (8,)),
                test_images=test.double(),
                train_images=train.double(),
            ),
            "train_images is torch.float64 but the parameters of VAE are torch.float32",
        ),
    ]
    for change, message in cases:
        args = dict(
            methods=["GMM"],
            corruptions=["clean"],
            train_images=train,
            test_images=test,
            vae=None,
            memory_size=5,
            seeds=1,
            selection_seeds=1,
            threshold_fraction=0.5,
        )
        args.update(change)
        methods, corruptions = args.pop("methods"), args.pop("corruptions")
        train_images, test_images = args.pop("train_images"), args.pop("test_images")
        with pytest.raises((ValueError, TypeError), match=message):
            retrieval_table(methods, corruptions, train_images, test_images, **args)


def test_retrieval_table_rates_are_exact_shares():
    train, test = _images(40, seed=2), _images(30, seed=3)
    table = retrieval_table(
        ["GMM"], ["mask-2"], train, test, memory_size=20, seeds=2, selection_seeds=1
    )
    per_seed = table["results"]["GMM"]["mask-2"]["per_seed"]
    assert all(rate / 5 == round(rate / 5) for rate in per_seed)  # multiples of 100 / 20


def test_capacity_sweep_skips_sizes_above_either_split_and_checks_before_work(
    monkeypatch,
):
    train, test = _images(12, seed=4), _images(30, seed=5)
    lines = []
    sweep = capacity_sweep(
        ["GMM"],
        train,
        test,
        sizes=(5, 20),
        corruption="clean",
        seeds=1,
        selection_seeds=1,
        log=lines.append,
    )
    # N = 20 fits the test split but not the train split: skipped, not a failure midway
    assert sweep["sizes"] == [5] and sweep["skipped"] == [20]
    assert any(line.startswith("N = 5: [1/1]") for line in lines), lines  # cell progress

    def refuse(*args, **kwargs):
        raise AssertionError("the sweep started work before refusing its arguments")

    monkeypatch.setattr("pyromem.retrieval.capacity.retrieval_table", refuse)
    for change, message in [
        (dict(sizes=(5, 1)), "sizes must be >= 2, got 1"),
        (dict(sizes=(5, 5)), "distinct"),
        (dict(sizes=5), "sizes must be a list of ints"),
        (dict(sizes=(50,)), "sizes: none of"),
        (dict(methods=["GMM", "Foo"]), "unknown method 'Foo'"),
        (dict(corruption="mask-9"), "'mask-9' does not apply here"),
        (dict(corruption=["clean"]), "corruption must be one corruption name"),
        (dict(seeds=0), "seeds must be a positive int"),
    ]:
        args = dict(methods=["GMM"], sizes=(5,), corruption="clean", seeds=1)
        args.update(change)
        methods = args.pop("methods")
        with pytest.raises((ValueError, TypeError), match=message):
            capacity_sweep(methods, train, test, **args)
