"""Recipes: the experiments of Variational Memory Addressing (Bornschein et al. 2017).

Three modes, each trained with the address enumerated (``address="enum"``,
``TraceEnum_ELBO``), sampled (``"vimco"``, ``VIMCO`` with K particles; ``"rws"`` or
``"nvil"``) or relaxed (``"gumbel"``) (see :func:`objective`), or with §4.2's
soft-attention baseline in place of VMA (``"soft"``,
:class:`~pyromem.models.vma.SoftAttentionVAE` trained with ``Trace_ELBO``; the same nets,
the memory read as Σ_a w_a(z) m_a):

- ``recall`` (§4.1, Fig. 2A): the memory is |M| random training digits, drawn
  afresh at every step, and the targets x are drawn from it. An optimal model
  is a probabilistic lookup table: its NLL is log |M|. Tested on |M| test
  digits in memory, each the target once.
- ``learned`` (§4.1): the memory is a parameter of |M| slots, trained with the
  rest by the engine (:func:`pyromem.train.fit`). Reported: the average
  KL(q(a|x) ‖ p(a)), and how many slots are used.
- ``fewshot`` (§4.2, Fig. 4-5, Table 1): on ``glyphs``, each step's memory
  holds S shots of C classes and the targets are other images of the same
  classes. Tested on episodes of unseen test classes, with the memory-size
  sweep of Fig. 5A and few-shot classification from q(a|x) (5/20-way,
  1/5-shot). The sweep is paired (:func:`sweep_episode`): each of
  ``EVAL_EPISODES`` test episodes draws the largest memory's classes once, its
  queries are ``TEST_QUERIES`` images of each of the smallest memory's C_0
  classes, and the memory at C holds the shots of the first C classes, the
  queries' own and C - C_0 confounding ones. Every C is measured on the same
  queries; each row gives the mean over episodes and its standard error
  (``test_nll_se_nats``), the optimum = NLL at C_0 + log(C / C_0) (Fig. 5A's
  dashed line), and the NLL above it paired per episode, with its standard
  error (``nll_above_optimum_nats``, ``nll_above_optimum_se_nats``).

Every test bound is per image in nats: ``kl_address`` = KL(q(a|x) ‖ p(a))
(exact), ``kl_z`` = E_q(a)[KL(q(z|x,m_a) ‖ p(z|m_a))] (analytic KL, averaged
over ``num_particles`` draws of a), ``reconstruction`` = E_q[log p(x|z,m_a)],
and ``test_nll_nats`` = −IWAE-K with K = ``num_samples`` (1000 by default)
importance samples from q(a, z | x). The soft-attention model has no address:
its ``kl_address`` is ``None``, ``kl_z`` = KL(q(z|x) ‖ N(0, I)), its test NLL
samples z alone from q(z|x), and its read weights w(z) at the mean of q(z|x)
stand for q(a|x) in the slot counts and the few-shot classification. Data are
statically binarised by default (``binarize``; the test data statically whenever the
training data are binarised).
"""

import json
import math
import sys
import time
from pathlib import Path

import pyro
import torch
from lightning.pytorch.callbacks import Callback
from matplotlib.figure import Figure

from pyromem.checks import as_positive_int
from pyromem.data import FreshEpisodes, few_shot_splits, sample_few_shot
from pyromem.diagnostics import elbo_decomposition, log_likelihood
from pyromem.diagnostics.plots import save_curves, save_figure, save_image_rows
from pyromem.experiments.configs import ADDRESSES, VMAConfig, vma_ignored
from pyromem.experiments.options import interrupted_run_file
from pyromem.experiments.vae import (
    LIKELIHOOD_FOR_SUPPORT,
    StartLines,
    binarization,
    config_kept_if_refused,
    engine_options,
    evaluation_device,
    load_binarized,
    resumed_checkpoint,
    stderr_line,
    stored_as_before,
    torch_threads,
    write_results,
)
from pyromem.infer.address_estimators import address_objective
from pyromem.models import VMA
from pyromem.models.vma import SoftAttentionVAE
from pyromem.train import fit, load_checkpoint

DATASET = {"recall": "digits", "learned": "digits", "fewshot": "glyphs"}
IMAGE_SIDE = {"digits": 8, "glyphs": 16}
# test episodes of the few-shot sweep, each evaluated at every memory size on the same
# TEST_QUERIES queries per class of its smallest memory's classes (sweep_episode)
EVAL_EPISODES = 32
TEST_QUERIES = 2
# queries per class of each few-shot classification episode
ACCURACY_QUERIES = 5
# keys of evaluation_bounds that are counts, the same in every episode: never averaged
COUNTS = ("num_samples",)


def objective(address, num_particles=4):
    """The training objective of an address
    (:func:`~pyromem.infer.address_estimators.address_objective`): enumeration, VIMCO or
    reweighted wake-sleep with K particles, NVIL's score function with a learned baseline,
    or the one-sample ELBO of the Gumbel-softmax relaxation and of the soft-attention baseline."""
    if address not in ADDRESSES:
        raise ValueError(f"address: expected one of {ADDRESSES}, got {address!r}")
    return address_objective(address, num_particles)


def build_model(address, input_shape, **options):
    """A :class:`VMA` for any address but ``"soft"``, a :class:`SoftAttentionVAE` for
    ``"soft"`` (which takes no ``prior``: its p(z) is N(0, I))."""
    if address == "soft":
        prior = options.pop("prior", "learned")
        if prior != "learned":
            raise ValueError(
                f"prior: the soft-attention baseline has no address prior (its p(z) is "
                f"N(0, I)), got prior={prior!r}; leave it out"
            )
        return SoftAttentionVAE(input_shape, **options)
    return VMA(input_shape, address=address, **options)


