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
    message = "memory is on meta but the model's parameters are on cpu"
    with pytest.raises(ValueError, match=message):
        model.slot_weights(x, memory.to("meta"))
    with pytest.raises(ValueError, match=r"x is on meta but the model's parameters are on cpu"):
        model.slot_weights(x.to("meta"), memory)
    with pytest.raises(ValueError, match="memory is on meta"):
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
