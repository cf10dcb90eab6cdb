"""Memory primitives: distributions and reads over a memory of stored patterns."""

from pyromem.memory.addressing import Addressing, similarity
from pyromem.memory.gaussian_mixture import GaussianMixtureMemory
from pyromem.memory.spatial_read import spatial_read

__all__ = ["Addressing", "GaussianMixtureMemory", "similarity", "spatial_read"]