class TemperatureSchedule(Callback):
    """Anneals the Gumbel-softmax τ of a VMA geometrically over the training steps:
    τ_t = τ_0 (τ_T / τ_0)^(t / T) at step t of T (Jang et al. 2017 anneal τ exponentially
    towards a floor), set before every step from the trainer's step, so a resumed run
    retraces it."""

    def __init__(self, start, end):
        self.start, self.end = start, end

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        progress = min(trainer.global_step / max(trainer.estimated_stepping_batches, 1), 1.0)
        pl_module.model.temperature = self.start * (self.end / self.start) ** progress


def slot_weights(model, x, memory=None):
    """Deprecated alias, for one release, of ``model.slot_weights(x, memory)``."""
    return model.slot_weights(x, memory)


def evaluation_bounds(vma, x, memory=None, num_samples=1000, num_particles=4):
    """Per-image test diagnostics in nats (see the module's docstring), as floats;
    ``kl_address`` is ``None`` for a model without an address."""
    with torch.no_grad():
        parts = elbo_decomposition(vma.model, vma.guide, x, num_particles, memory=memory)
        iwae = log_likelihood(vma.model, vma.guide, x, num_samples=num_samples, memory=memory)
    return {
        "test_nll_nats": -iwae.log_likelihood.mean().item(),
        "num_samples": num_samples,
        "ess": iwae.ess.mean().item(),
        "kl_address": parts.kl["a"].mean().item() if "a" in parts.kl else None,
        "kl_z": parts.kl["z"].mean().item(),
        "reconstruction": parts.log_likelihood["x"].mean().item(),
        "elbo_nats": parts.elbo.mean().item(),
    }


def vma_data(config):
    """The train and test splits of a VMA run, binarised as configured (test: statically).

    Few-shot splits have disjoint classes (:func:`~pyromem.data.few_shot_splits`):
    Omniglot's and glyphs' splits by alphabet, other labelled data by
    ``config.test_classes``.
    """
    options = {
        "root": config.root,
        "download": config.download,
        "seed": config.seed,
        "size": config.size or IMAGE_SIDE.get(config.dataset),
    }
    binarize = binarization(config.binarize, "static")
    train, test = load_binarized(config.dataset, binarize, **options)
    if config.mode == "fewshot":
        train, test = few_shot_splits(train, test, config.test_classes)
    _check_episodes(config, train, test)
    return train, test


def _check_episodes(config, train, test):
    # what the data allow, checked before any training
    if config.mode != "fewshot":
        for split in (train, test):
            if config.memory_size > len(split):
                raise ValueError(
                    f"memory_size: at most the {len(split)} images of the {split.split} "
                    f"split, got {config.memory_size}"
                )
        return
    for name, wanted, split in (
        ("classes", config.classes, train),
        ("memory_classes", max(config.memory_classes), test),
    ):
        found = len(split.labels.unique())
        if wanted > found:
            raise ValueError(
                f"{name}: at most the {found} classes of the {split.split} split, got {wanted}"
            )
    # a training episode draws shots + queries images of a class; a test episode shots + 2, of
    # max(memory_classes) classes for the sweep (sweep_episode): checked above and here
    for split, needed, flags in (
        (train, config.shots + config.queries, "shots + queries"),
        (test, config.shots + TEST_QUERIES, f"shots + {TEST_QUERIES} test queries"),
    ):
        labels, counts = split.labels.unique(return_counts=True)
        if counts.min() < needed:
            raise ValueError(
                f"shots: every class of the {split.split} split needs {flags} = {needed} "
                f"images, but class {labels[counts.argmin()].item()} has {counts.min().item()}"
            )


def _random_memory(images, memory_size, generator):
    if memory_size > len(images):
        raise ValueError(
            f"memory_size: at most the {len(images)} images of the split, got {memory_size}"
        )
    return images[torch.randperm(len(images), generator=generator)[:memory_size]]


def training_episodes(config, train):
    """The fresh episodes of recall or few-shot training, one per step, as the model's
    keyword arguments ``{"x": targets, "memory": memory}``."""

    def recall(generator):
        memory = _random_memory(train.images, config.memory_size, generator)
        targets = torch.randint(config.memory_size, (config.batch_size,), generator=generator)
        return {"x": memory[targets], "memory": memory}

    def fewshot(generator):
        episode = sample_few_shot(
            train, config.classes, config.shots, config.queries, generator=generator
        )
        return {"x": episode.query, "memory": episode.memory}

    draw = recall if config.mode == "recall" else fewshot
    return FreshEpisodes(draw, min(config.steps_per_epoch, config.steps), config.seed)


def _fewshot_episode(data, classes, shots, queries, generator, device):
    episode = sample_few_shot(data, classes, shots, queries, generator=generator)
    return episode, episode.memory.to(device), episode.query.to(device)


