"""Pyro programs: each a ``PyroModule`` with ``model(...)`` and an amortised ``guide(...)``."""

from pyromem.models.vae import VAE

__all__ = ["VAE"]
