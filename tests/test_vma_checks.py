"""VMA's checks at its public boundary: each misuse raises one line naming the argument, the
expected and the received value, before any work."""

import json
import math

import pyro
import pytest
import torch

from pyromem.experiments.vma import build_model, evaluate_vma, train_vma
from pyromem.models import VMA
from pyromem.models.vma import SoftAttentionVAE

SHAPE = (1, 4, 4)
SMALL = {"latent_dim": 2, "embedding_dim": 4, "hidden": (8,)}


def images(n, seed=1):
    return torch.bernoulli(
        torch.full((n,) + SHAPE, 0.5), generator=torch.Generator().manual_seed(seed)
    )


@pytest.mark.parametrize("cls", [VMA, SoftAttentionVAE])
def test_memory_and_images_on_another_device_are_named(cls):
    # the meta device stands for a GPU: a tensor there cannot meet the CPU's parameters, and
    # its values cannot be read, so the check must come before any
    model, x, memory = cls(SHAPE, **SMALL), images(2), images(5, seed=2)
    message = "memory: on meta, but the model's parameters are on cpu"
    with pytest.raises(ValueError, match=message):
        model.slot_weights(x, memory.to("meta"))
    with pytest.raises(ValueError, match=r"x: on meta, but the model's parameters are on cpu"):
        model.slot_weights(x.to("meta"), memory)
    with pytest.raises(ValueError, match="memory: on meta"):
        model.generate(2, memory.to("meta"))
    # the same tensors on the model's device pass
    assert model.slot_weights(x, memory).shape == (2, 5)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"hidden": 8}, None, None),  # one int is one hidden layer
        ({"hidden": "8"}, TypeError, "hidden must be a tuple of ints, got '8'"),
        ({"embedding_dim": 0}, ValueError, "embedding_dim must be positive, got 0"),
        ({"latent_dim": 1.5}, TypeError, "latent_dim must be an int, got float 1.5"),
        ({"memory_shape": (0,)}, ValueError, r"memory_shape must be a non-empty tuple .* \(0,\)"),
        ({"memory_shape": "7"}, TypeError, "memory_shape must be a tuple of ints"),
        ({"channels": 0}, ValueError, "channels must be positive, got 0"),
    ],
)
def test_constructor_names_a_bad_width_or_shape(options, error, message):
    if error is None:
        assert VMA(SHAPE, **(SMALL | options)).config["hidden"] == [8]
        return
    with pytest.raises(error, match=message):
        VMA(SHAPE, **(SMALL | options))
    if "memory_shape" not in options:
        with pytest.raises(error, match=message):
            SoftAttentionVAE(SHAPE, **(SMALL | options))


def test_input_shape_is_checked_by_name():
    with pytest.raises(ValueError, match=r"input_shape must be a non-empty tuple .* \(1, 0, 4\)"):
        VMA((1, 0, 4), **SMALL)


def test_gumbel_temperature_must_be_positive_and_finite():
    vma = VMA(SHAPE, address="gumbel", **SMALL)
    x, memory = images(2), images(4, seed=2)
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match=rf"temperature: expected a positive, finite .* {bad}"):
            vma.temperature = bad
    with pytest.raises(TypeError, match="temperature: expected a positive number, got '1'"):
        vma.temperature = "1"
    assert vma.temperature == 1.0  # unchanged by the refused values
    vma.temperature = 0.25
    assert vma.temperature == 0.25 and isinstance(vma.temperature, float)
    # the relaxation reads it: a finite loss at the new τ
    loss = pyro.infer.TraceMeanField_ELBO(max_plate_nesting=1).loss(
        vma.model, vma.guide, x, memory=memory
    )
    assert math.isfinite(loss)


def test_build_model_refuses_a_prior_for_soft_attention():
    assert isinstance(build_model("soft", SHAPE, prior="learned", **SMALL), SoftAttentionVAE)
    with pytest.raises(ValueError, match="prior: the soft-attention baseline .* got prior='flat'"):
        build_model("soft", SHAPE, prior="flat", **SMALL)