def sweep_episode(data, memory_classes, shots, queries, *, labels=None, generator=None):
    """One test episode of the memory-size sweep (Fig. 5A), paired across memory sizes.

    Draws once C_max = ``max(memory_classes)`` classes with ``shots`` shots and
    ``queries`` queries each (:func:`~pyromem.data.sample_few_shot`). The queries
    are those of the first C_0 = ``min(memory_classes)`` classes, the same at
    every C; the memory at C holds the shots of the first C classes, so it always
    holds the queries' own classes and a larger memory adds C - C_0 confounding
    classes to the memory at C_0. The NLL at C and at C_0 are then measured on the
    same images, and their difference against log(C / C_0) (Fig. 5A's dashed
    line) is a paired comparison.

    :param data: the test images, a labelled dataset or tensor (as for
        :func:`~pyromem.data.sample_few_shot`).
    :param tuple memory_classes: the classes in memory at each point of the sweep.
    :param int shots: shots per class in memory.
    :param int queries: queries per class of the first C_0 classes.
    :param torch.Tensor labels: integer labels ``(N,)``; by default ``data.labels``.
    :param torch.Generator generator: optional source of randomness.
    :returns: a list, one ``(memory, query)`` pair per entry of ``memory_classes``
        in order: memory ``(C * shots, ...)``, query ``(C_0 * queries, ...)``.
    """
    if not memory_classes:
        raise ValueError("memory_classes: at least one memory size, got none")
    episode = sample_few_shot(
        data, max(memory_classes), shots, queries, labels=labels, generator=generator
    )
    query = episode.query[: min(memory_classes) * queries]
    return [(episode.memory[: c * shots], query) for c in memory_classes]


def classification_accuracy(vma, data, ways, shots, episodes=20, queries=5, seed=0):
    """Few-shot classification from q(a|x): p(c|x) ≈ Σ_{a of class c} q(a|x) (§4.2);
    from the read weights for the soft-attention baseline (its ``slot_weights``).

    :returns: the accuracy over ``episodes`` episodes of ``ways`` classes.
    """
    generator, correct, total = torch.Generator().manual_seed(seed), 0, 0
    device = next(vma.parameters()).device
    with torch.no_grad():
        for _ in range(episodes):
            episode, memory, query = _fewshot_episode(data, ways, shots, queries, generator, device)
            q = vma.slot_weights(query, memory).cpu()
            scores = torch.zeros(len(query), ways).index_add_(1, episode.memory_labels, q)
            correct += (scores.argmax(-1) == episode.query_labels).sum().item()
            total += len(query)
    return correct / total


def _mean(values):
    values = list(values)
    return None if values[0] is None else sum(values) / len(values)


def _standard_error(values):
    # the standard error of the mean over episodes: sample standard deviation / sqrt(n)
    n = len(values)
    if n < 2:
        return None
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


def _evaluate(vma, config, test, num_samples, num_particles=4):
    """The test results of a trained VMA in the mode of ``config`` (a :class:`VMAConfig`)."""
    device = next(vma.parameters()).device
    generator = torch.Generator().manual_seed(config.seed + 1)
    memory_size = config.memory_size if config.mode != "fewshot" else config.classes * config.shots
    results = {"mode": config.mode, "address": config.address, "memory_size": memory_size}
    vma.eval()
    if config.mode == "recall":
        memory = _random_memory(test.images, memory_size, generator).to(device)
        results.update(evaluation_bounds(vma, memory, memory, num_samples, num_particles))
        results["log_memory_size"] = math.log(memory_size)
        results["figure_memory"] = memory[:20].cpu()
    elif config.mode == "learned":
        x = test.images[: config.num_test].to(device)
        results.update(evaluation_bounds(vma, x, None, num_samples, num_particles))
        with torch.no_grad():
            q = vma.slot_weights(x)
        average = q.mean(0)
        results["slots_used"] = int(q.argmax(-1).unique().numel())
        results["effective_slots"] = math.exp(-(average * average.clamp_min(1e-30).log()).sum())
        results["log_memory_size"] = math.log(memory_size)
    else:
        classes, shots, sizes = config.classes, config.shots, config.memory_classes
        # every episode at every memory size, on the same queries (sweep_episode)
        bounds = [[] for _ in sizes]
        for _ in range(EVAL_EPISODES):
            pairs = sweep_episode(test, sizes, shots, TEST_QUERIES, generator=generator)
            for at_size, (memory, query) in zip(bounds, pairs, strict=True):
                memory, query = memory.to(device), query.to(device)
                at_size.append(evaluation_bounds(vma, query, memory, num_samples, num_particles))
        first = sizes.index(min(sizes))
        nll_first = [r["test_nll_nats"] for r in bounds[first]]
        sweep = []
        for c, rows in zip(sizes, bounds, strict=True):
            row = {
                "classes": c,
                "memory_size": c * shots,
                "episodes": EVAL_EPISODES,
                "queries_per_episode": min(sizes) * TEST_QUERIES,
            }
            # the bounds averaged over the episodes; the counts (num_samples) are the same in each
            row.update(
                {k: v if k in COUNTS else _mean(r[k] for r in rows) for k, v in rows[0].items()}
            )
            nll = [r["test_nll_nats"] for r in rows]
            row["test_nll_se_nats"] = _standard_error(nll)
            # Fig. 5A's dashed line from the smallest memory, and the distance to it paired on
            # the same queries: the NLL at C minus the NLL at C_0 minus log(C / C_0)
            log_ratio = math.log(c / sizes[first])
            row["optimum_nll_nats"] = _mean(nll_first) + log_ratio
            above = [a - b - log_ratio for a, b in zip(nll, nll_first, strict=True)]
            row["nll_above_optimum_nats"] = _mean(above)
            row["nll_above_optimum_se_nats"] = _standard_error(above)
            sweep.append(row)
        at_training_size = min(sweep, key=lambda row: abs(row["classes"] - classes))
        # the sweep's row nearest the training size, less its comparison with the optimum
        optimum = ("optimum_nll_nats", "nll_above_optimum_nats", "nll_above_optimum_se_nats")
        results.update({k: v for k, v in at_training_size.items() if k not in optimum})
        results["memory_size_sweep"] = sweep
        # the ways and shots the test classes allow (MNIST's five held-out digits: 5-way
        # only), each class drawn with ACCURACY_QUERIES queries
        _, counts = test.labels.unique(return_counts=True)
        results["classification_accuracy"] = {
            f"{ways}-way {s}-shot": classification_accuracy(
                vma, test, ways, s, queries=ACCURACY_QUERIES, seed=config.seed
            )
            for ways, s in ((5, 1), (5, 5), (20, 1), (20, 5))
            if ways <= len(counts) and s + ACCURACY_QUERIES <= counts.min()
        }
        results["figure_memory"] = memory[: shots * min(classes, 10)].cpu()
    return results


