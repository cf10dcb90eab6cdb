"""Recipe: one model, four guides (Marino 2019; Cremer et al. 2018; Kim et al. 2018).

Trains a VAE on the train split with the engine (and, for ``memory-vae``, stores the codes of
``memory_size`` train images as the Gaussian-mixture memory prior of Annabi et al.), then
compares on test images:

- ``amortized``: the encoder, q_φ(z | x), the reference of the amortisation gap;
- ``gaussian-T``: :class:`~pyromem.infer.GaussianRefinement`, T steps on each image's ELBO;
- ``iterative-T``: :class:`~pyromem.infer.IterativeAmortizedGuide`, its update trained for
  ``iterative_steps`` gradient steps on the train split with the model held fixed;
- ``map-T``: :class:`~pyromem.infer.MAPRefinement`, a point mass (its row is the log joint).

Both trainings run in the engine (:func:`pyromem.train.fit`), in ``out_dir/train`` and
``out_dir/iterative``; with ``resume``, each continues from its last checkpoint there (a
finished one trains no further), so that a run interrupted in a later stage goes on where it
stopped. Writes ``config.toml``, ``results.json``, ``table.md`` and ``compare_guides.png`` to
``out_dir``.
"""

import sys
import time
from pathlib import Path

import pyro
import torch
from torch import nn

from pyromem.data import FreshEpisodes
from pyromem.diagnostics import compare_guides
from pyromem.diagnostics.compare_guides import paired_mean_se
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
from pyromem.train import fit, last_checkpoint

