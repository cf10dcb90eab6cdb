"""pyromem: memory-conditioned generative models as Pyro programs."""

__version__ = "0.1.0"