def _figures(vma, results, history, out_dir, per_epoch=None):
    out_dir = Path(out_dir)
    memory = results.pop("figure_memory", None)
    with torch.no_grad():
        if memory is None:  # learned memory
            memory = vma.memory.detach()[:20].clamp(0, 1).cpu()
        device = next(vma.parameters()).device
        slots = min(len(memory), 10)
        rows = [memory[:slots]]
        for _ in range(3):
            if isinstance(vma, SoftAttentionVAE):
                rows.append(vma.generate(slots, memory.to(device)).cpu())
            else:
                samples = [vma.generate(1, memory.to(device), slot=s) for s in range(slots)]
                rows.append(torch.cat(samples).cpu())
    title = (
        "draw {}: decoder mean at z ~ N(0, I), reading the whole memory"
        if isinstance(vma, SoftAttentionVAE)
        else "draw {}: decoder mean at z ~ p(z | m_a), under each slot above"
    )
    figures = {
        "samples": save_image_rows(
            rows,
            out_dir / "samples.png",
            titles=[f"memory slots m_a (the first {slots})"] + [title.format(i) for i in (1, 2, 3)],
        )
    }
    if history:
        figures["elbo_curve"] = _save_training_curve(history, per_epoch, out_dir / "elbo_curve.png")
    return {name: str(path) for name, path in figures.items()}


def _save_training_curve(history, per_epoch, path):
    """The training ELBO per image against the epoch (learned memory) or, for episodic
    training, against the step: one point per block of ``per_epoch`` fresh episodes."""
    if per_epoch is None:
        return save_curves(history, ["train_elbo_nats"], path)
    figure = Figure(figsize=(5, 3.2))
    ax = figure.subplots()
    points = [(r["epoch"] * per_epoch, r["train_elbo_nats"]) for r in history]
    ax.plot(*zip(*points, strict=True), marker="o", markersize=3)
    ax.set_xlabel("training step")
    ax.set_ylabel("train ELBO, nats per image")
    ax.set_title(f"mean over each block of {per_epoch} steps (one fresh episode each)", fontsize=9)
    ax.grid(alpha=0.3)
    return save_figure(figure, path)


def train_vma(*, out_dir, **options):
    """Train a VMA in one of the paper's settings, evaluate it, write results and figures:
    :func:`run` with the :class:`~pyromem.experiments.configs.VMAConfig` of ``options``."""
    return run(VMAConfig.build(**options), out_dir)


def run(config, out_dir):
    """Train a VMA with the engine, evaluate it, write results and figures.

    Recall and few-shot train on :func:`training_episodes`, ``config.steps`` fresh
    episodes in epochs of ``config.steps_per_epoch``; the learned memory trains on
    the images for ``config.epochs`` epochs.

    :param VMAConfig config: the run's options.
    :param out_dir: the run's folder: config.toml, checkpoints, metrics.csv,
        results.json, figures.
    :returns: the results dict also written to ``out_dir/results.json``: mode,
        address, memory_size, test_nll_nats, num_samples, kl_address (``None``
        for ``"soft"``), kl_z, reconstruction (and log_memory_size for recall and
        learned; the sweep and classification accuracies for fewshot), figures.
    """
    if config.dataset is None:
        config = config.replace(dataset=DATASET[config.mode])
    episodic = config.mode != "learned"
    with torch_threads(config.num_threads):
        start = time.perf_counter()
        config.start_run(out_dir)
        with config_kept_if_refused(config, out_dir):
            result, train, test = _train(config, out_dir)
        per_epoch = min(config.steps_per_epoch, config.steps)
        vma, history = result.model.to(evaluation_device(config.accelerator)), result.history
        if episodic:
            for row in history:
                row["step"] = row["epoch"] * per_epoch
        if config.progress:
            stderr_line(
                f"vma: evaluating on the test split ({config.dataset}, IWAE-{config.num_samples})"
            )
        # draws from the run's seed, not from where training left the generators: a
        # finished run resumed (no step to train) scores as it did
        pyro.set_rng_seed(config.seed)
        results = _evaluate(vma, config, test, config.num_samples, config.num_particles)
        results.update(
            {
                "dataset": config.dataset,
                "image_size": train.event_shape[-1],
                "binarization": train.binarize,
                "split": "test",
                "device": result.device,
                "num_particles": config.num_particles,
                "bounds": _bounds(config.address, config.num_samples, config.num_particles),
                "checkpoint": str(result.checkpoint),
                "metrics_csv": str(result.metrics_csv),
                "config": config.to_dict(),
            }
        )
        results["figures"] = _figures(
            vma, results, history, out_dir, per_epoch if episodic else None
        )
        results["seconds"] = time.perf_counter() - start
        write_results(results, out_dir)
        return results


