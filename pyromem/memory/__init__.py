"""Memory primitives: distributions and reads over a memory of stored patterns."""

from .gaussian_mixture import GaussianMixtureMemory
from .spatial_read import spatial_read

__all__ = ["GaussianMixtureMemory", "spatial_read"]
