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
``estimators.png`` to ``out_dir``.
"""

import sys
import time
from pathlib import Path

import pyro
import torch

from pyromem.data import sample_few_shot
from pyromem.diagnostics.compare_estimators import ESTIMATORS, compare_estimators, step_ms
from pyromem.experiments.configs import CompareEstimatorsConfig, VMAConfig
from pyromem.experiments.vae import finish_run, table_summary, torch_threads
from pyromem.experiments.vma import objective, train_vma, vma_data
from pyromem.models.vma import VMA, SoftAttentionVAE
from pyromem.train import load_checkpoint

IMAGE_SIDE = {"glyphs": 16}


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
    config.start_run(out_dir)
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
        _say(config, f"training the point measured ({config.train_steps} steps, enum)")
        point = train_vma(
            out_dir=out_dir / "point",
            address="enum",
            steps=config.train_steps,
            steps_per_epoch=min(100, config.train_steps),
            **vma_options,
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
                    "step_ms": step_ms(
                        soft, loss_fn, episode.query, episode.memory, config.step_repeats
                    ),
                }
            )
        if config.nll_steps:
            for row in comparison.rows:
                address = row["estimator"]
                _say(config, f"training {address} for the test NLL ({config.nll_steps} steps)")
                trained = train_vma(
                    out_dir=out_dir / f"nll-{address}",
                    address=address,
                    steps=config.nll_steps,
                    steps_per_epoch=min(100, config.nll_steps),
                    **vma_options,
                )
                row["test_nll_nats"] = trained["test_nll_nats"]
    table = comparison.table()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "table.md").write_text(table + "\n")
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
    results = {
        "table": table,
        "rows": comparison.rows,
        "settings": comparison.settings,
        "figures": {"estimators": str(comparison.plot(out_dir / "estimators.png"))},
        "json": str(comparison.to_json(out_dir / "estimators.json")),
    }
    return finish_run(results, config, start, out_dir)


summary = table_summary  # the comparison table, for the terminal