#: The options of a VMA run that its training episodes and objective depend on, besides its
#: images: a resumed run must keep them (:func:`data_entry`).
EPISODE_OPTIONS = (
    "mode",
    "memory_size",
    "batch_size",
    "steps_per_epoch",
    "test_classes",
    "classes",
    "shots",
    "queries",
    "temperature",
    "final_temperature",
)


def data_entry(config, train):
    """The ``"data"`` entry of a VMA run's checkpoints, which a resumed run must share
    (:func:`~pyromem.train.checkpoint.check_resumable`): the images (dataset, size,
    binarisation applied, root, download, seed), the episodes' options of its mode
    (:data:`EPISODE_OPTIONS`) and, for VIMCO and RWS, their K (``num_particles``)."""
    options = config.to_dict()  # less the options its mode and address ignore
    entry = {
        "dataset": config.dataset,
        "binarize": train.binarize,
        "size": config.size or IMAGE_SIDE.get(config.dataset),
        "root": config.root,
        "download": config.download,
        "seed": config.seed,
    }
    entry.update({name: options[name] for name in EPISODE_OPTIONS if name in options})
    if config.address in ("vimco", "rws"):
        entry["num_particles"] = config.num_particles
    return entry


def _train(config, out_dir):
    """Train the VMA of ``config`` with the engine in ``out_dir`` (continued from its last
    checkpoint with ``config.resume``): ``(result, train, test)``."""
    episodic = config.mode != "learned"
    saved = resumed_checkpoint(out_dir, config.resume)
    train, test = vma_data(config)
    elbo = objective(config.address, config.num_particles)
    torch.manual_seed(config.seed)
    vma = build_model(
        config.address,
        train.event_shape,
        memory_size=None if episodic else config.memory_size,
        latent_dim=config.latent_dim,
        embedding_dim=config.embedding_dim,
        hidden=config.hidden,
        similarity=config.similarity,
        prior=config.prior,
        likelihood=LIKELIHOOD_FOR_SUPPORT[train.support],
        # the MLP nets' configs stay those of runs before the conv option
        **({"net": "conv", "channels": config.channels} if config.net == "conv" else {}),
    )
    schedule = config.lr_schedule or ("cosine" if episodic else "constant")
    engine = dict(engine_options(config), lr_schedule=schedule)
    per_epoch = min(config.steps_per_epoch, config.steps) if episodic else None
    epochs = config.steps // per_epoch if episodic else config.epochs
    lr = config.lr or (3e-3 if config.mode == "recall" else 1e-3)
    callbacks = []
    if config.address == "gumbel":
        callbacks.append(TemperatureSchedule(config.temperature, config.final_temperature))
    if config.progress:
        start = _start_line(config, saved, epochs, per_epoch, len(train))
        callbacks.append(StartLines(start))
    checkpoint_config = {
        "model": "vma",
        "vma": vma.config,
        "data": data_entry(config, train),
        "options": config.to_dict(),
    }
    result = fit(
        vma,
        training_episodes(config, train) if episodic else train,
        out_dir=out_dir,
        elbo=elbo,
        epochs=epochs,
        batch_size=None if episodic else config.batch_size,
        lr=lr,
        config=stored_as_before(checkpoint_config, saved),
        callbacks=callbacks,
        **engine,
    )
    return result, train, test


def _start_line(config, saved, epochs, per_epoch, num_train):
    """What a VMA run trains, for how long and, resumed, from where: its first progress line,
    at once (the engine's first line ends the first epoch, a block of ``per_epoch`` steps)."""
    what = "the learned memory" if config.mode == "learned" else config.mode
    if per_epoch is None:
        length = f"{epochs} epochs of {math.ceil(num_train / config.batch_size)} steps"
        done = f"epoch {saved.epoch}" if saved else None
    else:
        blocks = f"{epochs} block{'s' if epochs != 1 else ''}"
        length = f"{config.steps} steps in {blocks} of {per_epoch}, a line after each"
        done = f"step {saved.epoch * per_epoch}" if saved else None
    verb, start = ("continuing", f" from {done}") if saved else ("training", "")
    return (
        f"vma: {verb} {what} with the {config.address} address on {config.dataset}{start}: {length}"
    )


def _bounds(address, num_samples, num_particles):
    if address == "soft":
        return {
            "test_nll_nats": f"-IWAE-{num_samples}, samples from q(z | x)",
            "kl_z": "analytic KL(q(z | x) ‖ N(0, I))",
            "kl_address": "None: the soft-attention read has no address",
        }
    return {
        "test_nll_nats": f"-IWAE-{num_samples}, samples from q(a, z | x)",
        "kl_z": f"analytic KL averaged over {num_particles} draws a ~ q(a | x)",
    }


