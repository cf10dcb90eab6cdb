"""Bad input to the retrieval benchmark from Python: one line naming the argument, before any
work, rather than silent rates, a torch stack trace or a failure after earlier rows."""

import numpy as np
import pytest
import torch

from pyromem.models import VAE
from pyromem.retrieval import (
    ContentReader,
    FixedPointReader,
    MemN2NReader,
    build_method,
    candidates,
    capacity_sweep,
    check_corruptions,
    default_corruptions,
    dot_product_winners,
    evaluate,
    format_table,
    retrieval_success,
    retrieval_table,
    rms_distance,
    sample_memory,
    scale_unit,
    select_hyperparameters,
    select_threshold,
    train_reader,
)
from pyromem.retrieval import tables as tables_module
from tests.test_retrieval_checks import _images


def _gaussian_vae(shape=(1, 4, 4), net="mlp"):
    return VAE(shape, 2, "gaussian", net, (8,), {"scale": 0.1})


@pytest.fixture
def no_selection(monkeypatch):
    """Fails the test if the table starts choosing a method's hyper-parameters."""

    def refuse(*args, **kwargs):
        raise AssertionError("the table started work before refusing its arguments")

    monkeypatch.setattr(tables_module, "select_hyperparameters", refuse)


def test_evaluate_refuses_a_bernoulli_vae_for_grey_queries_rather_than_scoring_them():
    # the reads run without Pyro's value checks: a Bernoulli VAE scored grey levels and
    # VAE-BP-GMM reported 100 % without a word
    bernoulli = VAE((1, 4, 4), 2, "bernoulli", "mlp", (8,))
    method = build_method("VAE-BP-GMM", (1, 4, 4), bernoulli, num_steps=2)
    with pytest.raises(ValueError, match="VAE-BP-GMM score the images under the vae's likelihood"):
        evaluate(method, _images(20), "clean", 5, 1, threshold=0.1)
    binary = (_images(20) > 0.5).float()
    assert len(evaluate(method, binary, "clean", 5, 1, threshold=0.1).success) == 1


def test_evaluate_names_images_of_another_dtype_or_device_than_the_vae():
    method = build_method("VAE-GMM", (1, 4, 4), _gaussian_vae())
    with pytest.raises(TypeError, match="images is torch.float64 but the parameters of VAE"):
        evaluate(method, _images(20).double(), "clean", 5, 1, threshold=0.1)
    # a VAE on another device (here "meta", which needs no GPU) than the images
    elsewhere = build_method("VAE-GMM", (1, 4, 4), _gaussian_vae().to("meta"))
    with pytest.raises(ValueError, match="images: on cpu, but the vae's parameters are on meta"):
        evaluate(elsewhere, _images(20), "clean", 5, 1, threshold=0.1)


def test_retrieval_table_refuses_a_vae_on_another_device_before_the_first_row(no_selection):
    train, test = _images(30, seed=1), _images(30, seed=2)
    with pytest.raises(ValueError, match="train_images: on cpu, but the vae's parameters are"):
        retrieval_table(
            ["GMM", "VAE-GMM"],
            ["clean"],
            train,
            test,
            vae=_gaussian_vae().to("meta"),
            memory_size=5,
            seeds=1,
            selection_seeds=1,
        )


def test_vae_pc_gmm_refuses_a_vae_without_mlp_layers_before_the_first_row(no_selection):
    # the guide was first built at VAE-PC-GMM's first read, after the GMM row had run
    train, test = _images(30, (1, 8, 8), seed=1), _images(30, (1, 8, 8), seed=2)
    conv = VAE((1, 8, 8), 2, "gaussian", "conv", likelihood_kwargs={"scale": 0.1})
    logistic = VAE((1, 8, 8), 2, "discretized_logistic_mixture", "mlp", (8,))
    for vae, message in [(conv, "got net='conv'"), (logistic, r"decoder output \(15, 8, 8\)")]:
        with pytest.raises(ValueError, match=f"VAE-PC-GMM needs a VAE with net='mlp'.*{message}"):
            retrieval_table(
                ["GMM", "VAE-PC-GMM"],
                ["clean"],
                train,
                test,
                vae=vae,
                memory_size=5,
                seeds=1,
                selection_seeds=1,
            )
        with pytest.raises(ValueError, match="VAE-PC-GMM needs a VAE with net='mlp'"):
            build_method("VAE-PC-GMM", (1, 8, 8), vae)
    build_method("VAE-PC-GMM", (1, 8, 8), _gaussian_vae((1, 8, 8)))


