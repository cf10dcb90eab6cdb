"""Bad inputs to the memory primitives and nets: each is named in one line, before any work,
instead of a NaN, a torch stack trace or a failure deep in a later call."""

import pytest
import torch
from torch import nn

from pyromem.memory import Addressing, GaussianMixtureMemory, similarity, spatial_read
from pyromem.nets import (
    MLP,
    ConvDecoder,
    ConvEncoder,
    ConvTrunk,
    GaussianLikelihood,
    MLPDecoder,
    MLPEncoder,
    make_likelihood,
)


@pytest.mark.parametrize("validate_args", [False, True])
@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"scale": float("inf")}, "scale"),
        ({"scale": 0.0}, "scale"),
        ({"scale": -1.0}, "scale"),
        ({"scale": float("nan")}, "scale"),
        ({"scale": 1.0, "weights": "hopfield", "beta": float("inf")}, "beta"),
        ({"scale": 1.0, "weights": "hopfield", "beta": 0.0}, "beta"),
        ({"scale": 1.0, "weights": "hopfield", "beta": -2.0}, "beta"),
    ],
)
def test_non_positive_or_infinite_scale_and_beta_are_named(kwargs, name, validate_args):
    # before: inf passed even under validation, and without it every value passed, and every
    # log density came out NaN (or, for beta <= 0, silently of another distribution)
    with pytest.raises(ValueError, match=f"{name} must be a positive finite float"):
        GaussianMixtureMemory(torch.randn(4, 2), validate_args=validate_args, **kwargs)


@pytest.mark.parametrize("name", ["scale", "beta"])
def test_infinite_tensor_scale_and_beta_are_named_under_validation(name):
    kwargs = {"scale": torch.tensor(1.0), "weights": "hopfield", "beta": torch.tensor(1.0)}
    kwargs[name] = torch.tensor(float("inf"))
    with pytest.raises(ValueError, match=f"{name} must be a positive finite float, got inf"):
        GaussianMixtureMemory(torch.randn(4, 2), validate_args=True, **kwargs)


@pytest.mark.parametrize("value", [torch.tensor(2), torch.tensor(True)])
def test_integer_or_bool_tensor_scale_is_a_type_error(value):
    # before: an int scale failed in pow(-2) with Hopfield weights, a bool one read as 1
    for kwargs in ({}, {"weights": "hopfield"}):
        with pytest.raises(TypeError, match="scale must be a float or a 0-dim floating-point"):
            GaussianMixtureMemory(torch.randn(4, 2), scale=value, **kwargs)


def test_scale_and_beta_on_another_device_than_the_memory_are_named():
    with pytest.raises(ValueError, match="scale: on meta, but the memory is on cpu"):
        GaussianMixtureMemory(torch.randn(4, 2), scale=torch.tensor(1.0, device="meta"))
    with pytest.raises(ValueError, match="beta: on meta, but the memory is on cpu"):
        GaussianMixtureMemory(
            torch.randn(4, 2), scale=1.0, weights="hopfield", beta=torch.tensor(1.0, device="meta")
        )


def test_infinite_alpha_is_named():
    # before: every step came out NaN
    prior = GaussianMixtureMemory(torch.randn(4, 2), scale=1.0)
    with pytest.raises(ValueError, match="alpha must be a positive finite float or None, got inf"):
        prior.fixed_point_step(torch.zeros(3, 2), float("inf"))


def test_zero_fixed_point_steps_still_check_the_query():
    # before: a query of the wrong width came back as the retrieval
    prior = GaussianMixtureMemory(torch.randn(4, 2), scale=1.0)
    with pytest.raises(ValueError, match=r"z must have shape \(\.\.\., 2\)"):
        prior.fixed_point(torch.zeros(3, 5), 0)
    z = torch.zeros(3, 2)
    assert prior.fixed_point(z, 0) is z


def test_similarity_names_a_query_on_another_device():
    with pytest.raises(ValueError, match="query: on meta, but the keys are on cpu"):
        similarity(torch.randn(5, 4), torch.randn(3, 4, device="meta"))


def _addressing(embedding_dim=4, prior="learned"):
    return Addressing(nn.Linear(6, 4), nn.Linear(7, 4), embedding_dim, prior=prior)