def evaluate_vma(checkpoint, *, out_dir, num_samples=1000, num_particles=None, root=None, log=None):
    """Rebuild a VMA (or the soft-attention baseline) from a checkpoint of
    :func:`run` and evaluate it again.

    :param int num_particles: draws of a for the KL of z (default: the training run's).
    :param root: the data folder, where it moved since training.
    :param log: optional callable taking a line before the evaluation.
    :returns: the results dict also written to ``out_dir/results.json``.
    """
    saved = load_checkpoint(checkpoint)
    if saved.config.get("model") != "vma":
        raise ValueError(
            f"checkpoint {checkpoint} holds a {saved.config.get('model')!r} model, expected 'vma'"
        )
    options = saved.config["options"]
    # a run before the stored options left out those its mode ignores may hold some: they
    # changed nothing then, and are left out now
    ignored = vma_ignored(options["mode"], options["address"], options.get("net", "mlp"))
    options = {name: value for name, value in options.items() if name not in ignored}
    config = VMAConfig.build(**options, **({"root": root} if root else {}))
    architecture = saved.config["vma"]
    model_class = SoftAttentionVAE if config.address == "soft" else VMA
    vma = model_class(**architecture)
    vma.load_state_dict(saved.state_dict)
    vma.to(evaluation_device())
    _, test = vma_data(config)
    if log is not None:
        log(f"vma: evaluating the {config.mode} model on {config.dataset} (IWAE-{num_samples})")
    if num_particles is None:
        num_particles = config.num_particles
    num_particles = as_positive_int(num_particles, "num_particles")
    results = _evaluate(vma, config, test, num_samples, num_particles)
    results.update(
        {
            # what train_vma's results say of the evaluation, so that the two compare
            "dataset": config.dataset,
            "image_size": test.event_shape[-1],
            "binarization": test.binarize,
            "split": "test",
            "device": str(evaluation_device()),
            "num_particles": num_particles,
            "bounds": _bounds(config.address, num_samples, num_particles),
            "checkpoint": str(checkpoint),
        }
    )
    per_epoch = min(config.steps_per_epoch, config.steps) if config.mode != "learned" else None
    results["figures"] = _figures(vma, results, saved.history, out_dir, per_epoch)
    write_results(results, out_dir)
    return results


def compare_vma(*, out_dir, addresses=ADDRESSES, on_run=None, resume=False, **options):
    """Train one run per address in the same setting and compare their test NLL (§4.2):
    VMA with an enumerated or sampled address against the soft-attention baseline.

    :param out_dir: the runs go to ``out_dir/<address>``; ``comparison.json`` and,
        for few-shot, ``nll_by_classes.png`` (the NLL against the classes in
        memory, Fig. 5A) to ``out_dir``.
    :param tuple addresses: the addresses compared, each as in :func:`train_vma`.
    :param on_run: called with each address before its run, or ``None``.
    :param bool resume: continue each run whose folder holds an interrupted one (the others
        start from their beginning).
    :param options: the other arguments of :func:`train_vma`, the same for every run.
    :returns: ``{"runs": {address: results}, "table": rows}``, one row per memory
        size (the few-shot sweep, or the one test memory) with each address's test NLL
        and its standard error over the test episodes (``None`` for one test memory).
    """
    out_dir = Path(out_dir)
    runs = {}
    for address in addresses:
        if on_run is not None:
            on_run(address)
        folder = out_dir / address
        runs[address] = train_vma(
            out_dir=folder,
            address=address,
            resume=resume and interrupted_run_file(folder) is not None,
            **options,
        )
    sweeps = {
        a: run.get("memory_size_sweep") or [{"classes": None, **run}] for a, run in runs.items()
    }
    table = [
        {
            "classes": rows[0]["classes"],
            "memory_size": rows[0]["memory_size"],
            **{f"{a}_test_nll_nats": sweeps[a][i]["test_nll_nats"] for a in addresses},
            **{f"{a}_test_nll_se_nats": sweeps[a][i].get("test_nll_se_nats") for a in addresses},
        }
        for i, rows in enumerate(zip(*sweeps.values(), strict=True))
    ]
    comparison = {"runs": runs, "table": table}
    if len(table) > 1:
        comparison["figure"] = str(_save_nll_by_classes(sweeps, out_dir / "nll_by_classes.png"))
    (out_dir / "comparison.json").write_text(json.dumps(comparison, indent=2) + "\n")
    return comparison


def _save_nll_by_classes(sweeps, path):
    """Fig. 5A: each address's test NLL against the classes in memory, mean ± standard error
    over the test episodes, with VMA's optimum (dashed); below, where the runs have it, the
    NLL above each address's own optimum, paired on each episode's queries, ± its standard
    error: the comparison with the line, without the spread of the query classes that the
    points above share at every size."""
    paired = all("nll_above_optimum_nats" in row for rows in sweeps.values() for row in rows)
    figure = Figure(figsize=(5, 5.4 if paired else 3.2))
    ax, below = figure.subplots(2, 1, sharex=True) if paired else (figure.subplots(), None)
    episodes = set()
    for address, rows in sweeps.items():
        classes = [row["classes"] for row in rows]
        errors = [row.get("test_nll_se_nats") for row in rows]
        line, _, _ = ax.errorbar(
            classes,
            [row["test_nll_nats"] for row in rows],
            yerr=None if None in errors else errors,
            fmt="o-",
            capsize=3,
            label=address,
        )
        episodes.update(row.get("episodes") for row in rows)
        first = min(classes)
        at = "1 class" if first == 1 else f"{first} classes"
        ratio = "C" if first == 1 else f"C / {first}"
        if address != "soft":
            optimum = [row["optimum_nll_nats"] for row in rows]
            # Fig. 5A's dashed line: the optimum for disjoint classes, from the smallest memory
            label = f"{address}: NLL at {at} + log {ratio}"
            ax.plot(classes, optimum, "--", color=line.get_color(), label=label)
        if below is not None:
            errors = [row["nll_above_optimum_se_nats"] for row in rows]
            below.errorbar(
                classes,
                [row["nll_above_optimum_nats"] for row in rows],
                yerr=None if None in errors else errors,
                fmt="o-",
                capsize=3,
                color=line.get_color(),
                label=address,
            )
    ax.set_xscale("log", base=2)
    ax.set_ylabel("test NLL, nats per image")
    if len(episodes) == 1 and None not in episodes:
        ax.set_title(
            f"mean ± standard error over {episodes.pop()} test episodes, "
            "the same queries at every size",
            fontsize=8,
        )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if below is not None:
        below.axhline(0.0, color="black", linestyle="--", linewidth=1)
        below.set_ylabel(f"NLL − (NLL at {at}\n+ log {ratio}), nats", fontsize=9)
        below.set_title("paired on each episode's queries, ± standard error", fontsize=8)
        below.grid(alpha=0.3)
        below.legend(fontsize=8)
    (below or ax).set_xlabel("classes in memory")
    return save_figure(figure, path)


