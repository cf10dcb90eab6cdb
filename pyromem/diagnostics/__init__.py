"""Diagnostics of a model/guide pair: ELBO terms per site, importance-sampled bounds, PSIS
k̂ and arviz export, and the comparison of several guides of one model."""

from pyromem.diagnostics.compare_guides import GuideComparison, compare_guides
from pyromem.diagnostics.elbo_decomposition import ELBODecomposition, elbo_decomposition
from pyromem.diagnostics.log_likelihood import (
    ImportanceLogLikelihood,
    log_importance_weights,
    log_likelihood,
)
from pyromem.diagnostics.psis import pareto_khat, to_inference_data

__all__ = [
    "ELBODecomposition",
    "GuideComparison",
    "ImportanceLogLikelihood",
    "compare_guides",
    "elbo_decomposition",
    "log_importance_weights",
    "log_likelihood",
    "pareto_khat",
    "to_inference_data",
]
