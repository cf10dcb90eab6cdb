"""A new user's wrong calls of the models and refinements: one-line errors that name the
argument, raised where the mistake is made, and the memory each model fills read only once
it is filled."""

import math

import pyro
import pytest
import torch
from torch import nn

from pyromem.infer import GaussianRefinement, MAPRefinement, MemoryFixedPoint, PredictiveCoding
from pyromem.infer.learned_precision import LearnedPrecisionRetrieval
from pyromem.models import VAE, VMA, MemoryVAE, PixelMemory
from pyromem.models.vma import SoftAttentionVAE

SHAPE = (1, 4, 4)
SMALL = {"hidden": (8,), "latent_dim": 2, "embedding_dim": 4}
EMPTY = r"memory is empty: call set_memory\(memory\) or pass memory=M first"


def binary(n, seed=0):
    return torch.bernoulli(
        torch.full((n,) + SHAPE, 0.5), generator=torch.Generator().manual_seed(seed)
    )


def fixed_vma(**kwargs):
    return VMA(SHAPE, memory="fixed", memory_size=6, **SMALL, **kwargs)


# ---- 1. a fixed memory is read only once it is set ----------------------------------------


@pytest.mark.parametrize("build", [fixed_vma, lambda: SoftAttentionVAE(SHAPE, 6, "fixed", 2)])
def test_an_empty_fixed_memory_is_not_read(build):
    model, x = build(), binary(3)
    loss = pyro.infer.TraceEnum_ELBO(max_plate_nesting=1)
    calls = [
        lambda: loss.loss(model.model, model.guide, x),
        lambda: model.generate(3),
        lambda: model.slot_weights(x),
    ]
    if isinstance(model, VMA):
        calls += [lambda: model.address_posterior(x), lambda: model.address_prior()]
    for call in calls:
        with pytest.raises(ValueError, match=EMPTY):
            call()
    # a memory passed with the call is read as before
    assert model.generate(2, binary(6)).shape == (2,) + SHAPE


def test_a_set_fixed_memory_is_read_and_survives_a_state_dict():
    vma, memory = fixed_vma(), binary(6)
    vma.set_memory(memory)
    assert torch.equal(vma.resolve_memory(), memory)
    # every image read from slot 2 is generated from that slot, and slot 2 is memory[2]
    torch.manual_seed(0)
    from_own = vma.generate(4, slot=2)
    torch.manual_seed(0)
    assert torch.equal(from_own, vma.generate(4, memory, slot=2))
    # the set memory loads into a fresh model built from the config; an empty one stays empty
    fresh = VMA(**vma.config)
    fresh.load_state_dict(vma.state_dict())
    assert torch.equal(fresh.memory, memory)
    empty = VMA(**vma.config)
    empty.load_state_dict(VMA(**vma.config).state_dict())
    with pytest.raises(ValueError, match=EMPTY):
        empty.generate(1)
    # so does a MemoryVAE's written memory, which starts empty too
    vae = VAE(SHAPE, 2, hidden=(8,))
    written = MemoryVAE(vae)
    written.write(binary(3))
    loaded = MemoryVAE(vae)
    loaded.load_state_dict(written.state_dict())
    assert torch.equal(loaded.memory, written.memory)


def test_set_memory_keeps_the_memory_size_and_kind():
    vma = fixed_vma()
    with pytest.raises(ValueError, match=r"expected 6 slots \(memory_size\), got 5"):
        vma.set_memory(binary(5))
    with pytest.raises(ValueError, match="memory='fixed' needs memory_size"):
        VMA(SHAPE, memory="fixed", **SMALL)
    learned = VMA(SHAPE, memory="learned", memory_size=6, **SMALL)
    before = learned.memory.detach().clone()
    with pytest.raises(ValueError, match="learned .* not set"):
        learned.set_memory(binary(6))
    assert torch.equal(learned.memory.detach(), before)
    with pytest.raises(ValueError, match="no memory of its own"):
        VMA(SHAPE, **SMALL).set_memory(binary(6))
    with pytest.raises(ValueError, match=r"fills its memory with write\(images\)"):
        MemoryVAE(VAE(SHAPE, 2, hidden=(8,))).set_memory(torch.zeros(3, 2))