DEMO = {
    # recall and few-shot addresses, recall steps, IWAE K: quick stays under ~40 s (1000 steps
    # reach log 16 + 0.24 nats, 2000 steps + 0.08 in 65 s) so that the quick demo keeps
    # within its 2 minutes
    "quick": {"recall": ("enum", "soft"), "steps": 1200, "num_samples": 200},
    "full": {
        "recall": ("enum", "vimco", "soft"),
        "fewshot": ("enum", "soft"),
        "steps": 2000,
        "num_samples": 1000,
    },
}
DEMO_NETS = {"hidden": (64,), "latent_dim": 4, "embedding_dim": 32, "lr": 1e-2}


def summary(results):
    """The test bounds of a VMA run as a Markdown table (and few-shot accuracies, where
    measured): for the terminal."""
    kl_address = results.get("kl_address")
    rows = [
        (f"test NLL, −IWAE-{results['num_samples']} (nats/image)", results["test_nll_nats"]),
        ("ELBO (nats/image)", results["elbo_nats"]),
        ("reconstruction", results["reconstruction"]),
        ("KL(q(a\\|x)‖p(a))", kl_address),
        ("E KL(q(z)‖p(z))", results["kl_z"]),
    ]
    if "log_memory_size" in results:
        rows.append(("log memory size (a lookup table's NLL)", results["log_memory_size"]))
    lines = [
        f"| {results['mode']}, address {results['address']}, a memory of "
        f"{results['memory_size']} | value |",
        "| --- | ---: |",
        *(f"| {name} | {'—' if value is None else f'{value:.3f}'} |" for name, value in rows),
    ]
    accuracy = results.get("classification_accuracy") or {}
    if accuracy:
        shown = ", ".join(f"{task} {100 * value:.1f} %" for task, value in accuracy.items())
        lines += ["", f"Few-shot classification accuracy: {shown}."]
    return "\n".join(lines)


def _plus_minus(value, error):
    # "mean ± standard error" for the demo's tables; "–" where there is no value
    if value is None:
        return "–"
    return f"{value:.2f}" if error is None else f"{value:.2f} ± {error:.2f}"


class _RunProgress:
    """One line on stderr before each run of a sequence: which run of how many, and the time
    left, estimated from the seconds per training step of the runs done so far."""

    def __init__(self, steps, enabled):
        self.steps, self.enabled, self.done = list(steps), enabled, 0
        self.start = time.perf_counter()

    def __call__(self, label):
        if not self.enabled:
            return
        done_steps = sum(self.steps[: self.done])
        left = ""
        if done_steps:
            per_step = (time.perf_counter() - self.start) / done_steps
            left = f", about {per_step * sum(self.steps[self.done :]):.0f} s left"
        steps = self.steps[self.done]
        print(
            f"vma demo [{self.done + 1}/{len(self.steps)}] {label}, {steps} steps{left}",
            file=sys.stderr,
            flush=True,
        )
        self.done += 1


