"""Input checks of MemoryVAE, GaussianMixtureMemory, the data plate and
LearnedPrecisionRetrieval: each bad input raises one line that names it, before any work."""

import math

import pyro
import pytest
import torch

from pyromem.infer import LearnedPrecisionRetrieval
from pyromem.memory import GaussianMixtureMemory
from pyromem.models import VAE, MemoryVAE, PixelMemory
from pyromem.models.plates import data_plate

SHAPE = (1, 4, 4)


def tiny_vae(device, latent_dim=3):
    return VAE(SHAPE, latent_dim=latent_dim, hidden=(8,)).to(device)


def images(device, n=5):
    return torch.bernoulli(torch.full((n,) + SHAPE, 0.5, device=device))


def loss(memory_vae, x, **kwargs):
    return pyro.infer.Trace_ELBO().differentiable_loss(
        memory_vae.model, memory_vae.guide, x, **kwargs
    )


# ---- 1. a memory of NaN or infinite values -------------------------------------------------


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_memory_vae_refuses_a_non_finite_memory_at_construction(device, value):
    memory = torch.randn(6, 3, device=device)
    memory[2, 1] = value
    with pytest.raises(ValueError, match="memory: expected finite values"):
        MemoryVAE(tiny_vae(device), memory)
    # a check of construction, not of Pyro's validation
    with pyro.validation_enabled(False), pytest.raises(ValueError, match="finite"):
        MemoryVAE(tiny_vae(device), memory)
    with pytest.raises(ValueError, match="memory: expected finite values"):
        PixelMemory(SHAPE, memory.new_zeros(6, 16).fill_(value))
    # a finite memory builds and gives a finite loss
    memory[2, 1] = 0.0
    assert torch.isfinite(loss(MemoryVAE(tiny_vae(device), memory), images(device)))


def test_gaussian_mixture_refuses_an_infinite_memory_under_validation(device):
    memory = torch.randn(6, 4, device=device)
    memory[3] = math.inf
    with pytest.raises(ValueError, match=r"memory must be finite, got 4 NaN or infinite values"):
        GaussianMixtureMemory(memory, scale=1.0, validate_args=True)
    with pyro.validation_enabled(True), pytest.raises(ValueError, match="memory must be finite"):
        GaussianMixtureMemory(memory, scale=1.0)
    # NaN is refused too (by the memory's constraint)
    memory[3] = math.nan
    with pytest.raises(ValueError, match="memory"):
        GaussianMixtureMemory(memory, scale=1.0, validate_args=True)
    # validation off: no check (no device sync), as for every other value
    memory[3] = math.inf
    GaussianMixtureMemory(memory, scale=1.0, validate_args=False)
    with pyro.validation_enabled(False):
        GaussianMixtureMemory(memory, scale=1.0)
    # a finite memory whose sum overflows is accepted
    big = torch.full((6, 4), 3e38, device=device)
    prior = GaussianMixtureMemory(big, scale=1.0, validate_args=True)
    assert prior.num_patterns == 6


# ---- 2. scale and precision: one covariance ------------------------------------------------


def test_memory_vae_refuses_both_scale_and_precision(device):
    vae, memory = tiny_vae(device), torch.randn(6, 3, device=device)
    precision = torch.ones(3, device=device)
    match = r"give one of scale and precision, not both, got scale=0.5 and a precision of shape"
    with pytest.raises(ValueError, match=match):
        MemoryVAE(vae, memory, scale=0.5, precision=precision)
    with pytest.raises(ValueError, match=r"not both, got scale=1.0 .*shape \(3, 3\)"):
        MemoryVAE(vae, memory, scale=1.0, precision=torch.eye(3, device=device))
    with pytest.raises(ValueError, match="give one of scale and precision, not both"):
        PixelMemory(SHAPE, scale=0.5, precision=torch.ones(16))
    # the defaults: σ = 1 without a precision, the precision alone with one
    assert MemoryVAE(vae, memory).prior().scale.item() == 1.0
    assert MemoryVAE(vae, memory, scale=0.5).prior().scale.item() == 0.5
    prior = MemoryVAE(vae, memory, precision=precision).prior()
    assert prior.scale is None and torch.equal(prior.precision, precision)
    assert PixelMemory(SHAPE).scale == 1.0


# ---- 3. slot_weights and encode check their images -----------------------------------------


