"""Bad input left over by earlier audits: the shapes of the images a retrieval method reads, an
empty batch dim of the Gaussian-mixture memory, and a non-finite memory read by
``spatial_read`` with its value checks on. Each is named in one line before any work, or (an
empty batch) answered with an empty result of the right shape, and valid input gives what it
gave before."""

import re

import numpy as np
import pytest
import torch
import torch.distributions as td

from pyromem.memory import GaussianMixtureMemory, spatial_read
from pyromem.models import VAE
from pyromem.retrieval import (
    ContentReader,
    FixedPointReader,
    MemN2NReader,
    build_method,
)

SHAPE = (1, 4, 4)
ALL_METHODS = [
    "GMM",
    "Hopfield",
    "NTM",
    "MemN2N",
    "VAE-GMM",
    "VAE-Hopfield",
    "VAE-BP-GMM",
    "VAE-PC-GMM",
    "VAE-NTM",
    "VAE-MemN2N",
    "VAE-GMM*",
]
TRAINED = {"NTM", "MemN2N", "VAE-NTM", "VAE-MemN2N", "VAE-GMM*"}


def _images(count, shape=SHAPE, seed=0):
    return torch.rand((count, *shape), generator=torch.Generator().manual_seed(seed))


def _method(name):
    torch.manual_seed(0)
    vae = VAE(SHAPE, 2, "gaussian", "mlp", (8,), {"scale": 0.1}) if name[:4] == "VAE-" else None
    method = build_method(name, SHAPE, vae, **({"train_steps": 1} if name in TRAINED else {}))
    if name == "VAE-GMM*":  # retrieves only once fit
        method.fit(_images(12, seed=3), memory_size=4, generator=torch.Generator().manual_seed(0))
    return method


