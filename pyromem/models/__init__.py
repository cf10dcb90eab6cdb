"""Pyro programs: each a ``PyroModule`` with ``model(...)`` and an amortised ``guide(...)``."""

from pyromem.models.kanerva import KanervaPlusPlus
from pyromem.models.memory_vae import MemoryVAE, PixelMemory
from pyromem.models.vae import VAE
from pyromem.models.vma import VMA

__all__ = ["KanervaPlusPlus", "MemoryVAE", "PixelMemory", "VAE", "VMA"]
