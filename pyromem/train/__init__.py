"""One training engine for one CPU, one GPU or many GPUs.

:func:`fit` trains a :class:`~pyro.nn.PyroModule` with ``model``/``guide``
methods by SVI inside a Lightning ``Trainer``: progress bar, crash-safe
checkpoints with exact resume, ``metrics.csv`` with the ELBO and each KL term,
gradient clipping and seeding. :class:`SVIModule` is the Lightning module for
those who drive a ``Trainer`` themselves.
"""

from pyromem.train.checkpoint import Checkpoint, load_checkpoint
from pyromem.train.divergence import TrainingDiverged
from pyromem.train.fit import FitResult, fit
from pyromem.train.module import SVIModule

__all__ = ["Checkpoint", "FitResult", "SVIModule", "TrainingDiverged", "fit", "load_checkpoint"]