def _refuse_work(method):
    """Make any embedding of the images (pixels or the VAE's encoder) fail the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("the method started work before checking its arguments")

    method.embed = refuse
    if getattr(method, "vae", None) is not None:
        method.vae.encoder.register_forward_pre_hook(refuse)


# 1. Method.retrieve / retrieve_many and the readers: the shapes of the images


@pytest.mark.parametrize("name", ALL_METHODS)
def test_retrieve_names_images_of_a_wrong_shape_before_any_work(name):
    # before: a raw IndexError (NTM and MemN2N on flattened images, VAE-BP-GMM on a query
    # without its batch dim), a read without a word (VAE-BP-GMM and VAE-GMM* took stored
    # images without their batch dim for a memory; the pixel methods read queries and stored
    # images of another size than image_shape), or a message naming "x" or "z", not the argument
    method = _method(name)
    _refuse_work(method)
    queries, stored = _images(3), _images(6, seed=1)
    shape = r"\(1, 4, 4\)"
    bad = [
        ((queries[0], stored), rf"queries must have shape \(B, 1, 4, 4\) .*got {shape}"),
        ((queries, stored[0]), rf"stored must have shape \(N, 1, 4, 4\) .*got {shape}"),
        (
            (_images(3, (1, 5, 5)), _images(6, (1, 5, 5))),
            rf"queries must have shape \(B, 1, 4, 4\) \({re.escape(name)} reads images of shape "
            rf"\(1, 4, 4\)\), got \(3, 1, 5, 5\)",
        ),
        ((queries, _images(6, (1, 5, 5))), r"stored must have shape .*got \(6, 1, 5, 5\)"),
        ((queries.flatten(1), stored.flatten(1)), r"queries must have shape .*got \(3, 16\)"),
        ((queries, stored[:0]), r"stored must have shape \(N >= 1, 1, 4, 4\).*\(0, 1, 4, 4\)"),
    ]
    for (q, m), match in bad:
        with pytest.raises(ValueError, match=match):
            method.retrieve(q, m)
    with pytest.raises(TypeError, match=r"queries must be a floating-point torch.Tensor of"):
        method.retrieve((queries * 255).long(), stored)
    with pytest.raises(TypeError, match=r"queries is torch.float64 but"):
        method.retrieve(queries.double(), stored)
    many = [
        ((queries[None], stored), r"stored must have shape \(S, N, 1, 4, 4\) .*\(6, 1, 4, 4\)"),
        (
            (queries.expand(2, 3, *SHAPE), stored.expand(3, 6, *SHAPE)),
            r"stored must have shape \(2, N, 1, 4, 4\), one memory per leading index of "
            r"queries \(2, 3, 1, 4, 4\), got \(3, 6, 1, 4, 4\)",
        ),
        ((queries[None][:0], stored[None][:0]), r"queries must have shape \(S >= 1, B,"),
    ]
    for (q, m), match in many:
        with pytest.raises(ValueError, match=match):
            method.retrieve_many(q, m)


def test_gmm_retrieve_is_unchanged_on_valid_images():
    # eq. 11 by hand: z <- sum_k softmax_k(-|z - M_k|^2 / 2 sigma^2) M_k, from the query
    queries, stored = _images(4).double(), _images(7, seed=1).double()
    sigma, steps = 0.3, 3
    method = build_method("GMM", SHAPE, sigma=sigma, num_steps=steps)
    retrieved, memory = method.retrieve(queries, stored)
    z, patterns = queries.flatten(1).numpy(), stored.flatten(1).numpy()
    for _ in range(steps):
        logits = -((z[:, None] - patterns[None]) ** 2).sum(-1) / (2 * sigma**2)
        weights = np.exp(logits - logits.max(-1, keepdims=True))
        z = (weights / weights.sum(-1, keepdims=True)) @ patterns
    assert retrieved.shape == (4, 16) and memory.shape == (7, 16)
    np.testing.assert_allclose(retrieved.numpy(), z, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(memory, stored.flatten(1))
    many, _ = method.retrieve_many(queries.expand(2, 4, *SHAPE), stored.expand(2, 7, *SHAPE))
    torch.testing.assert_close(many, retrieved.expand(2, 4, 16))


def test_ntm_and_vae_gmm_retrieve_are_unchanged_on_valid_images():
    queries, stored = _images(3), _images(5, seed=1)
    # the NTM's content addressing with its initial key strength 1: softmax(cos(x, M_k)) @ M
    retrieved, _ = build_method("NTM", SHAPE).retrieve(queries, stored)
    x, m = queries.flatten(1), stored.flatten(1)
    cosine = (x / x.norm(dim=-1, keepdim=True)) @ (m / m.norm(dim=-1, keepdim=True)).T
    torch.testing.assert_close(retrieved, cosine.softmax(-1) @ m)
    # VAE-GMM: the fixed point on the encoder's means
    method = _method("VAE-GMM")
    retrieved, memory = method.retrieve(queries, stored, trajectory=False)
    with torch.no_grad():
        codes, patterns = method.vae.encoder(queries)[0], method.vae.encoder(stored)[0]
    torch.testing.assert_close(memory, patterns)
    torch.testing.assert_close(retrieved, FixedPointReader("balanced", 1.0, 10)(codes, patterns))


@pytest.mark.parametrize("name", ALL_METHODS)
def test_an_empty_batch_of_queries_reads_nothing_for_every_method(name):
    # before: VAE-BP-GMM failed in a reshape ("cannot reshape tensor of 0 elements"), and
    # VAE-PC-GMM refused "x is an empty batch", while the other methods read nothing
    method = _method(name)
    stored = _images(6, seed=1)
    width = 2 if name[:4] == "VAE-" else 16
    retrieved, memory, path = method.retrieve(_images(3)[:0], stored, trajectory=True)
    assert retrieved.shape == (0, width)
    torch.testing.assert_close(memory, method.embed(stored))
    assert len(path) >= 2 and all(z.shape == (0, width) for z in path)
    if name[:4] == "VAE-" and name not in TRAINED:  # the refinements: T + 1 iterates
        assert len(path) == method.hyperparameters["num_steps"] + 1
    many, memories = method.retrieve_many(
        _images(2)[:0].expand(2, 0, *SHAPE), stored.expand(2, 6, *SHAPE)
    )
    assert many.shape == (2, 0, width) and memories.shape == (2, 6, width)


def test_readers_name_the_argument_and_both_shapes_or_dtypes():
    memory = torch.rand(5, 16)
    for reader in (FixedPointReader(), ContentReader(16), MemN2NReader(16, 4)):
        # before: a raw RuntimeError from linalg.vector_norm or a Linear for integer queries
        with pytest.raises(TypeError, match=r"queries must be a floating-point torch.Tensor"):
            reader(torch.ones(3, 16, dtype=torch.long), memory)
        with pytest.raises(ValueError, match=r"queries must have shape \(B, D\).*got \(16,\)"):
            reader(torch.rand(16), memory)
        with pytest.raises(
            ValueError,
            match=r"same width D, got queries \(3, 25\) and memory \(5, 16\)",
        ):
            reader(torch.rand(3, 25), memory)
        # before: "expected m1 and m2 to have the same dtype" from a matmul
        with pytest.raises(TypeError, match="queries is torch.float64 but memory is torch.float32"):
            reader(torch.rand(3, 16).double(), memory)
    # before: torch's "mat1 and mat2 must have the same dtype" from the embeddings
    with pytest.raises(TypeError, match="memory is torch.float64 but the parameters of MemN2N"):
        MemN2NReader(16, 4)(torch.rand(3, 16).double(), memory.double())
    # before: the mixture's message, with a shape (1, 1, 0, 16) the caller never gave
    with pytest.raises(ValueError, match=r"at least one pattern, got shape \(2, 0, 16\)"):
        FixedPointReader()(torch.rand(2, 3, 16), torch.rand(2, 0, 16))
    with pytest.raises(ValueError, match=r"width 16, that of the reader: .*\(3, 25\)"):
        MemN2NReader(16, 4)(torch.rand(3, 25), torch.rand(5, 25))
    # valid input as before: a key-less NTM reads float64 (its strength is a 0-dim scalar)
    x, m = torch.rand(3, 16).double(), memory.double()
    cosine = (x / x.norm(dim=-1, keepdim=True)) @ (m / m.norm(dim=-1, keepdim=True)).T
    torch.testing.assert_close(ContentReader(16)(x, m), cosine.softmax(-1) @ m)


# 2. GaussianMixtureMemory: empty batch dims


def _mixture_truth(memory, scale):
    """p(z; M) of eq. 9 with sigma I, by torch.distributions."""
    components = td.Independent(td.Normal(memory, scale), 1)
    mixing = td.Categorical(logits=torch.zeros(memory.shape[:-1], dtype=memory.dtype))
    return td.MixtureSameFamily(mixing, components)


COVARIANCES = [
    {"scale": 0.5},
    {"precision": torch.tensor([1.0, 2.0, 3.0])},
    {"precision_matrix": torch.eye(3) * 2},
    {"scale": 0.5, "weights": "hopfield"},
]


@pytest.mark.parametrize("validate_args", [False, True])
@pytest.mark.parametrize("kwargs", COVARIANCES)
@pytest.mark.parametrize("batch", [(0,), (2, 0), (0, 1)])
def test_a_memory_with_an_empty_batch_dim_gives_empty_results(batch, kwargs, validate_args, device):
    # before: "cannot reshape tensor of 0 elements" from torch's constraint check under
    # validation, else "permute(sparse_coo): number of dimensions ..." from the first query
    kwargs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in kwargs.items()}
    memory = torch.randn(batch + (5, 3), device=device)
    prior = GaussianMixtureMemory(memory, validate_args=validate_args, **kwargs)
    assert prior.batch_shape == batch
    z = torch.zeros(batch + (3,), device=device)
    assert prior.log_prob(z).shape == batch
    assert prior.energy(z).shape == batch
    assert prior.responsibilities(z).shape == batch + (5,)
    assert prior.fixed_point_step(z).shape == batch + (3,)
    assert prior.fixed_point_step(z, 0.1).shape == batch + (3,)
    out, path = prior.fixed_point(z, 2, trajectory=True)
    assert out.shape == batch + (3,) and [p.shape for p in path] == [batch + (3,)] * 3
    assert prior.sample().shape == batch + (3,)
    assert prior.sample((4,)).shape == (4,) + batch + (3,)
    assert prior.mean.shape == prior.variance.shape == batch + (3,)


@pytest.mark.parametrize("validate_args", [False, True])
def test_empty_samples_and_expands_to_an_empty_batch_are_empty(validate_args, device):
    # before: "cannot sample n_sample <= 0 samples" from Categorical, and the permute error
    memory = torch.randn(2, 5, 3, device=device)
    prior = GaussianMixtureMemory(memory, scale=0.5, validate_args=validate_args)
    assert prior.sample((0,)).shape == (0, 2, 3)
    assert prior.sample((3, 0)).shape == (3, 0, 2, 3)
    expanded = prior.expand((0, 2))
    assert expanded.log_prob(torch.zeros(0, 2, 3, device=device)).shape == (0, 2)
    assert expanded.fixed_point_step(torch.zeros(4, 0, 2, 3, device=device)).shape == (4, 0, 2, 3)
    # queries with an empty batch dim against a batch of memories (these worked before)
    assert prior.log_prob(torch.zeros(0, 2, 3, device=device)).shape == (0, 2)
    batched = GaussianMixtureMemory(memory[:, None], scale=0.5)
    assert batched.fixed_point(torch.zeros(2, 0, 3, device=device), 3).shape == (2, 0, 3)


def test_a_memory_without_patterns_is_still_a_one_line_error():
    for memory in (torch.zeros(0, 3), torch.zeros(2, 0, 3), torch.zeros(0, 0, 3)):
        with pytest.raises(ValueError, match=r"memory must hold at least one pattern, got shape"):
            GaussianMixtureMemory(memory, scale=1.0)


def test_the_mixture_is_unchanged_on_batches_of_memories():
    # the batched product that the empty batch dims went through: against torch's mixture
    generator = torch.Generator().manual_seed(5)
    memory = torch.randn(2, 1, 5, 3, generator=generator, dtype=torch.float64)
    z = torch.randn(2, 4, 3, generator=generator, dtype=torch.float64)
    prior = GaussianMixtureMemory(memory, scale=0.7)
    torch.testing.assert_close(prior.log_prob(z), _mixture_truth(memory, 0.7).log_prob(z))
    expanded = GaussianMixtureMemory(memory[:, 0], scale=0.7).expand((4, 2))
    truth = _mixture_truth(memory[:, 0], 0.7).log_prob(z.transpose(0, 1))
    torch.testing.assert_close(expanded.log_prob(z.transpose(0, 1)), truth)
    # the full step is the responsibility-weighted mean of the patterns
    weights = prior.responsibilities(z)
    torch.testing.assert_close(prior.fixed_point_step(z), weights @ memory[:, 0])
    assert prior.sample((6,)).shape == (6, 2, 1, 3)


# 3. spatial_read: a memory holding NaN or inf with check_values on


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_spatial_read_refuses_a_non_finite_memory_when_checking_values(bad, device):
    # before: a NaN read without a word (its checks covered only the keys)
    memory = torch.rand(2, 1, 8, 8, device=device)
    memory[1, 0, 3, 4] = bad
    keys = torch.zeros(2, 3, 3, device=device)
    with pytest.raises(
        ValueError,
        match=r"memory must be finite, got 1 NaN or infinite values in a tensor of shape "
        r"\(2, 1, 8, 8\)",
    ):
        spatial_read(memory, keys, (4, 4))
    # without the checks, as the models train: read as before (no value is looked at)
    reads = spatial_read(memory, keys, (4, 4), check_values=False)
    assert reads.shape == (2, 3, 1, 4, 4) and not torch.isfinite(reads[1]).all()
    torch.testing.assert_close(reads[0, 0, 0], memory[0, 0, 2:6, 2:6])


def test_spatial_read_without_value_checks_reads_no_value():
    # a meta tensor has no values: any read of them (a device sync on a GPU) would raise
    memory = torch.rand(2, 1, 8, 8, device="meta")
    keys = torch.zeros(2, 3, 3, device="meta")
    assert spatial_read(memory, keys, (4, 4), check_values=False).shape == (2, 3, 1, 4, 4)
    with pytest.raises(RuntimeError, match="meta"):  # the checks do read them
        spatial_read(memory, keys, (4, 4), check_values=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_spatial_read_without_value_checks_does_not_sync_a_gpu():
    memory = torch.rand(2, 1, 8, 8, device="cuda")
    keys = torch.zeros(2, 3, 3, device="cuda")
    torch.cuda.set_sync_debug_mode("error")
    try:
        reads = spatial_read(memory, keys, (4, 4), check_values=False)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.testing.assert_close(reads[0, 0], memory[0, :, 2:6, 2:6])


def test_spatial_read_of_a_finite_memory_is_unchanged_by_the_check():
    memory = torch.arange(72.0).reshape(2, 6, 6)
    read = spatial_read(memory, torch.zeros(1, 3), (2, 2))  # the zero key: the centred block
    torch.testing.assert_close(read[0], memory[:, 2:4, 2:4])
    keys = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        spatial_read(memory, keys, (3, 3)), spatial_read(memory, keys, (3, 3), check_values=False)
    )
