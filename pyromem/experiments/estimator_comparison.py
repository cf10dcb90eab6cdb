"""Recipe: VMA's address estimators side by side on few-shot episodes (issue: NVIL, RWS and
Gumbel relaxations, which Bornschein et al. 2017 left untried, against VIMCO and enumeration).

1. Trains a few-shot VMA with the address enumerated for ``train_steps`` steps
   (:func:`pyromem.experiments.vma.train_vma`): the parameter point measured.
2. On one episode of unseen test classes (C classes × S shots in memory, the queries of the
   same classes), :func:`pyromem.diagnostics.compare_estimators.compare_estimators` gives
   each estimator's gradient bias and variance for q(a|x)'s parameters against the exact
   gradient of the objective it estimates, and its training-step time.
3. With ``nll_steps`` > 0, trains each estimator (and ``soft``) from scratch for that many
   steps and adds its test NLL (−IWAE-K on the test sweep's C classes).

Writes ``config.toml``, ``results.json``, ``table.md``, ``estimators.json`` and
``estimators.png`` to ``out_dir``; ``estimators.json`` is written once the comparison is
measured, before the NLL runs. With ``resume``, a run interrupted in ``out_dir`` goes on
where it stopped: each training (``point/``, ``nll-NAME/``) continues from its last
checkpoint (a finished one trains no further), and the comparison is read back from
``estimators.json`` rather than measured again.
"""

import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import pyro
import torch

from pyromem.data import sample_few_shot
from pyromem.diagnostics.compare_estimators import (
    ESTIMATORS,
    RESOLVED,
    EstimatorComparison,
    compare_estimators,
    step_row,
)
from pyromem.experiments.configs import CompareEstimatorsConfig, VMAConfig
from pyromem.experiments.options import read_config_file
from pyromem.experiments.vae import finish_run, table_summary, torch_threads
from pyromem.experiments.vma import objective, train_vma, vma_data
from pyromem.models.vma import VMA, SoftAttentionVAE
from pyromem.train import last_checkpoint, load_checkpoint
from pyromem.train.checkpoint import write_atomically

IMAGE_SIDE = {"glyphs": 16}
#: The options a resumed run may change: they change none of its numbers.
FREE_ON_RESUME = ("progress", "num_threads")


def run_compare_estimators(out_dir, **options):
    """:func:`run` with the :class:`~pyromem.experiments.configs.CompareEstimatorsConfig`
    of ``options``."""
    return run(CompareEstimatorsConfig.build(**options), out_dir)


def _say(config, line):
    if config.progress:
        print(f"compare-estimators: {line}", file=sys.stderr, flush=True)


def run(config, out_dir):
    """Train the point, compare the estimators, write table, figure and JSON; returns results."""
    start = time.perf_counter()
    out_dir = Path(out_dir)
    if config.resume:
        check_same_options(config, out_dir)
    config.start_run(out_dir)
    measured = out_dir / "estimators.json"
    if not config.resume:
        measured.unlink(missing_ok=True)  # an earlier run's, which --overwrite replaces
    names = config.estimators or ESTIMATORS + ("soft",)
    size = config.size or IMAGE_SIDE.get(config.dataset)
    vma_options = {
        "mode": "fewshot",
        "dataset": config.dataset,
        "test_classes": config.test_classes,
        "root": config.root,
        "download": config.download,
        "size": size,
        "classes": config.classes,
        "shots": config.shots,
        "queries": config.queries,
        "memory_classes": (config.classes,),
        "num_particles": config.num_particles,
        "latent_dim": config.latent_dim,
        "embedding_dim": config.embedding_dim,
        "hidden": config.hidden,
        "lr": config.lr,
        "num_samples": config.num_samples,
        "num_threads": config.num_threads or 1,
        "seed": config.seed,
        "progress": config.progress,
        "overwrite": True,
    }
    with torch_threads(config.num_threads or 1):
        point, point_resumed = _train(
            config,
            out_dir / "point",
            "the point measured (enum)",
            dict(vma_options, address="enum", steps=config.train_steps),
        )
        saved = load_checkpoint(point["checkpoint"])
        vma = VMA(**saved.config["vma"])
        vma.load_state_dict(saved.state_dict)
        _, test = vma_data(VMAConfig.build(**vma_options))
        generator = torch.Generator().manual_seed(config.seed + 2)
        episode = sample_few_shot(
            test, config.classes, config.shots, config.queries, generator=generator
        )
        pyro.set_rng_seed(config.seed)
        estimators = [name for name in names if name in ESTIMATORS]
        # measured in the run this one resumes, at the same point (its training finished)
        comparison = _measured(measured) if point_resumed else None
        if comparison is not None:
            _say(config, f"the comparison: as measured before the interruption ({measured})")
        else:
            comparison = _compare(config, names, vma, episode, estimators)
            text = json.dumps({"rows": comparison.rows, "settings": comparison.settings})
            write_atomically(measured, lambda file: file.write(text))
        if config.nll_steps:
            for row in comparison.rows:
                address = row["estimator"]
                trained, _ = _train(
                    config,
                    out_dir / f"nll-{address}",
                    f"{address} for the test NLL",
                    dict(vma_options, address=address, steps=config.nll_steps),
                )
                row["test_nll_nats"] = trained["test_nll_nats"]
    out_dir.mkdir(parents=True, exist_ok=True)
    comparison.settings.update(
        {
            "dataset": config.dataset,
            "image_size": size,
            "split": "test classes",
            "binarization": test.binarize,
            "classes": config.classes,
            "shots": config.shots,
            "train_steps": config.train_steps,
            "point_test_nll_nats": point["test_nll_nats"],
            "nll_steps": config.nll_steps,
            "test_nll": f"-IWAE-{config.num_samples} on {config.classes}-class test episodes",
            "seed": config.seed,
        }
    )
    table = "\n\n".join(
        [
            comparison.table(),
            setting_caption(comparison.settings, config),
            verdict(comparison.rows, comparison.settings),
        ]
    )
    (out_dir / "table.md").write_text(table + "\n")
    results = {
        "table": table,
        "rows": comparison.rows,
        "settings": comparison.settings,
        "figures": {"estimators": str(comparison.plot(out_dir / "estimators.png"))},
        "json": str(comparison.to_json(out_dir / "estimators.json")),
    }
    return finish_run(results, config, start, out_dir)


