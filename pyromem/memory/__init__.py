"""Memory primitives: distributions and reads over a memory of stored patterns."""

from .gaussian_mixture import GaussianMixtureMemory

__all__ = ["GaussianMixtureMemory"]
