"""Figures that people would rather look at than read: image grids and ELBO curves.

Uses matplotlib's non-interactive Agg canvas, so it runs without a display.
"""

import math
from pathlib import Path

import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle


def _as_grid(images, ncols):
    images = images.detach().float().cpu().clamp(0, 1)
    if images.dim() != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
    n, c, h, w = images.shape
    nrows = math.ceil(n / ncols)
    # mid-grey gaps: white ones merge with white strokes that touch an image's edge (the
    # binarised 8 × 8 digits), black ones with dark backgrounds
    grid = torch.full((c, nrows * (h + 1) + 1, ncols * (w + 1) + 1), 0.5)
    for i, image in enumerate(images):
        r, k = divmod(i, ncols)
        grid[:, 1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + k * (w + 1) : 1 + k * (w + 1) + w] = (
            image
        )
    return grid.permute(1, 2, 0).squeeze(-1).numpy(), c


def save_figure(fig, path):
    """Lay out ``fig``, write it at ``path`` and return the path of the file written.

    A path without a suffix gets ``.png`` (as matplotlib writes it); any other suffix is the
    format, as matplotlib reads it. The path's missing folders are created, except at the
    root of the filesystem: an absolute path whose first folder does not exist (a typo such
    as ``/nonexistent/dir/f.png``) is a :class:`ValueError`, not a new top-level folder.
    """
    path = Path(path)
    if not path.suffix:
        path = path.with_name(path.name + ".png")
    if path.is_absolute() and len(path.parts) > 2:
        top = Path(*path.parts[:2])
        if not top.exists():
            raise ValueError(
                f"path: the folder {top} does not exist; save_figure creates folders below an "
                f"existing one, not at the filesystem root (got {path})"
            )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def save_image_rows(rows, path, titles=None, ncols=10, title_colors=None, marks=None, heading=None):
    """Save one or more rows of images, one labelled panel per row.

    :param list rows: tensors of shape ``(N, C, H, W)`` with values in [0, 1].
    :param path: where to write the PNG.
    :param list titles: one title per row.
    :param int ncols: images per line within a panel.
    :param list title_colors: optional matplotlib colour of each title (e.g. success/failure).
    :param list marks: optional, per row ``None`` or one bool per image: a green frame around
        each image marked ``True`` (e.g. retrieved), a red one around each marked ``False``.
    :param str heading: optional title of the whole figure, above the rows' titles.
    :returns: the path written.
    :raises ValueError: if a row's marks do not match its images in number.
    """
    titles = titles or [None] * len(rows)
    title_colors = title_colors or ["black"] * len(rows)
    marks = marks or [None] * len(rows)
    for index, (images, row_marks) in enumerate(zip(rows, marks, strict=True)):
        if row_marks is not None and len(row_marks) != len(images):
            raise ValueError(
                f"marks: expected {len(images)} marks for row {index}, got {len(row_marks)}"
            )
    fig = Figure(figsize=(ncols * 0.6, 0.8 * sum(math.ceil(len(r) / ncols) for r in rows) + 0.4))
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    for ax, images, title, color, row_marks in zip(
        axes, rows, titles, title_colors, marks, strict=True
    ):
        grid, channels = _as_grid(images, ncols)
        ax.imshow(grid, cmap="gray" if channels == 1 else None, vmin=0, vmax=1)
        ax.set_axis_off()
        if title:
            ax.set_title(title, fontsize=9, loc="left", color=color)
        height, width = images.shape[-2:]
        for i, hit in enumerate(row_marks or ()):
            # the frame covers the grey gap around the image, whose pixel centres are integers
            r, k = divmod(i, ncols)
            corner = (k * (width + 1) + 0.5, r * (height + 1) + 0.5)
            ax.add_patch(
                Rectangle(
                    corner,
                    width,
                    height,
                    fill=False,
                    edgecolor="tab:green" if hit else "tab:red",
                    linewidth=1.5,
                )
            )
    if heading:
        fig.suptitle(heading, fontsize=10, x=0.02, ha="left")
    return save_figure(fig, path)


#: Legend labels of the training engine's per-epoch keys
#: (:class:`pyromem.train.metrics.EpochMetrics`).
CURVE_LABELS = {
    "train_elbo_nats": "train ELBO (mean over the epoch's training batches)",
    "eval_elbo_nats": "held-out ELBO (eval data, at the epoch's end)",
}


def save_curves(history, keys, path, ylabel=None, labels=None, title=None):
    """Plot per-epoch values from a training history.

    :param list history: one dict per epoch with an ``"epoch"`` entry.
    :param list keys: the entries to plot, e.g. ``["train_elbo_nats", "eval_elbo_nats"]``.
    :param path: where to write the PNG.
    :param str ylabel: the y axis's label; by default ``"ELBO, nats per image"`` when every key
        is one of :data:`CURVE_LABELS`, otherwise ``"nats per image"``.
    :param dict labels: legend label of each key; by default :data:`CURVE_LABELS`' for the
        engine's keys, the key itself for any other.
    :param str title: an optional title.
    :returns: the path written.
    """
    if ylabel is None:
        known = keys and all(key in CURVE_LABELS for key in keys)
        ylabel = "ELBO, nats per image" if known else "nats per image"
    labels = {**CURVE_LABELS, **(labels or {})}
    fig = Figure(figsize=(5, 3.2))
    ax = fig.subplots()
    for key in keys:
        points = [(row["epoch"], row[key]) for row in history if row.get(key) is not None]
        if points:
            epochs, values = zip(*points, strict=True)
            ax.plot(epochs, values, marker="o", markersize=3, label=labels.get(key, key))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