# ---- 2. every model generates ------------------------------------------------------------


def test_memory_vae_generates_from_its_memory_prior():
    torch.manual_seed(0)
    vae = VAE(SHAPE, latent_dim=2, hidden=(8,))
    net = MemoryVAE(vae, scale=1e-4)
    with pytest.raises(ValueError, match=r"memory is empty: call write\(images\)"):
        net.generate(3)
    codes = net.write(binary(4))
    images = net.generate(50)
    assert images.shape == (50,) + SHAPE
    # with a narrow prior each image is the decoder's mean at one of the stored codes
    means = vae.decode(codes).mean.flatten(1)
    distance = torch.cdist(images.flatten(1), means).min(-1).values
    assert distance.max() < 1e-3
    # codes passed with the call replace the memory
    other = torch.full((1, 2), 3.0)
    passed = net.generate(2, other)
    assert torch.allclose(passed, vae.decode(other).mean.expand(2, *SHAPE), atol=1e-3)


def test_pixel_memory_generates_stored_images_with_pixel_noise():
    torch.manual_seed(0)
    stored = torch.rand(3, *SHAPE)
    pixels = PixelMemory(SHAPE, scale=0.05)
    with pytest.raises(ValueError, match=r"memory is empty: call write\(images\)"):
        pixels.generate(3)
    pixels.write(stored)
    images = pixels.generate(2000)
    assert images.shape == (2000,) + SHAPE
    nearest = torch.cdist(images.flatten(1), stored.flatten(1)).argmin(-1)
    # each stored image drawn about a third of the time (balanced weights), the noise σ
    counts = torch.bincount(nearest, minlength=3).float() / 2000
    assert torch.allclose(counts, torch.full((3,), 1 / 3), atol=0.05)
    noise = images.flatten(1) - stored.flatten(1)[nearest]
    assert math.isclose(noise.std().item(), 0.05, rel_tol=0.05)


# ---- 3. argument checks --------------------------------------------------------------------


def generators():
    vma = fixed_vma()
    vma.set_memory(binary(6))
    memory_vae = MemoryVAE(VAE(SHAPE, 2, hidden=(8,)))
    memory_vae.write(binary(3))
    pixels = PixelMemory(SHAPE)
    pixels.write(binary(3))
    soft = SoftAttentionVAE(SHAPE, 6, "fixed", 2)
    soft.set_memory(binary(6))
    return [VAE(SHAPE, 2, hidden=(8,)), vma, soft, memory_vae, pixels]


@pytest.mark.parametrize("num_samples", [0, -1, -2])
def test_generate_refuses_a_number_of_samples_below_one_in_every_model(num_samples):
    for model in generators():
        with pytest.raises(ValueError, match=f"num_samples must be positive, got {num_samples}"):
            model.generate(num_samples)
    for model in generators():
        with pytest.raises(TypeError, match="num_samples must be an int"):
            model.generate(2.0)
        assert model.generate(1).shape == (1,) + SHAPE


def test_generate_checks_the_slot():
    vma = fixed_vma()
    vma.set_memory(binary(6))
    for slot in (6, 10, -1):
        with pytest.raises(ValueError, match=rf"slot must be in \[0, 6\).*got {slot}"):
            vma.generate(3, slot=slot)
    with pytest.raises(TypeError, match="slot must be an int"):
        vma.generate(3, slot=1.0)
    assert vma.generate(3, slot=5).shape == (3,) + SHAPE


def refinement_model():
    vae = VAE(SHAPE, latent_dim=3, hidden=(8,))
    return MemoryVAE(vae, torch.randn(6, 3), scale=0.7)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, -1.0])