def test_evaluate_refuses_a_memory_of_one_pattern_and_a_method_that_is_not_one():
    images = _images(20)
    gmm = build_method("GMM", (1, 4, 4), sigma=0.1)
    # one stored pattern is always the nearest: 100 % of any read, however wrong
    with pytest.raises(ValueError, match="memory_size must be >= 2, got 1"):
        evaluate(gmm, images, "noise-0.6", 1, 2, threshold=0.01)
    with pytest.raises(TypeError, match="method must be a Method, e.g. build_method"):
        evaluate("GMM", images, "clean", 5, 1, threshold=0.1)


def test_selection_refuses_unknown_methods_bad_units_and_callbacks_before_any_candidate():
    images = _images(20)
    with pytest.raises(ValueError, match="unknown method 'Foo'"):
        candidates("Foo", 1.0)
    for unit in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="unit must be a positive finite float"):
            candidates("Hopfield", unit)
    args = dict(threshold=0.1, unit=1.0, memory_size=5, seeds=1)
    with pytest.raises(ValueError, match="unknown method 'Foo'"):
        select_hyperparameters("Foo", images, ["clean"], **args)
    with pytest.raises(ValueError, match="VAE-GMM works on VAE codes"):
        select_hyperparameters("VAE-GMM", images, ["clean"], **args)
    # on_candidate was first called after the first candidate's evaluation
    with pytest.raises(TypeError, match="on_candidate: expected a callable or None, got int"):
        select_hyperparameters("GMM", images, ["clean"], on_candidate=5, **args)
    assert len(candidates("Hopfield", 0.5)) == 5


def test_duplicated_training_patterns_are_named_instead_of_a_threshold_of_zero():
    # a threshold and grid unit of 0 were refused later as a threshold or sigma of 0, which the
    # user never gave
    constant = torch.full((20, 1, 4, 4), 0.5)
    with pytest.raises(ValueError, match="train_images \\(in the pixel space of GMM\\).* is 0"):
        retrieval_table(["GMM"], ["clean"], constant, _images(20), memory_size=5, seeds=1)
    with pytest.raises(ValueError, match="train_vectors: the median distance .* is 0"):
        select_threshold(constant.flatten(1), 5)
    with pytest.raises(ValueError, match="vectors: the median distance .* is 0"):
        scale_unit(constant.flatten(1), 5)
    with pytest.raises(ValueError, match="memory_size must be >= 2, got 1"):
        scale_unit(_images(20).flatten(1), 1)  # no nearest other pattern: a unit of inf
    with pytest.raises(ValueError, match="vectors must have shape \\(B, D\\)"):
        scale_unit(_images(20))


def test_select_threshold_takes_numpy_sizes_and_names_a_bad_fraction():
    vectors = _images(20).flatten(1)
    threshold = select_threshold(vectors, 10, generator=torch.Generator().manual_seed(0))
    numpy_size = select_threshold(vectors, np.int64(10), generator=torch.Generator().manual_seed(0))
    assert numpy_size == threshold
    with pytest.raises(ValueError, match="fraction must be a number in \\(0, 1\\], got '0.5'"):
        select_threshold(vectors, 10, "0.5")


def test_generators_of_another_kind_are_named():
    for call in (
        lambda: sample_memory(10, 5, 0),
        lambda: sample_memory(10, 5, np.random.default_rng(0)),
        lambda: train_reader(ContentReader(16), torch.rand(10, 16), 5, 2, generator=3),
        lambda: select_threshold(torch.rand(10, 16), 5, generator=3),
    ):
        with pytest.raises(TypeError, match="generator must be a torch.Generator"):
            call()