def test_addressing_names_keys_of_another_width_than_the_queries():
    # before: "mat1 and mat2 shapes cannot be multiplied" from inside the product
    addressing = _addressing()
    with pytest.raises(ValueError, match=r"keys and query_net\(x\).*\(5, 3\).*\(2, 4\)"):
        addressing.posterior_logits(torch.randn(5, 3), torch.randn(2, 7))
    with pytest.raises(ValueError, match=r"keys and prior_query.*\(5, 3\).*\(4,\)"):
        addressing.prior_logits(torch.randn(5, 3))


def test_addressing_names_an_embedding_dim_other_than_the_nets_width():
    addressing = _addressing(embedding_dim=5)
    keys = addressing.keys(torch.randn(3, 6))
    with pytest.raises(ValueError, match=r"keys and prior_query.*\(3, 4\).*\(5,\)"):
        addressing.prior_logits(keys)


def test_addressing_names_keys_of_another_dtype_or_shape():
    addressing = _addressing()
    with pytest.raises(TypeError, match=r"keys and query_net\(x\): expected one dtype"):
        addressing.posterior_logits(torch.randn(5, 4, dtype=torch.float64), torch.randn(2, 7))
    for prior in ("learned", "flat"):
        # before: 1-D keys scored as one slot with a deprecation warning, a list failed on .norm
        with pytest.raises(
            ValueError, match=r"keys: expected slot embeddings \(N, E\), got \(4,\)"
        ):
            _addressing(prior=prior).prior_logits(torch.randn(4))
        with pytest.raises(TypeError, match="keys must be a floating-point torch.Tensor"):
            _addressing(prior=prior).prior_logits([1.0, 2.0])


@pytest.mark.parametrize("memory_batch, keys_shape", [((2,), (2, 0, 3)), ((0,), (0, 4, 3))])
def test_spatial_read_of_no_reads_is_empty(memory_batch, keys_shape):
    # before: affine_grid's "Expected non-zero, positive output size"
    memory = torch.rand(memory_batch + (3, 8, 8))
    reads = spatial_read(memory, torch.randn(keys_shape), (4, 5))
    assert reads.shape == keys_shape[:-1] + (3, 4, 5)


@pytest.mark.parametrize(
    "make, x, name",
    [
        (lambda: MLP(4, (2,)), torch.randn(3, 4), "v"),
        (lambda: MLPEncoder((4,), 2), torch.randn(3, 4), "x"),
        (lambda: ConvEncoder((1, 8, 8), 2), torch.randn(3, 1, 8, 8), "x"),
        (lambda: ConvTrunk((1, 8, 8)), torch.randn(3, 1, 8, 8), "x"),
        (lambda: MLPDecoder(2, (1, 4, 4)), torch.randn(3, 2), "z"),
        (lambda: ConvDecoder(2, (1, 8, 8)), torch.randn(3, 2), "z"),
    ],
)
def test_nets_name_an_input_on_another_device(make, x, name):
    # before: torch's "Tensor on device meta is not on the expected device cpu!"
    with pytest.raises(ValueError, match=f"{name}: on meta, but the model's parameters are on cpu"):
        make()(x.to("meta"))


def test_conv_trunk_and_encoder_without_convolutions():
    # before: "zip() argument 2 is shorter than argument 1", though channels=() is allowed
    assert ConvTrunk((1, 8, 8), (), features=5)(torch.rand(3, 1, 8, 8)).shape == (3, 5)
    loc, scale = ConvEncoder((1, 8, 8), 2, channels=())(torch.rand(4, 3, 1, 8, 8))
    assert loc.shape == scale.shape == (4, 3, 2)


def test_gaussian_likelihood_names_params_on_another_device_than_its_scale():
    with pytest.raises(ValueError, match="params: on meta, but the learned scale is on cpu"):
        GaussianLikelihood((3,))(torch.randn(2, 3, device="meta"))


def test_make_likelihood_names_a_name_that_is_not_a_string():
    # before: "unhashable type: 'list'"
    with pytest.raises(ValueError, match=r"likelihood name must be one of .*got \['bernoulli'\]"):
        make_likelihood(["bernoulli"], (3,))
