"""Objectives and guides Pyro lacks: iterative refinement of amortised guides."""

from pyromem.infer.gaussian_refinement import GaussianRefinement
from pyromem.infer.iterative_amortized import IterativeAmortizedGuide
from pyromem.infer.learned_precision import LearnedPrecisionRetrieval
from pyromem.infer.map_refinement import MAPRefinement
from pyromem.infer.memory_fixed_point import MemoryFixedPoint
from pyromem.infer.predictive_coding import PredictiveCoding
from pyromem.infer.refinement import Refinement
from pyromem.infer.vimco import VIMCO

__all__ = [
    "GaussianRefinement",
    "IterativeAmortizedGuide",
    "LearnedPrecisionRetrieval",
    "MAPRefinement",
    "MemoryFixedPoint",
    "PredictiveCoding",
    "Refinement",
    "VIMCO",
]
