"""Recipe: the associative-retrieval benchmark of Annabi et al. (2022), §5 and App. E.4.

Trains (or loads) the VAE of the ``VAE-*`` methods on the dataset's train split, runs
:func:`pyromem.retrieval.retrieval_table` (hyper-parameters and thresholds chosen on the train
split, memories drawn from the test split), optionally the capacity sweep, and writes
``results.json``, ``table.md`` and figures: queries and retrieved patterns per method, and a
retrieval trajectory (decoded ẑ along the iterations, Fig. 7).
"""

import json
import sys
import time
from pathlib import Path

import torch

from pyromem.data import AUGMENTATIONS, load
from pyromem.data.validation import check_images
from pyromem.diagnostics.plots import save_image_rows
from pyromem.experiments.options import TABLE_ROWS_FILE, interrupted_run_file
from pyromem.experiments.vae import torch_threads, write_results
from pyromem.infer import MemoryFixedPoint
from pyromem.models import VAE
from pyromem.retrieval import (
    CAPACITY_SIZES,
    LATENT_METHODS,
    PER_CORRUPTION_METHODS,
    build_method,
    capacity_sweep,
    check_corruptions,
    check_memory_size,
    corrupt,
    default_corruptions,
    fit_for_column,
    format_table,
    retrieval_success,
    retrieval_table,
    sample_memory,
    save_capacity_plot,
)
from pyromem.train import fit, last_checkpoint, load_checkpoint
from pyromem.train.checkpoint import write_atomically

#: The methods of Tables 2-4 run by default (VAE-PC-GMM and VAE-BP-Hopfield on request).
DEFAULT_METHODS = (
    "GMM",
    "Hopfield",
    "NTM",
    "MemN2N",
    "VAE-GMM",
    "VAE-BP-GMM",
    "VAE-Hopfield",
    "VAE-NTM",
    "VAE-MemN2N",
    "VAE-GMM*",
)
#: The methods of the capacity sweep (App. E.4).
CAPACITY_METHODS = ("GMM", "VAE-GMM", "VAE-Hopfield")
FIGURE_QUERIES = 10


def load_retrieval_data(dataset, num_test=None, seed=0, root=None, download=False, size=None):
    """Train and test images of any dataset :func:`~pyromem.data.load` knows, ``(M, C, H, W)``.

    :param int num_test: for ``shapes``, the number of test scenes (the capacity sweep asks
        for as many as its largest N); ignored by other datasets.
    :param root: folder of a torchvision dataset or of the user's images.
    """
    options = {"num_scenes": num_test} if dataset == "shapes" and num_test else {}
    common = {"seed": seed, "root": root, "download": download, "size": size}
    train = load(dataset, "train", **common).images
    test = load(dataset, "test", **common, **options).images
    return train, test