def _compare(config, names, vma, episode, estimators):
    """The comparison of the ``estimators`` at the point ``vma`` on ``episode``, with the
    step time of ``soft`` when ``names`` holds it."""
    comparison = compare_estimators(
        vma,
        episode.query,
        episode.memory,
        estimators=estimators,
        num_particles=config.num_particles,
        gradient_draws=config.gradient_draws,
        mean_draws=config.mean_draws,
        reference_draws=config.reference_draws,
        posterior_samples=config.posterior_samples,
        temperature=config.temperature,
        baseline_steps=config.baseline_steps,
        max_tuples=config.max_tuples,
        step_repeats=config.step_repeats,
        progress=(lambda line: _say(config, line)) if config.progress else None,
    )
    if "soft" in names:
        soft = SoftAttentionVAE(
            vma.input_shape,
            latent_dim=config.latent_dim,
            embedding_dim=config.embedding_dim,
            hidden=config.hidden,
        ).train()
        loss_fn = objective("soft")(soft.model, soft.guide)
        comparison.rows.append(
            {
                "estimator": "soft",
                "objective": "ELBO (no address: not compared)",
                "relative_bias": None,
                "relative_bias_noise": None,
                "relative_std": None,
                **step_row(soft, loss_fn, episode.query, episode.memory, config.step_repeats),
            }
        )
    return comparison


def _train(config, folder, what, options):
    """:func:`~pyromem.experiments.vma.train_vma` in ``folder`` for ``options["steps"]``
    steps; with ``config.resume``, continued from the checkpoint there when this run trained
    it, or, finished and scored, its results read back. Returns ``(results, resumed)``."""
    steps = options["steps"]
    options = dict(options, steps_per_epoch=min(100, steps))
    checkpoint = last_checkpoint(folder)
    resume = config.resume and _trained_with(checkpoint, options)
    finished = _finished(folder / "results.json", checkpoint) if resume else None
    if finished is not None:
        _say(config, f"{what}: {steps} steps, trained and scored before the interruption")
        return finished, True
    start_from = "continuing from its last checkpoint" if resume else "training"
    _say(config, f"{what}: {start_from}, to {steps} steps")
    return train_vma(out_dir=folder, resume=resume, **options), resume


def _finished(results, checkpoint):
    """The results at ``results`` of the training whose checkpoint is ``checkpoint``, or
    ``None`` where they are not its (older) or not there."""
    try:
        if results.stat().st_mtime_ns < checkpoint.stat().st_mtime_ns:
            return None
        return json.loads(results.read_text())
    except (OSError, ValueError):
        return None


def _trained_with(checkpoint, options) -> bool:
    """Whether ``checkpoint`` holds a training of the VMA of ``options`` (a run of another
    setting, replaced by ``--overwrite`` before it wrote a checkpoint, may have left one)."""
    if not checkpoint.is_file():
        return False
    saved = load_checkpoint(checkpoint).config.get("options", {})
    skipped = (*FREE_ON_RESUME, "resume", "overwrite")
    now = VMAConfig.build(**options).to_dict()
    return all(saved.get(name) == value for name, value in now.items() if name not in skipped)


