"""One training engine for one CPU, one GPU or many GPUs.

:func:`fit` trains a :class:`~pyro.nn.PyroModule` with ``model``/``guide``
methods by SVI inside a Lightning ``Trainer``: progress bar, crash-safe
checkpoints with exact resume, ``metrics.csv`` with the ELBO and each KL term,
gradient clipping and seeding. :class:`SVIModule` is the Lightning module for
those who drive a ``Trainer`` themselves.

The names below load on first use (PEP 562): importing Lightning takes seconds, which
``pyromem --help`` and a reader of :mod:`pyromem.train.schedules` should not pay.
"""

import importlib

_HOMES = {
    "Checkpoint": "pyromem.train.checkpoint",
    "last_checkpoint": "pyromem.train.checkpoint",
    "load_checkpoint": "pyromem.train.checkpoint",
    "TrainingDiverged": "pyromem.train.divergence",
    "FitResult": "pyromem.train.engine",
    "TrainingInterrupted": "pyromem.train.engine",
    "fit": "pyromem.train.engine",
    "SVIModule": "pyromem.train.module",
}

__all__ = [
    "Checkpoint",
    "FitResult",
    "SVIModule",
    "TrainingDiverged",
    "TrainingInterrupted",
    "fit",
    "last_checkpoint",
    "load_checkpoint",
]


def __getattr__(name):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    home = importlib.import_module(_HOMES[name])
    # every name of that home at once, so that each is bound to what it names here
    globals().update({n: getattr(home, n) for n, where in _HOMES.items() if where == home.__name__})
    return globals()[name]


def __dir__():
    return sorted([*globals(), *_HOMES])