def test_refinement_hyper_parameters_are_finite_and_in_range(value):
    m = refinement_model()
    with pytest.raises(ValueError, match="prior_weight must be a non-negative finite float"):
        MAPRefinement(m.model, m.guide, prior_weight=value)
    with pytest.raises(ValueError, match="lr must be a positive finite float"):
        MAPRefinement(m.model, m.guide, lr=value)
    with pytest.raises(ValueError, match="alpha must be a positive finite float or None"):
        MemoryFixedPoint(m.model, m.guide, alpha=value)
    with pytest.raises(ValueError, match="rate must be a positive finite float"):
        PredictiveCoding(m.model, m.guide, m.vae.decoder.body, rate=value)
    with pytest.raises(ValueError, match="scale must be a positive finite float"):
        LearnedPrecisionRetrieval(3, scale=value)
    # zero prior weight is the likelihood alone, and refines
    x = binary(2)
    assert MAPRefinement(m.model, m.guide, prior_weight=0.0).refine(x).isfinite().all()


def test_gaussian_refinement_takes_the_particles_and_flag_it_is_given():
    m = refinement_model()
    # the draws come in antithetic pairs: an odd count is refused, not rounded up
    with pytest.raises(ValueError, match="num_particles: expected an even number .* got 3"):
        GaussianRefinement(m.model, m.guide, num_particles=3)
    with pytest.raises(TypeError, match="differentiable: expected a bool, got 'no'"):
        GaussianRefinement(m.model, m.guide, differentiable="no")
    assert GaussianRefinement(m.model, m.guide, num_particles=2).num_particles == 2


def test_predictive_coding_checks_the_layer_widths_at_construction():
    m = refinement_model()
    bad = [nn.Sequential(nn.Linear(3, 5), nn.Tanh()), nn.Linear(4, 16)]
    with pytest.raises(ValueError, match=r"layers\[0\] outputs width 5 but layers\[1\] takes"):
        PredictiveCoding(m.model, m.guide, bad)
    flat = [nn.Linear(3, 5), nn.ReLU(), nn.Linear(4, 16)]
    with pytest.raises(ValueError, match=r"layers\[0\] outputs width 5 but layers\[2\] takes"):
        PredictiveCoding(m.model, m.guide, flat)
    # chained layers pass, and the network runs on them
    good = [nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 16)]
    assert PredictiveCoding(m.model, m.guide, good, num_steps=2).refine(binary(2)).shape == (2, 3)
    # the first layer must take z: its width (3 here) and its dtype, named before any step
    wide = PredictiveCoding(m.model, m.guide, [nn.Linear(4, 16)])
    with pytest.raises(ValueError, match=r"layers\[0\] takes width 4 but the site 'z' has width 3"):
        wide.refine(binary(2))
    double = PredictiveCoding(m.model, m.guide, [nn.Linear(3, 16).double()])
    with pytest.raises(TypeError, match="layers: their parameters are torch.float64 but the guide"):
        double.refine(binary(2))


def test_vae_takes_one_hidden_width_as_the_other_models_do():
    assert VAE(SHAPE, latent_dim=2, hidden=8).config["hidden"] == [8]
    with pytest.raises(TypeError, match="hidden must be a tuple of ints, got 'a'"):
        VAE(SHAPE, hidden="a")


def test_a_vae_names_images_on_another_device_than_its_parameters():
    vae = VAE(SHAPE, latent_dim=2, hidden=(8,))
    x = binary(3).to("meta")  # another device than the parameters', without a GPU
    for call in (vae.model, vae.guide, vae.reconstruct):
        with pytest.raises(ValueError, match="x: on meta, but the model's parameters are on cpu"):
            call(x)


def _memory_vae():
    model = MemoryVAE(VAE(SHAPE, latent_dim=2, hidden=(8,)))
    model.write(binary(4, seed=1))
    return model


def _pixel_memory():
    model = PixelMemory(SHAPE)
    model.write(binary(4, seed=1))
    return model


@pytest.mark.parametrize(
    "build", [lambda: VAE(SHAPE, latent_dim=2, hidden=(8,)), _memory_vae, _pixel_memory]
)
def test_images_with_two_batch_dimensions_are_named_before_pyro_plate(build):
    # the data plate runs over dim 0 of x: without the check, Pyro's plate reports a
    # "Shape mismatch inside plate('data')" at a latent site
    model, x = build(), binary(6).reshape((2, 3) + SHAPE)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 1, 4, 4\), got \(2, 3, 1"):
        pyro.infer.Trace_ELBO().loss(model.model, model.guide, x)