def test_slot_weights_and_encode_check_their_images(device):
    memory_vae = MemoryVAE(tiny_vae(device), torch.randn(6, 3, device=device), scale=0.5)
    x = images(device)
    with pytest.raises(ValueError, match=r"x must take values in \[0, 1\].*got \[0, 255\]"):
        memory_vae.slot_weights(x * 255)
    with pytest.raises(ValueError, match="x contains NaN or infinite values"):
        memory_vae.slot_weights(x * math.nan)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 1, 4, 4\)"):
        memory_vae.slot_weights(x[..., :3])
    with pytest.raises(TypeError, match="x is torch.float64 but the model's parameters are"):
        memory_vae.slot_weights(x.double())
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        memory_vae.slot_weights(x.tolist())
    with pytest.raises(ValueError, match="images contains NaN or infinite values"):
        memory_vae.encode(x * math.nan)
    with pytest.raises(ValueError, match=r"images must take values in \[0, 1\]"):
        memory_vae.encode(x * 255)
    with pytest.raises(ValueError, match="x: on meta, but the model's parameters are on"):
        memory_vae.slot_weights(x.to("meta"))
    # good images, and the memory= argument, as before
    weights = memory_vae.slot_weights(x)
    assert weights.shape == (5, 6)
    torch.testing.assert_close(weights.sum(-1), torch.ones(5, device=device))
    other = torch.randn(2, 3, device=device)
    assert memory_vae.slot_weights(x, other).shape == (5, 2)
    torch.testing.assert_close(memory_vae.encode(x), memory_vae.vae.encoder(x)[0])
    # only the values wait for Pyro's validation, as in model() and write()
    with pyro.validation_enabled(False):
        assert memory_vae.slot_weights(x * 255).shape == (5, 6)


def test_pixel_memory_encode_checks_its_images_and_flattens_them():
    pixels = PixelMemory(SHAPE, scale=0.5)
    x = torch.rand((3,) + SHAPE)
    assert torch.equal(pixels.encode(x), x.flatten(1))
    with pytest.raises(ValueError, match=r"images must have shape \(batch, 1, 4, 4\)"):
        pixels.encode(x.flatten(1))
    with pytest.raises(ValueError, match="images contains NaN"):
        pixels.encode(x * math.nan)
    pixels.write(x)
    assert pixels.slot_weights(x).argmax(-1).tolist() == [0, 1, 2]


def test_model_and_pixel_guide_check_the_device_and_the_one_batch_dim(device):
    memory_vae = MemoryVAE(tiny_vae(device), torch.randn(6, 3, device=device), scale=0.5)
    x = images(device)
    with pytest.raises(ValueError, match="x: on meta, but the model's parameters are on"):
        memory_vae.model(x.to("meta"))
    # a pixel memory has no parameters, hence no device of its own to hold x to
    pixels = PixelMemory(SHAPE, scale=0.5)
    pixels.write(torch.rand((4,) + SHAPE))
    for program, batch in ((memory_vae.model, x), (pixels.guide, x.cpu())):
        with pytest.raises(ValueError, match=r"x must have shape \(batch, 1, 4, 4\), got \(1, 5,"):
            program(batch[None])
        with pyro.poutine.trace() as tracer:
            program(batch)
        assert tracer.trace.nodes["z"]["value"].shape[0] == 5


# ---- 4. dtype and device of the memory and the precision -----------------------------------


def test_memory_vae_checks_the_dtype_and_device_of_memory_and_precision(device):
    vae = tiny_vae(device)
    memory = torch.randn(6, 3, device=device)
    match = "memory is torch.float64 but the model's parameters are torch.float32"
    with pytest.raises(TypeError, match=match):
        MemoryVAE(vae, memory.double())
    match = "precision is torch.float64 but the model's parameters are torch.float32"
    with pytest.raises(TypeError, match=match):
        MemoryVAE(vae, memory, precision=torch.ones(3, device=device, dtype=torch.float64))
    with pytest.raises(TypeError, match=match):
        MemoryVAE(vae, precision=torch.eye(3, device=device, dtype=torch.float64))
    with pytest.raises(ValueError, match="memory: on meta, but the model's parameters are on"):
        MemoryVAE(vae, memory.to("meta"))
    with pytest.raises(ValueError, match="precision: on meta, but the model's parameters are"):
        MemoryVAE(vae, memory, precision=torch.ones(3, device="meta"))
    # the same wording as slot_weights(memory=...)
    good = MemoryVAE(vae, memory)
    with pytest.raises(TypeError, match="memory is torch.float64 but the model's parameters"):
        good.slot_weights(images(device), memory.double())
    # a float64 VAE takes float64 memories and precisions
    vae64 = tiny_vae(device).double()
    model = MemoryVAE(vae64, memory.double(), precision=torch.ones(3, device=device).double())
    assert torch.isfinite(loss(model, images(device).double()))


