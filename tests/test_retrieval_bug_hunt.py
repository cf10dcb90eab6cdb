"""Regression tests for bugs found in the retrieval benchmark (pyromem/retrieval)."""

import pytest
import torch

from pyromem.models import VAE
from pyromem.retrieval import build_method, evaluate

SHAPE = (1, 4, 4)


@pytest.mark.parametrize("name", ["MemN2N", "VAE-NTM", "VAE-MemN2N", "VAE-NTM*", "VAE-MemN2N*"])
def test_learned_readers_train_and_read_in_the_dtype_of_their_vectors(name, device):
    # The readers were built in float32 on the CPU whatever the VAE or the images: a float64
    # VAE (or one on a GPU) could not fit VAE-NTM or VAE-MemN2N at all, nor float64 images MemN2N.
    torch.manual_seed(0)
    vae = VAE(SHAPE, latent_dim=3, hidden=(8,)).to(device=device, dtype=torch.float64)
    images = (
        torch.rand((12,) + SHAPE, generator=torch.Generator().manual_seed(1)).double().to(device)
    )
    method = build_method(name, SHAPE, vae if name.startswith("VAE-") else None, train_steps=2)
    training = method.fit(images, "noise-0.2", 4, torch.Generator().manual_seed(0))
    assert set(training) == {"train_loss_first", "train_loss_last"}
    retrieved, memory = method.retrieve(images[:3], images[:5])
    assert retrieved.dtype == memory.dtype == torch.float64
    rates = evaluate(method, images, "clean", memory_size=4, seeds=2, threshold=1.0)
    assert len(rates.success) == 2
