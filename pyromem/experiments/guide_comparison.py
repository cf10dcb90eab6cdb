"""Recipe: one model, four guides (Marino 2019; Cremer et al. 2018; Kim et al. 2018).

Trains a VAE on the train split with the engine (and, for ``memory-vae``, stores the codes of
``memory_size`` train images as the Gaussian-mixture memory prior of Annabi et al.), then
compares on test images:

- ``amortized``: the encoder, q_φ(z | x), the reference of the amortisation gap;
- ``gaussian-T``: :class:`~pyromem.infer.GaussianRefinement`, T steps on each image's ELBO;
- ``iterative-T``: :class:`~pyromem.infer.IterativeAmortizedGuide`, its update trained for
  ``iterative_steps`` gradient steps on the train split with the model held fixed;
- ``map-T``: :class:`~pyromem.infer.MAPRefinement`, a point mass (its row is the log joint).

Both trainings run in the engine (:func:`pyromem.train.fit`). Writes ``config.toml``,
``results.json``, ``table.md`` and ``compare_guides.png`` to ``out_dir``.
"""

import time
from pathlib import Path

import pyro
import torch
from torch import nn

from pyromem.data import FreshEpisodes
from pyromem.diagnostics import compare_guides
from pyromem.experiments.configs import CompareGuidesConfig
from pyromem.experiments.vae import (
    IF_GREY,
    LIKELIHOOD_FOR_SUPPORT,
    finish_run,
    load_binarized,
    table_summary,
)
from pyromem.infer import GaussianRefinement, IterativeAmortizedGuide, MAPRefinement
from pyromem.models import VAE, MemoryVAE
from pyromem.train import fit


class GuideTraining(nn.Module):
    """The pair the engine trains to fit a guide alone: ``model`` held fixed, ``guide``'s
    parameters learned (the model's parameters take no gradient)."""

    def __init__(self, model, guide):
        super().__init__()
        self.guide = guide
        self._model = model

    def model(self, *args, **kwargs):
        return self._model(*args, **kwargs)


def random_batches(images, batch_size):
    """``draw(generator)`` of a :class:`~pyromem.data.FreshEpisodes`: ``batch_size`` images
    drawn with replacement, one batch per step."""

    def draw(generator):
        return images[torch.randint(len(images), (batch_size,), generator=generator)]

    return draw


def check_split_sizes(config, train, test):
    """A one-line :class:`ValueError` before any training when ``num_test`` exceeds the test
    split, or (``memory-vae``) ``memory_size`` the train split: neither is silently cut."""
    if config.num_test > len(test):
        raise ValueError(
            f"num_test: at most the {len(test)} images of the {config.dataset} test split, "
            f"got {config.num_test}"
        )
    if config.model == "memory-vae" and config.memory_size > len(train):
        raise ValueError(
            f"memory_size: at most the {len(train)} images of the {config.dataset} train "
            f"split, got {config.memory_size}"
        )


def run_compare_guides(out_dir, **options):
    """Train the model, compare its guides, write the table and figure: :func:`run` with the
    :class:`~pyromem.experiments.configs.CompareGuidesConfig` of ``options``."""
    return run(CompareGuidesConfig.build(**options), out_dir)


def run(config, out_dir):
    """Train the model, compare its guides, write the table and figure; returns the results."""
    start = time.perf_counter()
    out_dir = Path(out_dir)
    config.start_run(out_dir)
    seed, steps, lr = config.seed, config.steps, config.lr
    pyro.set_rng_seed(seed)
    common = {"root": config.root, "download": config.download, "size": config.size}
    # grey-scale images on one static binarisation (train and test alike), colour ones as
    # they are, with the likelihood their values call for
    train, test = load_binarized(config.dataset, "static" + IF_GREY, seed=seed, **common)
    check_split_sizes(config, train, test)
    test_x = test.images[: config.num_test]
    likelihood = LIKELIHOOD_FOR_SUPPORT[train.support]
    vae = VAE(train.event_shape, config.latent_dim, likelihood, "mlp", config.hidden)
    engine = {"seed": seed, "accelerator": "cpu", "progress": config.progress}
    fitted = fit(
        vae,
        train,
        epochs=config.epochs,
        batch_size=64,
        lr=3e-3,
        out_dir=out_dir / "train",
        **engine,
    )
    vae = fitted.model.cpu().eval()
    net = vae
    if config.model == "memory-vae":
        net = MemoryVAE(vae, scale=1.0)
        net.write(train.images[: config.memory_size])
    for parameter in net.parameters():
        parameter.requires_grad_(False)
    iterative = IterativeAmortizedGuide(net.model, net.guide, num_steps=5)
    fit(
        GuideTraining(net.model, iterative),
        FreshEpisodes(random_batches(train.images, 64), config.iterative_steps, seed),
        batch_size=None,
        epochs=1,
        lr=3e-3,
        out_dir=out_dir / "iterative",
        **engine,
    )
    guides = {
        "amortized": net.guide,
        f"gaussian-{steps}": GaussianRefinement(net.model, net.guide, num_steps=steps, lr=lr),
        f"iterative-{iterative.num_steps}": iterative,
        f"map-{steps}": MAPRefinement(net.model, net.guide, num_steps=steps, lr=lr),
    }
    comparison = compare_guides(
        net.model,
        guides,
        test_x,
        num_samples=config.num_samples,
        num_particles=config.num_particles,
        amortized="amortized",
    )
    table = comparison.table()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "table.md").write_text(table + "\n")
    figure = comparison.plot(out_dir / "compare_guides.png")
    results = {
        "model": config.model,
        "dataset": config.dataset,
        "split": "test",
        "binarization": train.binarize,
        "likelihood": likelihood,
        "epochs": fitted.epochs,
        "latent_dim": config.latent_dim,
        **comparison.summary(),
        "table": table,
        "figures": {"compare_guides": str(figure)},
    }
    return finish_run(results, config, start, out_dir)


summary = table_summary  # the comparison table, for the terminal
