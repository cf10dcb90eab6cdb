"""Diagnostics of a model/guide pair: ELBO terms per site and importance-sampled bounds."""

from pyromem.diagnostics.elbo_decomposition import ELBODecomposition, elbo_decomposition
from pyromem.diagnostics.log_likelihood import (
    ImportanceLogLikelihood,
    log_importance_weights,
    log_likelihood,
)

__all__ = [
    "ELBODecomposition",
    "ImportanceLogLikelihood",
    "elbo_decomposition",
    "log_importance_weights",
    "log_likelihood",
]