def _measured(path):
    """The :class:`EstimatorComparison` that ``path`` holds (its test NLLs left out: the runs
    fill them again), or ``None`` when there is none to read."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    rows = [{k: v for k, v in row.items() if k != "test_nll_nats"} for row in saved["rows"]]
    return EstimatorComparison(rows, saved["settings"])


def check_same_options(config, out_dir) -> None:
    """Refuse, in one line and before any work, to resume the run in ``out_dir`` with options
    other than its ``config.toml``'s (other than :data:`FREE_ON_RESUME`): its finished
    trainings and comparison would be mixed with the new ones.

    :raises ValueError: if ``out_dir`` holds no run, or one of other options.
    """
    path = Path(out_dir) / "config.toml"
    if not path.is_file():
        raise ValueError(f"resume: there is no run in {out_dir} to continue")
    was = read_config_file(path, config.recipe)
    fields = {field.name: field for field in dataclasses.fields(config)}
    now = {
        name: value
        for name, value in config.to_dict().items()
        if value is not None and fields[name].metadata.get("stored", True)
    }
    for name in dict.fromkeys([*was, *now]):
        if name not in FREE_ON_RESUME and was.get(name) != now.get(name):
            before, after = was.get(name, "unset"), now.get(name, "unset")
            raise ValueError(
                f"resume: the run in {out_dir} has {name}={before!r}, this one {name}={after!r}; "
                "give its options to continue it, or pass --overwrite to start again"
            )


def setting_caption(settings, config):
    """The table's caption: the point measured, the episode, and what each column is."""
    nll = (
        f"test NLL: {settings['test_nll']} per image after {settings['nll_steps']} training "
        "steps of that estimator from scratch, one run each, no error bar (lower is better)"
        if settings["nll_steps"]
        else "test NLL: not run (`--nll-steps N` trains each estimator N steps and fills it)"
    )
    side = settings["image_size"]
    shape = f"{side}×{side}, " if side else ""
    return (
        f"Setting: one parameter point, a VMA trained {settings['train_steps']} steps with the "
        f"address enumerated on {settings['classes']}-class × {settings['shots']}-shot "
        f"episodes of `{settings['dataset']}` ({shape}{settings['binarization']} "
        f"binarisation; its test NLL {settings['point_test_nll_nats']:.2f} nats per image), "
        f"measured on one episode of unseen test classes: |M| = {settings['memory_size']} "
        f"slots, {settings['batch']} queries, K = {settings['num_particles']} particles for "
        f"vimco and rws, τ = {settings['temperature']:g} for gumbel; gradients with respect "
        f"to {settings['parameters']}, seed {settings['seed']}. Columns: relative bias "
        f"‖E ĝ − g*‖ / ‖g*‖, g* the exact gradient (address summed out) of the objective in "
        f"the second column, E ĝ the mean of {settings['mean_draws']} replicates, g* of "
        f"{settings['reference_draws']}; MC noise of it: the relative bias that Monte Carlo "
        f"error alone gives (a bias within {RESOLVED:g} × it is not told from 0); relative "
        f"std: √E‖ĝ − E ĝ‖² / ‖g*‖ of one gradient of the batch, from "
        f"{settings['gradient_draws']} draws (lower is better); step (ms): the median of "
        f"{config.step_repeats} timed training steps (forward, backward, Adam) after one "
        f"warm-up, on this machine (the figure's whiskers: the fastest to the slowest); "
        f"{nll}. Bias, MC noise and std are unitless ratios."
    )


def verdict(rows, settings):
    """Which estimators' biases this run resolves, the least noisy, and the best test NLL."""
    compared = [row for row in rows if row["relative_bias"] is not None]
    lines = []
    if compared:
        biased = [
            f"{row['estimator']} ({row['relative_bias']:.3g}, {RESOLVED:g} × noise = "
            f"{RESOLVED * row['relative_bias_noise']:.3g})"
            for row in compared
            if row["relative_bias"] > RESOLVED * row["relative_bias_noise"]
        ]
        unresolved = [
            row["estimator"]
            for row in compared
            if row["relative_bias"] <= RESOLVED * row["relative_bias_noise"]
        ]
        lines.append(
            "Bias resolved (beyond "
            f"{RESOLVED:g} × its MC noise): " + (", ".join(biased) or "none") + "; not told "
            "from 0: " + (", ".join(unresolved) or "none") + "."
        )
        quietest = min(compared, key=lambda row: row["relative_std"])
        draws = settings["gradient_draws"]
        lines.append(
            f"Least noisy gradient: {quietest['estimator']} (relative std "
            f"{quietest['relative_std']:.3g}; each std is from {draws} draws, itself "
            f"uncertain by up to about 1/√(2({draws} − 1)) = "
            f"{1 / math.sqrt(2 * (draws - 1)):.0%})."
        )
    trained = [row for row in rows if row.get("test_nll_nats") is not None]
    if trained:
        best = min(trained, key=lambda row: row["test_nll_nats"])
        lines.append(
            f"Lowest test NLL: {best['estimator']} ({best['test_nll_nats']:.2f} nats), from "
            "one training run per estimator: rerun with other `--seed`s before ranking "
            "close values."
        )
    lines.append(
        "`estimators.png` draws the table's three measured columns: relative bias (a hollow "
        "circle: not told from 0; a dash: its MC noise) and relative std on log axes, step "
        "time as bars (the median; whiskers: the fastest and slowest timed step)."
    )
    return " ".join(lines)


summary = table_summary  # the comparison table, for the terminal
