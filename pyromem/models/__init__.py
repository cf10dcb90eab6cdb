"""Pyro programs: each a ``PyroModule`` with ``model(...)`` and an amortised ``guide(...)``."""

from pyromem.models.memory_vae import MemoryVAE
from pyromem.models.vae import VAE
from pyromem.models.vma import VMA

__all__ = ["MemoryVAE", "VAE", "VMA"]