NETS = {"hidden": (8,), "latent_dim": 2, "embedding_dim": 4, "num_threads": 1}


def test_fewshot_counts_are_ints_and_eval_refuses_zero_particles(tmp_path):
    results = train_vma(
        out_dir=tmp_path / "run",
        mode="fewshot",
        address="enum",
        steps=2,
        steps_per_epoch=2,
        classes=2,
        shots=1,
        queries=1,
        memory_classes=(1, 2),
        num_samples=3,
        progress=False,
        **NETS,
    )
    # num_samples is the K of every episode's bound, not a mean of them
    assert results["num_samples"] == 3 and isinstance(results["num_samples"], int)
    assert all(isinstance(row["num_samples"], int) for row in results["memory_size_sweep"])
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["num_samples"] == 3 and isinstance(saved["num_samples"], int)
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    # 0 particles is refused, not replaced by the training run's K
    with pytest.raises(ValueError, match="num_particles must be positive, got 0"):
        evaluate_vma(checkpoint, out_dir=tmp_path / "eval", num_samples=3, num_particles=0)


def test_model_after_an_update_does_not_reuse_the_guides_stale_slot_keys():
    # the guide's slot keys h(M) serve the model of the same step; a guide run alone, then an
    # optimiser's step, then the model must read p(a | M) from the updated key net
    torch.manual_seed(0)
    vma = VMA(SHAPE, memory_size=5, address="vimco", **SMALL)
    x = images(2)
    with torch.no_grad():
        vma.addressing.prior_query.normal_()
    vma.guide(x)
    with torch.no_grad():
        for parameter in vma.addressing.key_net.parameters():
            parameter.add_(1.0)
    trace = pyro.poutine.trace(vma.model).get_trace(x)
    read = trace.nodes["a"]["fn"].log_prob(torch.arange(5).unsqueeze(-1)).squeeze(-1)[:, 0]
    torch.testing.assert_close(read, vma.address_prior().log())


@pytest.mark.parametrize("cls", [VMA, SoftAttentionVAE])
def test_image_slots_outside_the_unit_interval_are_refused(cls):
    # 8-bit values where images in [0, 1] are read: every slot would decode as saturated
    model, x = cls(SHAPE, **SMALL), images(2)
    memory = images(5, seed=2) * 255
    message = r"memory: expected images with values in \[0, 1\], as x's, got \[0, 255\]"
    with pyro.validation_enabled(True), pytest.raises(ValueError, match=message):
        model.slot_weights(x, memory)
    # the same slots in [0, 1] pass, and slots that are not images may take any value
    with pyro.validation_enabled(True):
        assert model.slot_weights(x, memory / 255).shape == (2, 5)
    if cls is VMA:
        codes = VMA(SHAPE, memory_shape=(3,), **SMALL)
        with pyro.validation_enabled(True):
            assert codes.slot_weights(x, torch.randn(5, 3) * 255).shape == (2, 5)


def test_fixed_memory_of_8_bit_images_is_refused_by_set_memory():
    model = VMA(SHAPE, memory="fixed", memory_size=5, **SMALL)
    with pytest.raises(ValueError, match=r"memory: expected images with values in \[0, 1\]"):
        model.set_memory(images(5) * 255)


@pytest.mark.parametrize("cls", [VMA, SoftAttentionVAE])
def test_images_with_two_batch_dimensions_are_named_before_pyro_plate(cls):
    # the data plate runs over dim 0: a (2, 3) batch would fail inside Pyro's plate
    model, memory = cls(SHAPE, **SMALL), images(5, seed=2)
    x = images(6).reshape((2, 3) + SHAPE)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 1, 4, 4\), got \(2, 3, 1"):
        pyro.infer.Trace_ELBO().loss(model.model, model.guide, x, memory)