def test_pixel_memory_checks_its_precision_against_its_memory():
    memory = torch.rand(3, 16)
    with pytest.raises(TypeError, match="precision is torch.float64 but the memory is"):
        PixelMemory(SHAPE, memory, precision=torch.ones(16, dtype=torch.float64))
    PixelMemory(SHAPE, memory.double(), precision=torch.ones(16, dtype=torch.float64))


# ---- 5. num_data of the data plate ---------------------------------------------------------


@pytest.mark.parametrize("num_data", [100.5, 20.0, "100", True, torch.tensor(20)])
def test_data_plate_refuses_a_num_data_that_is_not_an_int(device, num_data):
    x = images(device)
    with pytest.raises(TypeError, match=r"num_data must be a positive int or None, got"):
        data_plate(x, num_data)
    memory_vae = MemoryVAE(tiny_vae(device), torch.randn(6, 3, device=device))
    with pytest.raises(TypeError, match="num_data must be a positive int"):
        loss(memory_vae, x, num_data=num_data)


def test_data_plate_num_data_bounds_and_scale(device):
    x = images(device)
    with pytest.raises(ValueError, match="num_data must be a positive int or None, got 0"):
        data_plate(x, 0)
    with pytest.raises(ValueError, match="num_data must be at least the batch size 5, got 3"):
        data_plate(x, 3)
    assert data_plate(x, 5).size == 5 and data_plate(x, None).size == 5
    memory_vae = MemoryVAE(tiny_vae(device), torch.randn(6, 3, device=device))
    pyro.set_rng_seed(0)
    whole = loss(memory_vae, x)
    pyro.set_rng_seed(0)
    scaled = loss(memory_vae, x, num_data=20)
    torch.testing.assert_close(scaled, whole * 4)


# ---- 6. LearnedPrecisionRetrieval.fit checks its tensors before the first step -------------


@pytest.mark.parametrize("full", [False, True])
@pytest.mark.parametrize("bad", ["z_queries", "memory", "targets"])
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_learned_precision_fit_refuses_non_finite_values_before_a_step(full, bad, value):
    retrieval = LearnedPrecisionRetrieval(4, full=full)
    before = [p.detach().clone() for p in retrieval.parameters()]
    args = {"z_queries": torch.randn(5, 4), "memory": torch.randn(6, 4)}
    args["targets"] = args["memory"][:5].clone()
    args[bad][1, 2] = value
    with pytest.raises(ValueError, match=f"{bad} must be finite, got NaN or infinite values"):
        retrieval.fit(args["z_queries"], args["memory"], args["targets"], epochs=2)
    for p, q in zip(retrieval.parameters(), before, strict=True):
        assert torch.equal(p, q)


def test_learned_precision_fit_checks_types_widths_and_dtypes():
    retrieval = LearnedPrecisionRetrieval(4)
    z, memory = torch.randn(5, 4), torch.randn(6, 4)
    targets = memory[:5]
    for args, name in (
        ((z.tolist(), memory, targets), "z_queries"),
        ((z, memory.tolist(), targets), "memory"),
        ((z, memory, targets.tolist()), "targets"),
        ((z, memory, targets.long()), "targets"),
    ):
        with pytest.raises(TypeError, match=f"{name} must be a floating-point torch.Tensor"):
            retrieval.fit(*args, epochs=1)
    with pytest.raises(ValueError, match=r"memory must have shape \(\.\.\., 4\).*got \(6, 3\)"):
        retrieval.fit(z, memory[:, :3], targets, epochs=1)
    with pytest.raises(ValueError, match=r"z_queries must have shape \(\.\.\., 4\).*\(5, 3\)"):
        retrieval.fit(z[:, :3], memory, targets[:, :3], epochs=1)
    with pytest.raises(ValueError, match="targets must have the shape of z_queries"):
        retrieval.fit(z, memory, targets[:4], epochs=1)
    match = "targets is torch.float64 but the parameters of LearnedPrecisionRetrieval are"
    with pytest.raises(TypeError, match=match):
        retrieval.fit(z, memory, targets.double(), epochs=1)
    match = "z_queries is torch.float64 but the parameters of LearnedPrecisionRetrieval are"
    with pytest.raises(TypeError, match=match):
        retrieval.fit(z.double(), memory, targets, epochs=1)
    # good inputs train as before
    losses = retrieval.fit(z, memory, targets, epochs=3)
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