def retrieval_vae(
    train_images,
    *,
    out_dir,
    checkpoint=None,
    epochs=60,
    seed=0,
    progress=True,
    net="mlp",
    latent_dim=16,
    scale=0.1,
    augment="none",
    data=None,
    resume=False,
):
    """The VAE of the ``VAE-*`` methods: loaded from a pyromem checkpoint, or trained with
    :func:`pyromem.train.fit` on the train split (an MLP or conv nets, by default d = 16 as in
    §5.1 and a Gaussian likelihood of fixed scale 0.1, so that eq. 10's squared error is its
    log-likelihood), with ``augment="dihedral"`` on their 8 dihedral views
    (:data:`~pyromem.data.AUGMENTATIONS`).

    :param dict data: the data config of ``train_images`` (``dataset``, ``root``, ``size``,
        ``seed``), stored in the checkpoint: ``pyromem eval vae`` scores the VAE on that
        dataset's test split, and a resumed run must train on the same images.
    :param bool resume: continue the training of the checkpoint in ``out_dir``, if there is
        one (the same model, data and seed), rather than start it again.
    :returns: ``(vae, info)`` with ``info`` a JSON-able dict.
    """
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {sorted(AUGMENTATIONS)}, got {augment!r}")
    if checkpoint is not None:
        saved = load_checkpoint(checkpoint)
        if saved.config.get("model") != "vae":
            raise ValueError(f"checkpoint {checkpoint} holds no VAE")
        vae = VAE(**saved.config["vae"])
        vae.load_state_dict(saved.state_dict)
        if tuple(vae.input_shape) != tuple(train_images.shape[1:]):
            raise ValueError(
                f"the checkpoint's VAE takes images {tuple(vae.input_shape)}, the dataset has "
                f"{tuple(train_images.shape[1:])}"
            )
        # the methods that refine a code score the images under the VAE's likelihood (a
        # Bernoulli VAE, as `pyromem train vae` makes of binarised digits, cannot score grey
        # levels): refused now rather than after the table
        support = vae.likelihood.support
        try:
            check_images(train_images, vae.input_shape, support, name="images")
        except ValueError as error:
            # the error's first clause says why; its advice is about training data
            why = str(error).split(";")[0]
            raise ValueError(
                f"checkpoint: the retrieval's {why}, and its VAE's is "
                f"{vae.config['likelihood']}; train the VAE with --likelihood gaussian"
            ) from None
        return vae.eval(), {"checkpoint": str(checkpoint), "config": vae.config}
    start = time.perf_counter()
    vae = VAE(train_images.shape[1:], latent_dim, "gaussian", net, (512,), {"scale": scale})
    data = dict(data or {}, augment=augment, seed=seed)
    result = fit(
        vae,
        AUGMENTATIONS[augment](train_images),
        out_dir=out_dir,
        epochs=epochs,
        batch_size=64,
        lr=1e-3,
        seed=seed,
        accelerator="cpu",
        progress=progress,
        config={"model": "vae", "vae": vae.config, "data": data},
        resume=resume and last_checkpoint(out_dir).is_file(),
    )
    info = {
        "checkpoint": str(result.checkpoint),
        "config": vae.config,
        "augment": augment,
        "epochs": result.epochs,
        "train_elbo_nats": result.history[-1]["train_elbo_nats"],
        "seconds": time.perf_counter() - start,
    }
    return result.model.eval(), info


def save_retrieval_figures(
    table, test_images, corruption, train_images, out_dir, trajectory_corruption=None
):
    """Queries and retrieved patterns per method, and a retrieval trajectory, as PNGs.

    Seed 0's memory; the first :data:`FIGURE_QUERIES` stored patterns and their queries.
    The methods trained per corruption (VAE-GMM*, VAE-NTM*, VAE-MemN2N*) are first given the
    reader that the table read ``corruption``'s column with (:func:`fit_for_column`). The
    trajectory's queries are corrupted by ``trajectory_corruption`` (``corruption`` when
    None). Each retrieved pattern is framed green when the table's criteria count it
    retrieved and red when not: these are the first queries of seed 0's cell.

    :returns: ``(figures, shown)``: the paths of the PNGs by name, and per method whether each
        query of the figure was retrieved (a list of bools).
    """
    out_dir = Path(out_dir)
    generator = torch.Generator().manual_seed(0)
    stored = test_images[sample_memory(len(test_images), table["memory_size"], generator)]
    queries = corrupt(stored, corruption, generator=generator)
    rows, titles = [stored[:FIGURE_QUERIES], queries[:FIGURE_QUERIES]], ["stored", corruption]
    marks, shown = [None, None], {}
    for name, method in table["methods"].items():
        if name in PER_CORRUPTION_METHODS:
            fit_for_column(
                method, train_images, table["corruptions"], corruption, table["memory_size"]
            )
        retrieved, memory = method.retrieve(queries, stored)
        retrieved = retrieved[:FIGURE_QUERIES]
        # scored as the table scores a query: in the method's space, against the whole memory
        hits = retrieval_success(
            retrieved,
            memory,
            torch.arange(len(retrieved), device=memory.device),
            table["threshold"][name],
        ).success.tolist()
        shown[name] = hits
        rows.append(method.render(retrieved).cpu())
        titles.append(f"{name} ({method.space}): {sum(hits)} of {len(hits)} retrieved")
        marks.append(hits)
    figures = {
        "retrievals": save_image_rows(
            [r.cpu() for r in rows],
            out_dir / "retrievals.png",
            titles,
            ncols=FIGURE_QUERIES,
            marks=marks,
        )
    }
    trajectory_corruption = trajectory_corruption or corruption
    trajectory_queries = corrupt(
        stored, trajectory_corruption, generator=torch.Generator().manual_seed(1)
    )
    trajectory = _trajectory(table, stored, trajectory_queries)
    if trajectory is not None:
        name, path, outcome = trajectory
        titles = [
            f"query {i}: " + ("✓ retrieved" if hit else f"✗ not retrieved ({why})")
            for i, hit, why in outcome
        ]
        figures["trajectory"] = save_image_rows(
            path,
            out_dir / "trajectory.png",
            titles,
            ncols=len(path[0]),
            title_colors=["tab:green" if hit else "tab:red" for _, hit, _ in outcome],
            heading=f"{name}, {trajectory_corruption} queries: ẑ_0 ... ẑ_T, then the stored "
            "pattern (last)",
        )
    return {key: str(value) for key, value in figures.items()}, shown