def test_criteria_name_empty_memories_and_mixed_dtypes():
    empty = torch.zeros(0, 16)
    with pytest.raises(ValueError, match="memory must hold at least one pattern"):
        retrieval_success(empty, empty, torch.zeros(0, dtype=torch.long), 0.1)
    with pytest.raises(ValueError, match="patterns must hold at least one pattern"):
        dot_product_winners(empty)
    with pytest.raises(TypeError, match="x is torch.float32 but memory is torch.float64"):
        rms_distance(torch.rand(3, 16), torch.rand(4, 16).double())
    # an empty batch of queries against a memory is an empty outcome
    outcome = retrieval_success(empty, torch.rand(3, 16), torch.zeros(0, dtype=torch.long), 0.1)
    assert outcome.success.shape == (0,)


def test_readers_take_numpy_floats_and_refuse_infinite_or_zero_scales():
    # build_method takes any real number, and its readers refused a NumPy float32
    assert build_method("GMM", (1, 4, 4), sigma=np.float32(0.1)).reader.scale == pytest.approx(0.1)
    assert build_method("Hopfield", (1, 4, 4), beta=np.float32(4.0)).reader.scale == 0.5
    assert build_method("MemN2N", (1, 4, 4), ridge=np.float32(2.0)).reader.ridge == 2.0
    # an infinite scale weighs every pattern alike and read their mean without a word
    with pytest.raises(ValueError, match="scale must be a positive finite float, got inf"):
        FixedPointReader("balanced", float("inf"))
    with pytest.raises(ValueError, match="key_strength must be a positive finite float, got 0"):
        ContentReader(16, key_strength=0)


def test_readers_name_patterns_of_another_width_than_their_maps():
    with pytest.raises(ValueError, match="patterns must have width 16, that of the reader"):
        train_reader(MemN2NReader(16, 4), torch.rand(10, 25), 5, 2)
    with pytest.raises(ValueError, match="queries and memory must have width 16"):
        MemN2NReader(16, 4)(torch.rand(3, 25), torch.rand(5, 25))
    with pytest.raises(ValueError, match="queries and memory must have width 16"):
        ContentReader(16, key_dim=4)(torch.rand(3, 25), torch.rand(5, 25))
    assert ContentReader(16)(torch.rand(3, 25), torch.rand(5, 25)).shape == (3, 25)


def test_format_table_names_a_whole_table_or_an_unknown_key():
    results = {"GMM": {"clean": {"mean": 90.0, "std": 1.0, "nearest": {"mean": 95, "std": 0}}}}
    assert "90.0 ± 1.0" in format_table(results)
    assert "95.0 ± 0.0" in format_table(results, "nearest")
    with pytest.raises(ValueError, match="key must be None, 'nearest' or 'threshold'"):
        format_table(results, "success")
    with pytest.raises(ValueError, match="is not a summary with 'mean' and 'std'"):
        format_table({"results": results, "hyperparameters": {"GMM": {}}})
    with pytest.raises(ValueError, match="with the corruptions \\['clean'\\] in every row"):
        format_table({**results, "Hopfield": {"mask-2": results["GMM"]["clean"]}})


def test_capacity_sweep_names_a_log_that_is_not_callable():
    with pytest.raises(TypeError, match="log: expected a callable or None, got bool"):
        capacity_sweep(
            ["GMM"], _images(12), _images(12, seed=1), sizes=(5,), corruption="clean", log=True
        )


def test_corruption_helpers_name_a_bad_image_shape_or_a_lone_name():
    with pytest.raises(ValueError, match="image_shape must have 3 dims, got \\(4, 4\\)"):
        default_corruptions((4, 4))
    with pytest.raises(TypeError, match="corruptions must be a list of corruption names"):
        check_corruptions("clean", (1, 4, 4))
