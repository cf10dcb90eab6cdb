"""The registry of recipes: one entry per command, its config class and where its code lives.

The CLI dispatches ``train``, ``eval`` and the other commands through it, and
``pyromem demo`` runs the ``demo_section(out_dir, quick, seed, progress, resume)`` of each
recipe in :data:`DEMO_SECTIONS`.
"""

import importlib
from dataclasses import dataclass

from pyromem.experiments.configs import (
    CompareEstimatorsConfig,
    CompareGuidesConfig,
    KPPConfig,
    RetrievalConfig,
    VAEConfig,
    VMAConfig,
)
from pyromem.experiments.options import Options


@dataclass(frozen=True)
class Recipe:
    """A recipe: ``module.run(config, out_dir)`` trains (or runs) it, and for a family
    ``module.<evaluator>(checkpoint, out_dir=, num_samples=, num_particles=, root=, log=)``
    evaluates one of its checkpoints again.

    :param str name: the command or family name.
    :param type config: its :class:`~pyromem.experiments.options.Options` class.
    :param str module: the module holding ``run`` (and its evaluator, ``demo_section``).
    :param str help: one line for ``--help``.
    :param str out: the default ``--out``, formatted with the config's fields.
    :param str evaluator: the name of the module's evaluation function (families).
    :param int eval_samples: its default K of the IWAE-K bound.
    :param eval_particles: its evaluator's default draws of the test ELBO, as ``--help`` says it.
    """

    name: str
    config: type[Options]
    module: str
    help: str
    out: str
    evaluator: str | None = None
    eval_samples: int = 1000
    eval_particles: int | str = 10

    def load(self):
        """The recipe's module (imported on first use: it needs torch)."""
        return importlib.import_module(self.module)


#: Families trained by ``pyromem train`` and evaluated by ``pyromem eval``, in demo order.
FAMILIES = {
    "vae": Recipe(
        "vae",
        VAEConfig,
        "pyromem.experiments.vae",
        "the VAE with a standard-normal prior",
        "runs/vae-{dataset}",
        evaluator="evaluate_checkpoint",
    ),
    "vma": Recipe(
        "vma",
        VMAConfig,
        "pyromem.experiments.vma",
        "variational memory addressing (Bornschein et al. 2017)",
        "runs/vma-{mode}",
        evaluator="evaluate_vma",
        eval_particles="the training run's K",
    ),
    "kpp": Recipe(
        "kpp",
        KPPConfig,
        "pyromem.experiments.kanerva",
        "Kanerva++ (Ramapuram et al. 2021)",
        "runs/kpp-{dataset}",
        evaluator="evaluate_kpp",
        eval_samples=100,
    ),
}
#: The other commands that run a recipe.
COMMANDS = {
    "retrieval": Recipe(
        "retrieval",
        RetrievalConfig,
        "pyromem.experiments.retrieval",
        "the associative-retrieval benchmark (Annabi et al. 2022, Tables 2-4)",
        "runs/retrieval-{dataset}",
    ),
    "compare-guides": Recipe(
        "compare-guides",
        CompareGuidesConfig,
        "pyromem.experiments.guide_comparison",
        "amortised, iterative and hybrid guides of one model side by side",
        "runs/compare-guides-{model}",
    ),
    "compare-estimators": Recipe(
        "compare-estimators",
        CompareEstimatorsConfig,
        "pyromem.experiments.estimator_comparison",
        "VMA's address estimators: gradient bias and variance, step time, test NLL",
        "runs/compare-estimators-{dataset}",
    ),
}

#: The sections of ``pyromem demo``, in the report's order.
DEMO_SECTIONS = ("vae", "retrieval", "vma", "kpp")


def recipe(name) -> Recipe:
    """The recipe of a family or command name."""
    return FAMILIES.get(name) or COMMANDS[name]
