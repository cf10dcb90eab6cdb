r"""The capacity sweep of App. E.4: success rate against the number N of stored patterns.

As in E.4 the queries carry noise of σ = 0.6 (clean queries are retrieved 100% by the balanced
GMM at any N) and the methods default to GMM, VAE-GMM and VAE-Hopfield. Sizes above the number
of test images are skipped and listed under ``"skipped"``: the embedded ``patches`` test split
holds 104 images, ``digits`` 360, ``shapes`` as many scenes as asked for (``num_scenes``).
Every N gets its own hyper-parameters and threshold, chosen on training memories of the same N
(clipped to the training split).
"""

from matplotlib.figure import Figure

from pyromem.diagnostics.plots import save_figure
from pyromem.retrieval.tables import retrieval_table

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
):
    """Success rates of ``methods`` for each memory size in ``sizes``.

    :returns: ``{"corruption", "sizes", "skipped", "results": {method: [summary per size]},
        "hyperparameters": {method: [dict per size]}, "threshold": {method: [float per size]}}``.
    """
    run = [n for n in sizes if n <= len(test_images)]
    out = {
        "corruption": corruption,
        "sizes": run,
        "skipped": [n for n in sizes if n > len(test_images)],
        "results": {name: [] for name in methods},
        "hyperparameters": {name: [] for name in methods},
        "threshold": {name: [] for name in methods},
    }
    for size in run:
        if log:
            log(f"capacity: N = {size}")
        table = retrieval_table(
            methods,
            [corruption],
            train_images,
            test_images,
            vae=vae,
            memory_size=size,
            seeds=seeds,
            selection_seeds=selection_seeds,
        )
        for name in methods:
            out["results"][name].append(table["results"][name][corruption])
            out["hyperparameters"][name].append(table["hyperparameters"][name])
            out["threshold"][name].append(table["threshold"][name])
    return out


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
