"""Objectives and guides Pyro lacks."""

from pyromem.infer.vimco import VIMCO

__all__ = ["VIMCO"]
