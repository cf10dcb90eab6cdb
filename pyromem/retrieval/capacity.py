r"""The capacity sweep of App. E.4: success rate against the number N of stored patterns.

As in E.4 the queries carry noise of σ = 0.6 (clean queries are retrieved 100% by the balanced
GMM at any N) and the methods default to GMM, VAE-GMM and VAE-Hopfield. A memory of N is drawn
from the test split and the selection's memories of N from the train split, so sizes above the
number of images of either split are skipped and listed under ``"skipped"``: the embedded
``patches`` splits hold 512 train and 128 test images, ``digits`` 1437 and 360, ``shapes``
2000 training scenes and as many test scenes as asked for (``num_scenes``). Every N gets its
own hyper-parameters and threshold, chosen on training memories of the same N.
"""

from matplotlib.figure import Figure

from pyromem.checks import as_int
from pyromem.diagnostics.plots import save_figure
from pyromem.retrieval.protocol import check_image_batch
from pyromem.retrieval.tables import check_kept_records, check_table, retrieval_table

#: N = 5 ... 10 000 (App. E.4).
CAPACITY_SIZES = (5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


def capacity_sweep(
    methods,
    train_images,
    test_images,
    *,
    vae=None,
    sizes=CAPACITY_SIZES,
    corruption="noise-0.6",
    seeds=10,
    selection_seeds=2,
    log=None,
    finished=None,
    on_size=None,
):
    """Success rates of ``methods`` for each memory size in ``sizes``.

    :param list methods: method names, each once.
    :param sizes: the memory sizes N, distinct ints ``>= 2``; those above the number of images
        of either split are skipped.
    :param str corruption: the one corruption of the queries.
    :param log: optional callable taking a progress line: one per size, and
        :func:`~pyromem.retrieval.tables.retrieval_table`'s lines within it.
    :param dict finished: sizes an interrupted sweep finished, by ``str(N)``: records as
        ``on_size`` received them. A size whose record holds every method is not run again.
    :param on_size: optional callable ``(N, record)``, called as each size is done, with
        ``record = {"results", "hyperparameters", "threshold"}``, each by method.
    :returns: ``{"corruption", "sizes", "skipped", "results": {method: [summary per size]},
        "hyperparameters": {method: [dict per size]}, "threshold": {method: [float per size]},
        "kept": [the sizes taken from finished]}``.
    :raises ValueError: before any work, on an argument that cannot run, or when no size fits
        both splits.
    """
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__iter__"):
        raise TypeError(f"sizes must be a list of ints >= 2, got {type(sizes).__name__}")
    sizes = [as_int(n, "sizes", 2, form="split") for n in sizes]
    if not sizes or len(set(sizes)) != len(sizes):
        raise ValueError(f"sizes must be a non-empty list of distinct ints, got {sizes}")
    if not isinstance(corruption, str):
        raise TypeError(f"corruption must be one corruption name (str), got {corruption!r}")
    check_image_batch(test_images, "test_images")
    check_image_batch(train_images, "train_images")
    # a memory of N from the test split, the selection's from the train split
    fits = min(len(test_images), len(train_images))
    run = [n for n in sizes if n <= fits]
    if not run:
        raise ValueError(
            f"sizes: none of {sizes} fits the {len(test_images)} test and {len(train_images)} "
            f"train images; sizes of at most {fits} fit"
        )
    check_kept_records(finished, _SIZE_RECORD_KEYS, on_size, "on_size", "size N = {}")
    # each table gets log wrapped in a callable, so its own check would pass
    if log is not None and not callable(log):
        raise TypeError(f"log: expected a callable or None, got {type(log).__name__}")
    # every table's arguments, checked before the first size runs
    check_table(
        methods,
        [corruption],
        train_images,
        test_images,
        vae,
        min(run),
        seeds,
        selection_seeds,
    )
    out = {
        "corruption": corruption,
        "sizes": run,
        "skipped": [n for n in sizes if n > fits],
        "results": {name: [] for name in methods},
        "hyperparameters": {name: [] for name in methods},
        "threshold": {name: [] for name in methods},
        "kept": [],
    }
    finished = finished or {}
    for size in run:
        record = finished.get(str(size))
        if record is not None and all(name in record["results"] for name in methods):
            if log:
                log(f"capacity: N = {size} is kept from the interrupted run")
            out["kept"].append(size)
        else:
            if log:
                log(f"capacity: N = {size}")
            record = _size_record(
                methods,
                corruption,
                train_images,
                test_images,
                vae,
                size,
                seeds,
                selection_seeds,
                log,
            )
            if on_size is not None:
                on_size(size, record)
        for key in _SIZE_RECORD_KEYS:
            for name in methods:
                out[key][name].append(record[key][name])
    return out


#: The entries of one size's record, each by method.
_SIZE_RECORD_KEYS = ("results", "hyperparameters", "threshold")


def _size_record(
    methods, corruption, train_images, test_images, vae, size, seeds, selection_seeds, log
):
    """One size's table, the record :func:`capacity_sweep` keeps of it."""
    table = retrieval_table(
        methods,
        [corruption],
        train_images,
        test_images,
        vae=vae,
        memory_size=size,
        seeds=seeds,
        selection_seeds=selection_seeds,
        log=None if log is None else (lambda line: log(f"N = {size}: {line}")),
    )
    return {
        "results": {name: table["results"][name][corruption] for name in methods},
        "hyperparameters": {name: table["hyperparameters"][name] for name in methods},
        "threshold": {name: table["threshold"][name] for name in methods},
    }


def save_capacity_plot(sweep, path):
    """Plot a :func:`capacity_sweep` result (mean ± std band per method, within 0-100 %, log N
    axis) as a PNG.

    :returns: the path written.
    """
    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.subplots()
    for name, rows in sweep["results"].items():
        mean = [r["mean"] for r in rows]
        std = [r["std"] for r in rows]
        ax.plot(sweep["sizes"], mean, marker="o", markersize=3, label=name)
        # a rate stays within 0 and 100 %, whatever the spread of the seeds
        ax.fill_between(
            sweep["sizes"],
            [max(m - s, 0.0) for m, s in zip(mean, std, strict=True)],
            [min(m + s, 100.0) for m, s in zip(mean, std, strict=True)],
            alpha=0.2,
        )
    ax.set_xscale("log")
    ax.set_xlabel("stored patterns N")
    ax.set_ylabel("successful retrievals (%)")
    ax.set_ylim(-2, 102)
    ax.set_title(f"capacity, queries: {sweep['corruption']}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
