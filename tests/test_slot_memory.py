"""The base of memory-owning models: one memory set-up, one resolution, one slot_weights."""

import pytest
import torch

from pyromem.models import VAE, VMA, MemoryVAE
from pyromem.models.slot_memory import SlotMemoryModel
from pyromem.models.vma import SoftAttentionVAE

SMALL = {"hidden": (8,), "latent_dim": 2, "embedding_dim": 4}


def test_every_memory_model_shares_the_base():
    for model in (
        VMA((1, 4, 4), **SMALL),
        SoftAttentionVAE((1, 4, 4), **SMALL),
        MemoryVAE(VAE((1, 4, 4), 2, hidden=(8,))),
    ):
        assert isinstance(model, SlotMemoryModel)


def test_slot_weights_are_each_models_own_reading():
    x = torch.bernoulli(torch.full((3, 1, 4, 4), 0.5))
    memory = torch.bernoulli(torch.full((5, 1, 4, 4), 0.5))
    vma, soft = VMA((1, 4, 4), **SMALL), SoftAttentionVAE((1, 4, 4), **SMALL)
    with torch.no_grad():
        assert torch.equal(vma.slot_weights(x, memory), vma.address_posterior(x, memory))
        assert torch.equal(soft.slot_weights(x, memory), soft.read_weights(x, memory))
        # MemoryVAE: responsibilities at the code, softmax_k(-|z - M_k|^2 / 2 sigma^2)
        net = MemoryVAE(VAE((1, 4, 4), 2, hidden=(8,)), scale=0.7)
        codes = net.write(memory)
        z = net.encode(x)
        expected = (-(z.unsqueeze(1) - codes).pow(2).sum(-1) / (2 * 0.7**2)).softmax(-1)
        assert torch.allclose(net.slot_weights(x), expected, atol=1e-6)
        assert torch.allclose(net.slot_weights(x, codes), expected, atol=1e-6)
    for weights in (vma.slot_weights(x, memory), soft.slot_weights(x, memory)):
        assert weights.shape == (3, 5) and torch.allclose(weights.sum(-1), torch.ones(3))


def test_memory_set_up_and_resolution():
    fixed = VMA((1, 4, 4), memory_size=3, memory="fixed", **SMALL)
    assert fixed.memory is None  # empty until set
    with pytest.raises(ValueError, match="memory is empty"):
        fixed.resolve_memory()
    fixed.set_memory(torch.ones(3, 1, 4, 4))
    assert torch.equal(fixed.resolve_memory(), torch.ones(3, 1, 4, 4))
    learned = VMA((1, 4, 4), memory_size=3, **SMALL)
    assert isinstance(learned.memory, torch.nn.Parameter)
    none = VMA((1, 4, 4), **SMALL)
    with pytest.raises(ValueError, match="this VMA has no memory of its own"):
        none.resolve_memory()
    with pytest.raises(ValueError, match="expected shape"):
        none.resolve_memory(torch.zeros(3, 1, 5, 5))
    with pytest.raises(TypeError, match="float64"):
        none.resolve_memory(torch.zeros(3, 1, 4, 4, dtype=torch.float64))