def demo_section(out_dir, quick, seed=0, progress=True, resume=False):
    """The VMA section of ``pyromem demo``: train-to-recall with VMA and the soft-attention
    baseline (and, in full, VIMCO and few-shot VMA against soft attention).

    :param out_dir: the demo's folder; runs go to ``out_dir/vma-recall-<address>`` and
        ``out_dir/vma-fewshot/<address>``.
    :param bool quick: two recall runs (enumeration, soft attention) instead of five runs.
    :param bool resume: continue the runs interrupted there from their checkpoints.
    :returns: ``(markdown, results)``, results keyed ``"<mode>_<address>"``.
    """
    out_dir, settings = Path(out_dir), DEMO["quick" if quick else "full"]
    options = {
        "num_samples": settings["num_samples"],
        "num_threads": 1,
        "seed": seed,
        "progress": progress,
        "overwrite": True,
        **DEMO_NETS,
    }
    results, lines = {}, ["## Variational Memory Addressing", ""]
    lines += [
        "What to look at: VMA's test NLL should come close to log 16 = 2.77 nats, the cost of "
        "naming one of 16 slots, while soft attention, which blends the slots, stays far above "
        "it; in VMA's samples each image should copy the slot above it, where soft "
        "attention's blur several slots. The training curves should rise and level off.",
        "",
        "Train-to-recall on `digits` (8×8, static binarisation): each step's memory is 16 random "
        "training digits and the targets are drawn from it; tested with 16 test digits in "
        "memory, so an optimal lookup table scores NLL = log 16 = 2.77 nats. Adam at 1e-2 "
        "decays on a cosine to 0. `soft` is §4.2's soft-attention baseline: the same nets, "
        "the memory read as Σ_a w_a(z) m_a instead of a slot chosen by an address.",
        "",
        "| mode | address | steps | memory size | test NLL (nats) | log memory size "
        "| KL(q(a\\|x)‖p(a)) | E KL(q(z)‖p(z)) | reconstruction |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    fewshot_steps = settings["steps"] // 4
    show = _RunProgress(
        [settings["steps"]] * len(settings["recall"])
        + [fewshot_steps] * len(settings.get("fewshot", ())),
        progress,
    )
    for address in settings["recall"]:
        show(f"recall, {address}")
        folder = out_dir / f"vma-recall-{address}"
        run = train_vma(
            out_dir=folder,
            resume=resume and interrupted_run_file(folder) is not None,
            mode="recall",
            address=address,
            memory_size=16,
            steps=settings["steps"],
            **options,
        )
        results[f"recall_{address}"] = run
        kl_address = "–" if run["kl_address"] is None else f"{run['kl_address']:.2f}"
        lines.append(
            f"| recall | {address} | {settings['steps']} | {run['memory_size']} "
            f"| {run['test_nll_nats']:.2f} | {run['log_memory_size']:.2f} | {kl_address} "
            f"| {run['kl_z']:.2f} | {run['reconstruction']:.2f} |"
        )
    lines += [
        "",
        f"Test NLL: −IWAE-{settings['num_samples']} with samples from q(a, z | x) (from q(z | x) "
        "for soft attention, which has no address: no KL of it); KL(q(a|x)‖p(a)) exact; the z "
        "term analytic, averaged over 4 draws of a. "
        + ("VIMCO trains with K = 4, " if "vimco" in settings["recall"] else "")
        + "enum sums the address out exactly, soft attention trains with the one-sample ELBO.",
        "",
    ]
    if "fewshot" in settings:
        addresses, steps = settings["fewshot"], fewshot_steps
        comparison = compare_vma(
            out_dir=out_dir / "vma-fewshot",
            mode="fewshot",
            addresses=addresses,
            memory_classes=(1, 2, 4, 8),
            steps=steps,
            on_run=lambda address: show(f"few-shot, {address}"),
            resume=resume,
            **options,
        )
        results.update({f"fewshot_{a}": run for a, run in comparison["runs"].items()})
        lines += [
            f"Few-shot on `glyphs` (16×16, 8 classes × 4 shots in memory, {steps} steps), "
            "tested on unseen classes with 1 to 8 classes in memory (Fig. 5A). Each of "
            f"{EVAL_EPISODES} test episodes draws 8 classes once and queries "
            f"{TEST_QUERIES} images of the first; the memory at C holds the shots of the "
            "first C classes, so every C is measured on the same queries, with C − 1 "
            "confounding classes added to their own. The optimum is VMA's NLL at one class "
            "+ log C, what a model of disjoint classes pays for the classes it must tell "
            "apart (Fig. 5A's dashed line: a reference, not a bound, since classes that share "
            "strokes can help each other). Each NLL is the mean ± standard error over the "
            "episodes, which differ most in how hard their query class is; 'above optimum' is "
            "the NLL minus the optimum, paired on each episode's queries, ± its standard "
            "error: the comparison with the line. Look at whether VMA's test NLL stays close "
            "to it as classes are added to its memory while soft attention's rises. "
            "Classification accuracy from q(a|x) (from the read weights at the mean of q(z|x) "
            "for soft attention):",
            "",
            *(
                f"- {a}: "
                + ", ".join(f"{k} {v:.2f}" for k, v in run["classification_accuracy"].items())
                for a, run in comparison["runs"].items()
            ),
            "",
            "| classes in memory | "
            + " | ".join(f"{a} test NLL" for a in addresses)
            + f" | optimum | {addresses[0]} above optimum |",
            "| ---: | " + "---: | " * len(addresses) + "---: | ---: |",
            *(
                f"| {row['classes']} | "
                + " | ".join(
                    _plus_minus(row[f"{a}_test_nll_nats"], row.get(f"{a}_test_nll_se_nats"))
                    for a in addresses
                )
                + f" | {optimum['optimum_nll_nats']:.2f} | "
                + _plus_minus(
                    optimum.get("nll_above_optimum_nats"),
                    optimum.get("nll_above_optimum_se_nats"),
                )
                + " |"
                for row, optimum in zip(
                    comparison["table"],
                    comparison["runs"][addresses[0]]["memory_size_sweep"],
                    strict=True,
                )
            ),
            "",
            f"![few-shot test NLL against classes in memory]"
            f"({Path(comparison['figure']).relative_to(out_dir)})",
            "",
        ]
    for name, run in results.items():
        figure = Path(run["figures"]["samples"]).relative_to(out_dir)
        lines += [f"![{name}: memory slots and samples given the memory]({figure})", ""]
        if "elbo_curve" in run["figures"]:
            curve = Path(run["figures"]["elbo_curve"]).relative_to(out_dir)
            lines += [f"![{name}: the training ELBO]({curve})", ""]
    return "\n".join(lines), results