#: The trainings of a run, each in its folder of ``out_dir``.
STAGES = ("train", "iterative")


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
    checkpoints = {stage: last_checkpoint(out_dir / stage) for stage in STAGES}
    if config.resume and not checkpoints["train"].is_file():
        raise ValueError(f"resume: there is no checkpoint at {checkpoints['train']} to continue")
    config.start_run(out_dir)

    def say(line):
        if config.progress:
            print(f"compare-guides: {line}", file=sys.stderr, flush=True)

    def resumes(stage, what):
        resume = config.resume and checkpoints[stage].is_file()
        say(f"{what}: {'continuing from its last checkpoint' if resume else 'training'}")
        return resume

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
    # what a resumed training must share with its checkpoint (the engine checks it)
    data = {
        "dataset": config.dataset,
        "root": config.root,
        "size": config.size,
        "binarize": train.binarize,
        "seed": seed,
    }
    fitted = fit(
        vae,
        train,
        epochs=config.epochs,
        batch_size=64,
        lr=3e-3,
        out_dir=out_dir / "train",
        config={"model": "vae", "vae": vae.config, "data": data},
        resume=resumes("train", f"the VAE, {config.epochs} epochs"),
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
    # the update is trained on the model of this run: the VAE of those epochs, its memory
    model = {"model": config.model, "vae_epochs": fitted.epochs}
    if config.model == "memory-vae":
        model["memory_size"] = config.memory_size
    fit(
        GuideTraining(net.model, iterative),
        FreshEpisodes(random_batches(train.images, 64), config.iterative_steps, seed),
        batch_size=None,
        epochs=1,
        lr=3e-3,
        out_dir=out_dir / "iterative",
        config={
            "model": "iterative-update",
            "iterative-update": model,
            "data": dict(data, steps=config.iterative_steps),
        },
        resume=resumes(
            "iterative", f"the iterative guide's update, {config.iterative_steps} steps"
        ),
        **engine,
    )
    guides = {
        "amortized": net.guide,
        f"gaussian-{steps}": GaussianRefinement(net.model, net.guide, num_steps=steps, lr=lr),
        f"iterative-{iterative.num_steps}": iterative,
        f"map-{steps}": MAPRefinement(net.model, net.guide, num_steps=steps, lr=lr),
    }
    say(
        f"comparing the guides on {len(test_x)} test images (ELBO, IWAE-{config.num_samples}, PSIS)"
    )
    comparison = compare_guides(
        net.model,
        guides,
        test_x,
        num_samples=config.num_samples,
        num_particles=config.num_particles,
        amortized="amortized",
    )
    setting = {
        "model": config.model,
        "dataset": config.dataset,
        "split": "test",
        "num_test_images": len(test_x),
        "test_split_size": len(test),
        "image_shape": list(train.event_shape),
        "binarization": train.binarize,
        "likelihood": likelihood,
        "epochs": fitted.epochs,
        "latent_dim": config.latent_dim,
        "hidden": list(config.hidden),
        "memory_size": config.memory_size if config.model == "memory-vae" else None,
        "refinement_steps": steps,
        "refinement_lr": lr,
        "iterative_steps": config.iterative_steps,
    }
    ranking = rank_guides(comparison)
    table = "\n\n".join(
        [comparison.table(), setting_caption(setting), ranking_caption(ranking), FIGURE_CAPTION]
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "table.md").write_text(table + "\n")
    figure = comparison.plot(
        out_dir / "compare_guides.png", dataset=config.dataset, split="test", model=config.model
    )
    results = {
        **setting,
        "ranking": ranking,
        **comparison.summary(),
        "table": table,
        "figures": {"compare_guides": str(figure)},
    }
    return finish_run(results, config, start, out_dir)


FIGURE_CAPTION = (
    "`compare_guides.png`: left, log p(x) − ELBO (circles) and log p(x) − IWAE-K (squares) of "
    "each guide, in nats, the mean over the test images of the gap taken image by image ± its "
    "standard error (0 is log p(x) itself; lower is a tighter bound; a hollow square is the "
    "IWAE-K that stands for log p(x), at 0 by construction; a point guide's "
    "log p(x) − log p(x, ẑ) is written at the top when it is off the scale); right, each "
    "image's PSIS k̂, with lines at 0.5 (dotted) and 0.7 (dash-dotted)."
)


def setting_caption(setting):
    """One paragraph: what was trained on what, and which images the table scores."""
    shape = "×".join(str(side) for side in setting["image_shape"][-2:])
    binarization = setting["binarization"] or "no"
    memory = ""
    if setting["model"] == "memory-vae":
        memory = (
            f", then given a Gaussian-mixture memory prior over the codes of "
            f"{setting['memory_size']} train images (Annabi et al.)"
        )
    return (
        f"Setting: a VAE (MLP {'-'.join(map(str, setting['hidden']))}, z of width "
        f"{setting['latent_dim']}, {setting['likelihood']} likelihood) trained for "
        f"{setting['epochs']} epoch{'s' if setting['epochs'] != 1 else ''} on the "
        f"`{setting['dataset']}` train split ({shape}, "
        f"{binarization} binarisation){memory}; the guides scored on the first "
        f"{setting['num_test_images']} of the {setting['test_split_size']} images of the test "
        f"split ({binarization} binarisation). gaussian-T and map-T take T = "
        f"{setting['refinement_steps']} steps at lr {setting['refinement_lr']:g} per image; "
        f"iterative-T's update was trained for {setting['iterative_steps']} steps of 64 train "
        f"images with the model held fixed."
    )


def rank_guides(comparison):
    """The guides with a density ranked by mean ELBO, and the paired difference (mean ± s.e.
    over the images) between the first and each other: ``{"order", "leader",
    "differences": {guide: {"nats", "se_nats", "resolved"}}}``, resolved meaning more than
    two standard errors from 0."""
    scored = [g for g in comparison.elbo if g not in comparison.point]
    order = sorted(scored, key=lambda g: -float(comparison.elbo[g].mean()))
    leader = order[0]
    differences = {}
    for g in order[1:]:
        mean, se = paired_mean_se(comparison.elbo[leader] - comparison.elbo[g])
        differences[g] = {"nats": mean, "se_nats": se, "resolved": bool(mean > 2 * se)}
    return {"order": order, "leader": leader, "differences": differences}


def ranking_caption(ranking):
    """One paragraph: which guide has the highest ELBO, and by how much over each other."""
    leader = ranking["leader"]
    if not ranking["differences"]:
        return f"Highest ELBO: {leader}, the only guide with a density."
    parts = []
    for g, d in ranking["differences"].items():
        verdict = "resolved" if d["resolved"] else "within two s.e.: not resolved"
        parts.append(f"{g} by {d['nats']:+.2f} ± {d['se_nats']:.2f} ({verdict})")
    runner_up = next(iter(ranking["differences"].values()))
    if runner_up["resolved"]:
        head = f"Highest ELBO: **{leader}**"
    else:
        head = f"Highest mean ELBO: {leader}, but this run does not rank it above the next"
    return (
        f"{head}. Its ELBO exceeds, per image, paired, mean ± s.e. in nats: "
        + "; ".join(parts)
        + ". Point guides are not ranked: their log p(x, ẑ) is no bound."
    )


summary = table_summary  # the comparison table, for the terminal