def _trajectory(table, stored, queries, steps=8, count=4, pool=32):
    # Fig. 7: a smaller rate than the full step (eq. 44 with alpha = sigma^2 / 4), for a smooth
    # path; VAE-GMM when it ran, else the pixel GMM. Each path is scored by the table's
    # criteria at its last iterate, in the method's space against the whole memory. Of the
    # first `pool` queries, half the rows are failures where there are enough of them (more
    # where fewer than half the queries succeed), so that the figure shows both marks.
    methods = table["methods"]
    for name in ("VAE-GMM", "GMM"):
        if name in methods:
            break
    else:
        return None
    method = methods[name]
    sigma = method.hyperparameters["sigma"]
    slow = build_method(
        name,
        method.image_shape,
        getattr(method, "vae", None),
        sigma=sigma,
        num_steps=steps,
    )
    pool = min(pool, len(queries))
    if name == "GMM":
        slow.reader.alpha = sigma**2 / 4
        _, memory, path = slow.retrieve(queries[:pool], stored, trajectory=True)
    else:
        memory_vae, memory = slow.memory_vae_of(stored)
        guide = MemoryFixedPoint(
            memory_vae.model, memory_vae.guide, num_steps=steps, alpha=sigma**2 / 4
        )
        with torch.no_grad():
            _, path = guide.refine(queries[:pool], trajectory=True)
    outcome = retrieval_success(
        path[-1], memory, torch.arange(pool, device=memory.device), table["threshold"][name]
    )
    hits = outcome.success.tolist()
    failures = [i for i, hit in enumerate(hits) if not hit]
    successes = [i for i, hit in enumerate(hits) if hit]
    taken = min(len(failures), max(count // 2, count - len(successes)))
    shown = sorted(failures[:taken] + successes[: count - taken])
    # rendered for the rows shown only
    index = torch.tensor(shown, device=memory.device)
    images = [slow.render(z[index]).cpu() for z in path]
    target = slow.render(slow.embed(stored[index])).cpu()
    rows = [torch.stack([step[r] for step in images] + [target[r]]) for r in range(len(shown))]
    reasons = [
        "nearer another pattern" if not near else "beyond the threshold"
        for near in outcome.nearest.tolist()
    ]
    return f"{name} (α = σ²/4)", rows, [(i, hits[i], reasons[i]) for i in shown]


def run_retrieval(
    out_dir,
    *,
    dataset="patches",
    methods=DEFAULT_METHODS,
    corruptions=None,
    memory_size=100,
    seeds=10,
    selection_seeds=2,
    checkpoint=None,
    vae_epochs=60,
    capacity=False,
    capacity_sizes=CAPACITY_SIZES,
    capacity_methods=CAPACITY_METHODS,
    seed=0,
    progress=True,
    log=None,
    root=None,
    download=False,
    size=None,
    vae_net="mlp",
    vae_latent_dim=16,
    vae_scale=0.1,
    vae_augment="none",
    resume=False,
):
    """Run the retrieval table (and with ``capacity`` the sweep) and write results and figures.

    :param out_dir: folder of ``results.json``, ``table.md`` and the figures.
    :param str dataset: ``"patches"``, ``"digits"``, ``"shapes"`` (or a torchvision dataset).
    :param list methods: method names; the ``VAE-*`` ones train or load a VAE.
    :param list corruptions: corruption names; default those of Tables 2-4 for the image size.
        The capacity sweep takes one (default: :func:`~pyromem.retrieval.capacity_sweep`'s,
        noise-0.6).
    :param checkpoint: a pyromem VAE checkpoint to load instead of training one.
    :param bool capacity: run the capacity sweep instead of the table, over the
        ``capacity_sizes`` that both splits hold (the others are listed as skipped).
    :param root: folder of a torchvision dataset or of the user's images (``--root``).
    :param str vae_net: ``"mlp"`` or ``"conv"``, the nets of the VAE trained.
    :param int vae_latent_dim: its d.
    :param float vae_scale: the fixed scale of its Gaussian likelihood.
    :param str vae_augment: ``"none"``, or ``"dihedral"`` to train the VAE on the 8 dihedral
        views of the training images (:func:`~pyromem.data.dihedral_views`).
    :param bool resume: continue an interrupted run in ``out_dir``: its VAE in ``out_dir/vae``
        from its last checkpoint (finished, it is used as it is) rather than train it again,
        and the table from the rows it finished (``out_dir/rows.json``, written as each row is
        done), when they were measured with the same data, VAE and settings (when not, a line
        says which setting differs and every row runs again); the capacity sweep likewise from
        the sizes it finished.
    :returns: the JSON-able results dict, also written to ``out_dir/results.json``.
    :raises ValueError: before any work, on a setting that cannot run: several corruptions
        for the sweep, no size of it that fits, ``resume`` without a VAE checkpoint.
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    methods = list(capacity_methods if capacity else methods)
    trains_vae = checkpoint is None and any(name in LATENT_METHODS for name in methods)
    vae_checkpoint = last_checkpoint(out_dir / "vae")
    # a VAE that finished, whose table was interrupted, has its checkpoint: it is resumed
    if resume and trains_vae and not vae_checkpoint.is_file():
        raise ValueError(f"resume: there is no checkpoint at {vae_checkpoint} to continue")
    if capacity and corruptions is not None and len(corruptions) != 1:
        raise ValueError(
            f"corruptions: the capacity sweep queries with one corruption, got {len(corruptions)}"
        )
    rows_path = out_dir / TABLE_ROWS_FILE
    if not resume:
        # a later --resume must not take the rows of the run this one replaces
        rows_path.unlink(missing_ok=True)
    num_test = max(capacity_sizes) if capacity else None
    train_images, test_images = load_retrieval_data(dataset, num_test, seed, root, download, size)
    shape = tuple(test_images.shape[1:])
    # none for the sweep: its own default
    corruptions = list(corruptions or ([] if capacity else default_corruptions(shape)))
    check_corruptions(corruptions, shape)  # before the VAE trains
    if capacity:
        # a memory of N is drawn from the test split, and the selection's from the train split
        fits = min(len(test_images), len(train_images))
        sizes = [n for n in capacity_sizes if n <= fits]
        skipped = [n for n in capacity_sizes if n > fits]
        if not sizes:
            raise ValueError(
                f"capacity_sizes: none fits the {len(test_images)} test and {len(train_images)} "
                f"train images of {dataset}; sizes of at most {fits} fit"
            )
        if skipped and log is not None:
            log(f"capacity: N = {', '.join(map(str, skipped))} skipped: at most {fits} fit")
    else:
        check_memory_size(memory_size, train_images, test_images)
    vae, vae_info = None, None
    if any(name in LATENT_METHODS for name in methods):
        if log is not None and checkpoint is None:
            start_from = "continuing from its last checkpoint" if resume else "training"
            log(f"the VAE of the VAE-* methods: {start_from}, to {vae_epochs} epochs")
        vae, vae_info = retrieval_vae(
            train_images,
            out_dir=out_dir / "vae",
            checkpoint=checkpoint,
            epochs=vae_epochs,
            seed=seed,
            progress=progress,
            net=vae_net,
            latent_dim=vae_latent_dim,
            scale=vae_scale,
            augment=vae_augment,
            data={"dataset": dataset, "root": root, "size": size},
            resume=resume,
        )
    torch.manual_seed(seed)
    results = {
        "dataset": dataset,
        "split": {"memories": "test", "selection and training": "train"},
        "num_images": {"train": len(train_images), "test": len(test_images)},
        "seeds": seeds,
        "vae": vae_info,
    }
    # what a kept row or size was measured with; a resumed run keeps only those of the same
    settings = {
        "capacity": capacity,
        "dataset": dataset,
        "root": None if root is None else str(root),
        "size": size,
        "seed": seed,
        "corruptions": corruptions,
        "seeds": seeds,
        "selection_seeds": selection_seeds,
        "vae": {k: v for k, v in (vae_info or {}).items() if k != "seconds"},
    }
    if not capacity:
        settings["memory_size"] = memory_size
    finished = _finished_rows(rows_path, settings, log) if resume else {}
    on_row = _RowsFile(rows_path, settings, finished)
    if capacity:
        sweep = capacity_sweep(
            methods,
            train_images,
            test_images,
            vae=vae,
            sizes=sizes,
            # the sweep's own default corruption unless one is given
            **({"corruption": corruptions[0]} if corruptions else {}),
            seeds=seeds,
            selection_seeds=selection_seeds,
            log=log,
            finished=finished,
            on_size=lambda n, record: on_row(str(n), record),
        )
        sweep["skipped"] = skipped
        results.update({"capacity": sweep, "memory_size": sweep["sizes"], "methods": methods})
        results["figures"] = {"capacity": str(save_capacity_plot(sweep, out_dir / "capacity.png"))}
    else:
        table = retrieval_table(
            methods,
            corruptions,
            train_images,
            test_images,
            vae=vae,
            memory_size=memory_size,
            seeds=seeds,
            selection_seeds=selection_seeds,
            log=log,
            finished={name: row for name, row in finished.items() if name in methods},
            on_row=on_row,
        )
        table["memory_size"] = memory_size
        figure_corruption = "noise-0.6" if "noise-0.6" in corruptions else corruptions[-1]
        # the trajectory shows the iterations at work: the figure's corruption, under which
        # the first iterate is far enough from the stored pattern for the path to show
        trajectory_corruption = figure_corruption
        figures_start = time.perf_counter()
        figures, shown = save_retrieval_figures(
            table, test_images, figure_corruption, train_images, out_dir, trajectory_corruption
        )
        table["timing"]["figures"] = time.perf_counter() - figures_start
        table.pop("methods")
        results.update(table)
        results["corruptions"] = corruptions
        results["figures"] = figures
        results["figure_retrievals"] = {"corruption": figure_corruption, "retrieved": shown}
        (out_dir / "table.md").write_text(markdown_tables(results))
    results["seconds"] = time.perf_counter() - start
    if "timing" in results:
        results["timing"]["vae"] = (vae_info or {}).get("seconds", 0.0)
        results["timing"]["total"] = results["seconds"]
        if log:
            log(timing_line(results["timing"]))
    write_results(results, out_dir)
    return results


class _RowsFile:
    """Writes the table's finished rows (by method), or the sweep's finished sizes (by
    ``str(N)``), with their settings to ``path`` as each is done (atomically: a run killed
    meanwhile leaves those before it). Those kept from an interrupted run stay in the file,
    those this run leaves out too."""

    def __init__(self, path, settings, finished):
        self.path, self.settings, self.rows = path, settings, dict(finished)

    def __call__(self, name, record):
        self.rows[name] = record
        text = json.dumps({"settings": self.settings, "rows": self.rows}, indent=1) + "\n"
        write_atomically(self.path, lambda file: file.write(text))


def _finished_rows(path, settings, log=None):
    """The rows that ``path`` (a :class:`_RowsFile`) holds, by method, when they were measured
    with ``settings``; none (with a line to ``log`` saying which setting differs) when not."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    now = json.loads(json.dumps(settings))
    changed = [key for key in now if saved.get("settings", {}).get(key) != now[key]]
    if changed:
        if log is not None:
            log(
                f"resume: the rows in {path} were measured with other {', '.join(changed)}; "
                "every row runs again"
            )
        return {}
    return saved.get("rows", {})


def timing_line(timing):
    """One line of where a table's wall-clock time went (``results["timing"]``)."""
    stages = ("vae", "selection", "training", "evaluation", "figures")
    names = {"vae": "VAE training", "training": "reader training"}
    parts = ", ".join(f"{names.get(k, k)} {timing.get(k, 0.0):.1f} s" for k in stages)
    line = f"time: {timing['total']:.1f} s in all: {parts}"
    if not timing["per_method"]:  # every row kept from an interrupted run
        return line
    slowest = max(timing["per_method"].items(), key=lambda kv: sum(kv[1].values()))
    return (
        f"{line}; slowest method {slowest[0]} "
        f"({', '.join(f'{k} {v:.1f} s' for k, v in slowest[1].items())})"
    )


def run(config, out_dir):
    """``pyromem retrieval``: :func:`run_retrieval` with a :class:`RetrievalConfig`, its
    config stored as ``out_dir/config.toml`` and progress lines on stderr."""
    config.start_run(out_dir)
    skipped = ("methods", "capacity_sizes", "overwrite", "num_threads")
    options = {k: v for k, v in config.to_dict().items() if k not in skipped}
    if config.methods:
        options["capacity_methods" if config.capacity else "methods"] = list(config.methods)
    if config.capacity_sizes:
        options["capacity_sizes"] = list(config.capacity_sizes)
    # one thread by default: on the 2-core machine shared with other jobs the default table
    # took 122 s on one thread and 294 s on two (docs/retrieval.md)
    log = (lambda line: print(line, file=sys.stderr)) if config.progress else None
    with torch_threads(config.num_threads):
        results = run_retrieval(out_dir, log=log, **options)
    results["config"] = config.to_dict()
    write_results(results, out_dir)
    return results


def summary(results):
    """The tables of a run as Markdown, for the terminal."""
    if "capacity" not in results:
        return markdown_tables(results)
    sweep = results["capacity"]
    rows = {
        name: dict(zip(map(str, sweep["sizes"]), cells, strict=True))
        for name, cells in sweep["results"].items()
    }
    table = format_table(rows)
    if sweep.get("skipped"):
        skipped = ", ".join(map(str, sweep["skipped"]))
        table += f"\n\nN = {skipped} skipped: more images than the splits hold."
    return table


def markdown_tables(results):
    """The success table (both criteria), then the nearest-pattern and threshold tables."""
    return (
        "\n\n".join(
            [
                "Successful retrievals (nearest pattern and within threshold), % mean ± std over "
                f"{results['seeds']} seed{'s' if results['seeds'] != 1 else ''}, "
                f"N = {results['memory_size']}:",
                format_table(results["results"]),
                "Nearest-pattern rate:",
                format_table(results["results"], "nearest"),
                "Threshold rate:",
                format_table(results["results"], "threshold"),
                "Patterns of a training memory that win their own dot-product read, the clean "
                "queries that dot-product attention (Hopfield, MemN2N) retrieves at a large "
                "inverse temperature: "
                + ", ".join(
                    f"{space} {cal['dot_product_winners']:.0f} %"
                    for space, cal in results["calibration"].items()
                )
                + ".",
            ]
        )
        + "\n"
    )


#: The demo's settings: ``digits`` (8×8), N = 100; few seeds and a subset of the methods.
DEMO = {
    "quick": {
        "methods": ("GMM", "Hopfield", "NTM", "VAE-GMM"),
        "corruptions": ("clean", "noise-0.2", "noise-0.6", "mask-4"),
        "seeds": 2,
        "vae_epochs": 10,
    },
    "full": {
        "methods": DEFAULT_METHODS,
        "corruptions": ("clean", "noise-0.2", "noise-0.6", "mask-4", "mask-6"),
        "seeds": 5,
        "vae_epochs": 60,
    },
}


def demo_section(out_dir, quick, seed=0, progress=True, resume=False):
    """The retrieval section of ``pyromem demo``: ``(markdown_text, results_dict)``.

    :param out_dir: the demo's folder; this section writes to ``out_dir/retrieval``.
    :param bool quick: fewer methods, corruptions, seeds and VAE epochs.
    :param bool resume: continue a table interrupted there (its VAE and finished rows).
    """
    settings = DEMO["quick" if quick else "full"]
    folder = Path(out_dir) / "retrieval"
    results = run_retrieval(
        folder,
        resume=resume and interrupted_run_file(folder) is not None,
        dataset="digits",
        methods=settings["methods"],
        corruptions=settings["corruptions"],
        memory_size=100,
        seeds=settings["seeds"],
        vae_epochs=settings["vae_epochs"],
        seed=seed,
        progress=progress,
        log=(lambda line: print(f"retrieval {line}", file=sys.stderr)) if progress else None,
    )
    rel = {k: Path(v).relative_to(out_dir) for k, v in results["figures"].items()}
    chosen = "; ".join(
        f"{name}: "
        + ", ".join(f"{k} = {v:.3g}" for k, v in h.items() if k in ("sigma", "beta", "gamma"))
        for name, h in results["hyperparameters"].items()
        if any(k in h for k in ("sigma", "beta", "gamma"))
    )
    lines = [
        "## Associative retrieval (Annabi et al. 2022, §5)",
        "",
        "What to look at: in the tables, the balanced-GMM readers (GMM, VAE-GMM) should "
        "retrieve nearly every clean query and Hopfield far fewer, since its dot product "
        "favours patterns of large norm. The first figure shows the "
        f"{results['figure_retrievals']['corruption']} queries of one memory and what each "
        "reader returns, a green frame for a pattern counted as retrieved and a red one for a "
        "failure. In the second each row is one query's path under the same corruption, from "
        "the encoder's code to where the iterations lead, the stored pattern last: its title "
        "says whether it was retrieved (half the rows are failures where there are enough, "
        "more when few queries succeed).",
        "",
        f"`digits` (8×8): memories of N = 100 test digits, {settings['seeds']} seeds; queries are "
        f"the stored digits, {', '.join(settings['corruptions'])}. A retrieval succeeds when "
        "the answer is nearer the correct pattern than any other stored one and within the "
        "threshold (half the median nearest-neighbour distance of training patterns, in the "
        "method's space: pixels, or the codes of a d = 16 MLP VAE trained for "
        f"{settings['vae_epochs']} epochs). σ, β, γ and the thresholds were chosen on the "
        f"train split ({chosen}). Full benchmark: `pyromem retrieval --dataset patches`.",
        "",
        "Successful retrievals, % mean ± std over seeds:",
        "",
        format_table(results["results"]),
        "",
        "Nearest-pattern rate alone:",
        "",
        format_table(results["results"], "nearest"),
        "",
        f"![queries and retrieved patterns]({rel['retrievals']})",
        "",
    ]
    if "trajectory" in rel:
        lines += [f"![a retrieval trajectory]({rel['trajectory']})", ""]
    return "\n".join(lines), results
