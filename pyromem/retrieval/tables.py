r"""Tables 2-4: every method on every corruption, mean ± std over seeds.

:func:`retrieval_table` runs the whole benchmark for one dataset: per space (pixels, codes) it
chooses the threshold and the unit of the grids on the training images; per method it chooses
the hyper-parameters there (:mod:`pyromem.retrieval.selection`), trains what the method learns
on the training images, and only then evaluates on memories drawn from the test images.
"""

import math
import time
from contextlib import contextmanager

import pyro
import torch

from pyromem.checks import as_int
from pyromem.retrieval.corruptions import check_corruptions
from pyromem.retrieval.criteria import dot_product_winners, median_nearest_distance
from pyromem.retrieval.methods import (
    PER_CORRUPTION_METHODS,
    build_method,
    check_method,
    check_vae_images,
)
from pyromem.retrieval.protocol import (
    check_image_batch,
    check_names,
    check_query_images,
    evaluate,
    sample_memory,
)
from pyromem.retrieval.selection import (
    TRAIN_SEED_OFFSET,
    TRAINING_GRIDS,
    candidates,
    select_hyperparameters,
)


def check_memory_size(memory_size, train_images, test_images):
    """Raise a one-line ``ValueError`` unless memories of ``memory_size`` patterns can be drawn
    from both splits: the table's from the test split, the selection's from the train split.

    :param int memory_size: N, ``>= 2`` (the threshold is a distance between two stored
        patterns).
    :param train_images: the train split ``(M, C, H, W)``.
    :param test_images: the test split ``(M', C, H, W)``.
    """
    as_int(memory_size, "memory_size", 2, form="split")
    for split, images in (("test", test_images), ("train", train_images)):
        if memory_size > len(images):
            raise ValueError(
                f"memory_size: {memory_size} exceeds the {len(images)} {split} images; "
                f"memories of at most {min(len(test_images), len(train_images))} fit"
            )


def check_table(
    methods,
    corruptions,
    train_images,
    test_images,
    vae=None,
    memory_size=100,
    seeds=10,
    selection_seeds=2,
    threshold_fraction=0.5,
):
    """Raise a one-line error naming the argument unless :func:`retrieval_table` can run all
    of its cells: checked before the first method's selection, so that a bad name, corruption
    or VAE late in the lists does not cost the earlier methods' work.

    :returns: ``(methods, corruptions)`` as lists.
    """
    check_image_batch(test_images, "test_images")
    image_shape = tuple(test_images.shape[1:])
    # the selection would tune on train images of one size and the table read another's
    check_image_batch(train_images, "train_images", image_shape, ", that of test_images")
    methods = check_names(methods, "methods", "method names")
    corruptions = check_names(corruptions, "corruptions", "corruption names")
    for name in methods:
        check_method(name, image_shape, vae)
    check_corruptions(corruptions, image_shape)
    check_memory_size(memory_size, train_images, test_images)
    as_int(seeds, "seeds", 1)
    as_int(selection_seeds, "selection_seeds", 1)
    if not (isinstance(threshold_fraction, (int, float)) and 0 < threshold_fraction <= 1):
        raise ValueError(f"threshold_fraction must lie in (0, 1], got {threshold_fraction!r}")
    for name, images in (("train_images", train_images), ("test_images", test_images)):
        check_query_images(images, name, corruptions)
    for name, images in (("train_images", train_images), ("test_images", test_images)):
        check_vae_images(methods, vae, images, name)
    return methods, corruptions


def space_calibration(method, train_images, memory_size, threshold_fraction=0.5):
    """The threshold and grid unit of ``method``'s space, from training images only, and the
    % of the patterns of a training memory that win their own dot-product read
    (:func:`~pyromem.retrieval.criteria.dot_product_winners`).

    :returns: ``{"threshold", "unit", "dot_product_winners"}``.
    """
    vectors = method.embed(train_images)
    size = min(memory_size, len(vectors))
    # the memory of select_threshold and scale_unit, whose one median gives both; it refuses,
    # naming the split and the space, memories in which most patterns have an exact copy (a
    # threshold and unit of 0) before the method's selection
    median = median_nearest_distance(
        vectors,
        size,
        torch.Generator().manual_seed(TRAIN_SEED_OFFSET),
        f"train_images (in the {method.space} space of {method.name})",
    )
    index = sample_memory(len(vectors), size, torch.Generator().manual_seed(TRAIN_SEED_OFFSET))
    memory = vectors[index.to(vectors.device)]
    return {
        "dot_product_winners": 100.0 * dot_product_winners(memory).float().mean().item(),
        "threshold": threshold_fraction * median,
        "unit": median * vectors.shape[-1] ** 0.5,
    }


def retrieval_table(
    methods,
    corruptions,
    train_images,
    test_images,
    *,
    vae=None,
    memory_size=100,
    seeds=10,
    selection_seeds=2,
    threshold_fraction=0.5,
    log=None,
    finished=None,
    on_row=None,
):
    """Run methods × corruptions with the protocol of §5.

    :param list methods: method names (:data:`~pyromem.retrieval.methods.METHODS`).
    :param list corruptions: corruption names.
    :param torch.Tensor train_images: training split ``(M, C, H, W)``: selection and training;
        its images have the same ``(C, H, W)`` as ``test_images``.
    :param torch.Tensor test_images: test split ``(M', C, H, W)``: the memories of the table.
    :param vae: trained VAE for the ``VAE-*`` methods.
    :param int memory_size: N, ``>= 2`` and at most ``len(test_images)`` and
        ``len(train_images)``.
    :param int seeds: memories per cell.
    :param int selection_seeds: training memories per candidate and corruption.
    :param float threshold_fraction: see :func:`~pyromem.retrieval.criteria.select_threshold`.
    :param log: optional callable taking a progress line: one before a method's selection
        among several candidates, one per candidate and per trained learning rate once that
        stage has run :data:`STAGE_QUIET_SECONDS`, and one per cell, each with an ETA.
    :param dict finished: rows an interrupted table finished, by method: the ``on_row``
        records of a table with the same images, VAE and settings. Their methods are not
        selected or evaluated again; each is rebuilt with its chosen hyper-parameters and
        trained again as before (the figures read with it; those of
        :data:`PER_CORRUPTION_METHODS` are left untrained, for :func:`fit_for_column`), and
        its record is kept.
    :param on_row: optional callable ``(name, record)``, called as each method's row is done;
        ``record`` is JSON-able: the method's entries of ``"results"``, ``"hyperparameters"``,
        ``"space"``, ``"threshold"``, ``"selection"``, ``"training"``, ``"seconds"`` and
        ``"timing"`` (its ``"per_method"`` entry), under those names.
    :returns: ``{"results": {method: {corruption: summary}}, "hyperparameters", "space",
        "threshold", "selection", "training", "seconds", "timing", "kept", "calibration",
        "corruptions"}`` (see :meth:`Rates.summary`), JSON-able, and ``"methods"``: the fitted
        :class:`~pyromem.retrieval.methods.Method` objects by name (not JSON-able); those of
        :data:`PER_CORRUPTION_METHODS` hold the last column's reader, or none for a kept row
        (:func:`fit_for_column` gives a column's).
        ``"timing"`` holds the wall-clock seconds of each method's ``"selection"``,
        ``"training"`` and ``"evaluation"`` and their totals over methods, for the rows
        measured in this call; ``"kept"`` names the rows taken from ``finished``.
    :raises ValueError: before any work, on an argument that cannot run (:func:`check_table`):
        an unknown method, a method or corruption given twice, a corruption the images do not
        allow, a ``VAE-*`` method without a VAE of the images' shape, a memory size either
        split cannot hold, ...
    """
    methods, corruptions = check_table(
        methods,
        corruptions,
        train_images,
        test_images,
        vae,
        memory_size,
        seeds,
        selection_seeds,
        threshold_fraction,
    )
    _check_row_arguments(log, on_row, finished)
    image_shape = tuple(test_images.shape[1:])
    calibration, out = (
        {},
        {
            "results": {},
            "hyperparameters": {},
            "space": {},
            "threshold": {},
            "selection": {},
            "training": {},
            "seconds": {},
            "timing": {"selection": 0.0, "training": 0.0, "evaluation": 0.0, "per_method": {}},
            "methods": {},
            "kept": [],
            "corruptions": list(corruptions),
        },
    )
    finished = dict(finished or {})
    to_run = [name for name in methods if name not in finished]
    table_start, cells_done, num_cells = time.perf_counter(), 0, len(to_run) * len(corruptions)
    for name in methods:
        start = time.perf_counter()
        probe = build_method(name, image_shape, vae)
        if probe.space not in calibration:
            calibration[probe.space] = space_calibration(
                probe, train_images, memory_size, threshold_fraction
            )
        cal = calibration[probe.space]
        if name in finished:
            record = finished[name]
            method = _rebuilt(name, image_shape, vae, record, train_images, memory_size)
            if log:
                log(f"{name}: its row is kept from the interrupted run")
        else:
            record = _measured_row(
                name,
                corruptions,
                train_images,
                test_images,
                vae,
                memory_size,
                seeds,
                selection_seeds,
                cal,
                log,
                progress=(start, table_start, cells_done, num_cells),
            )
            method = record.pop("method")
            cells_done += len(corruptions)
            if on_row is not None:
                on_row(name, record)
        for key in _RECORD_KEYS:
            out[key][name] = record[key]
        if name in finished:
            out["kept"].append(name)
        else:
            # the timing is this run's work: a kept row's is in its "seconds"
            out["timing"]["per_method"][name] = record["timing"]
            for stage, seconds in record["timing"].items():
                out["timing"][stage] += seconds
        out["methods"][name] = method
    out["calibration"] = calibration
    return out


#: The entries of a method's row record, each under the name of the table's entry it fills.
_RECORD_KEYS = (
    "results",
    "hyperparameters",
    "space",
    "threshold",
    "selection",
    "training",
    "seconds",
)


def _check_row_arguments(log, on_row, finished) -> None:
    if log is not None and not callable(log):
        raise TypeError(f"log: expected a callable or None, got {type(log).__name__}")
    check_kept_records(finished, (*_RECORD_KEYS, "timing"), on_row, "on_row", "row of {!r}")


def check_kept_records(finished, keys, callback, callback_name, item) -> None:
    """Raise in one line unless ``callback`` is a callable or ``None`` and ``finished`` is
    ``None`` or a dict of the records ``callback`` receives, each holding ``keys``: the
    arguments by which a table or sweep keeps what an interrupted run finished, checked before
    any work (a bad one would otherwise stop the run after its first row).

    :param str callback_name: the callback's argument name, for the messages.
    :param str item: what a record is, a format string taking its key, e.g. ``"row of {!r}"``.
    """
    if callback is not None and not callable(callback):
        raise TypeError(
            f"{callback_name}: expected a callable or None, got {type(callback).__name__}"
        )
    if finished is None:
        return
    if not isinstance(finished, dict):
        raise TypeError(
            f"finished: expected a dict of {callback_name}'s records, got {type(finished).__name__}"
        )
    for key, record in finished.items():
        has = record if isinstance(record, dict) else {}
        lacks = [name for name in keys if name not in has]
        if lacks:
            raise ValueError(
                f"finished: the {item.format(key)} lacks {lacks}; expected {callback_name}'s record"
            )


def _rebuilt(name, image_shape, vae, record, train_images, memory_size):
    # trained as _fit_lowest_loss trained the chosen one (the per-corruption methods are
    # trained where they are used)
    hyperparameters = record["hyperparameters"]
    if name in PER_CORRUPTION_METHODS:
        return _build_seeded(name, image_shape, vae, hyperparameters)
    with pyro.validation_enabled(False):
        return _trained(name, image_shape, vae, hyperparameters, train_images, memory_size)[0]


def _measured_row(
    name,
    corruptions,
    train_images,
    test_images,
    vae,
    memory_size,
    seeds,
    selection_seeds,
    cal,
    log,
    progress,
):
    """One method's row: its selection, its training and its cells; the row's record
    (:func:`retrieval_table`'s ``on_row``) with the fitted method under ``"method"``."""
    # the row's clock started before its space's calibration, which it counts as selection
    start, table_start, cells_done, num_cells = progress
    image_shape = tuple(test_images.shape[1:])
    timing = {"selection": 0.0, "training": 0.0, "evaluation": 0.0}
    if log and (count := len(candidates(name, cal["unit"]))) > 1:
        # a minute or more on `patches` with 10 seeds (VAE-BP-GMM's 12 candidates)
        log(f"{name}: choosing among {count} candidates on training memories")
    chosen, scores = select_hyperparameters(
        name,
        train_images,
        corruptions,
        threshold=cal["threshold"],
        unit=cal["unit"],
        vae=vae,
        memory_size=memory_size,
        seeds=selection_seeds,
        on_candidate=_StageLines(log, name, _candidate_line),
    )
    timing["selection"] = time.perf_counter() - start
    per_corruption = name in PER_CORRUPTION_METHODS  # trained in each scenario (§5.4)
    if per_corruption:
        method, training = _build_seeded(name, image_shape, vae, chosen), {}
        fits = _column_fits(method, train_images, corruptions, memory_size)
    else:
        with _clock(timing, "training"):
            method, training = _fit_lowest_loss(
                name,
                image_shape,
                vae,
                chosen,
                train_images,
                memory_size,
                on_fit=_StageLines(log, name, _training_line),
            )
    row = {}
    for corruption in corruptions:
        if per_corruption:
            with _clock(timing, "training"):
                training[corruption] = next(fits)
        with _clock(timing, "evaluation"):
            rates = evaluate(method, test_images, corruption, memory_size, seeds, cal["threshold"])
        row[corruption] = rates.summary()
        cells_done += 1
        if log:
            elapsed = time.perf_counter() - table_start
            eta = elapsed / cells_done * (num_cells - cells_done)
            log(
                f"[{cells_done}/{num_cells}] {name:>14} {corruption:>16}: "
                f"{_cell(row[corruption])}  ({elapsed:.0f} s, ETA {eta:.0f} s)"
            )
    record = {
        "results": row,
        "hyperparameters": method.hyperparameters,
        "space": method.space,
        "threshold": cal["threshold"],
        "selection": scores,
        "training": training,
        "seconds": time.perf_counter() - start,
        "timing": timing,
    }
    return {**record, "method": method}


def _column_fits(method, train_images, corruptions, memory_size):
    """Train ``method``, one of :data:`PER_CORRUPTION_METHODS`, for each column in turn as
    :func:`retrieval_table` does, yielding each fit's training record once the method holds
    that column's reader.

    Each fit starts from the same initial reader, but all draw their training memories and
    queries from one generator, so a column's reader depends on the columns before it.
    """
    generator = torch.Generator().manual_seed(TRAIN_SEED_OFFSET)
    for corruption in corruptions:
        yield method.fit(train_images, corruption, memory_size, generator)


def fit_for_column(method, train_images, corruptions, corruption, memory_size):
    """Give ``method``, one of :data:`PER_CORRUPTION_METHODS`, the reader that
    :func:`retrieval_table` over ``corruptions`` read the column ``corruption`` with, and
    return that fit's training record (the columns before it are trained again first)."""
    fits = _column_fits(method, train_images, corruptions, memory_size)
    for _ in range(list(corruptions).index(corruption) + 1):
        training = next(fits)
    return training


@contextmanager
def _clock(timing, stage):
    """Adds the wall-clock seconds of a ``with`` block to ``timing[stage]``; the block runs
    without the distributions' value checks (the inputs were checked once, at the boundary)."""
    start = time.perf_counter()
    try:
        with pyro.validation_enabled(False):
            yield
    finally:
        timing[stage] += time.perf_counter() - start


def _trained(name, image_shape, vae, hyperparameters, train_images, memory_size):
    """``(method, training)``: the method built from its own seed and trained on clean
    training memories drawn from their own seed, so that the same hyper-parameters give the
    same reader."""
    method = _build_seeded(name, image_shape, vae, hyperparameters)
    generator = torch.Generator().manual_seed(TRAIN_SEED_OFFSET)
    return method, method.fit(train_images, "clean", memory_size, generator)


def _loss_or_inf(loss):
    return math.inf if math.isnan(loss) else loss


def _fit_lowest_loss(name, image_shape, vae, chosen, train_images, memory_size, on_fit=None):
    # App. D: training hyper-parameters give the lowest training error; each candidate
    # learning rate trains on the same training memories.
    fits, grid = [], TRAINING_GRIDS.get(name, (None,))
    for lr in grid:
        extra = {} if lr is None else {"train_lr": lr}
        hyperparameters = {**chosen, **extra}
        fits.append(_trained(name, image_shape, vae, hyperparameters, train_images, memory_size))
        if on_fit is not None and lr is not None:
            on_fit(len(fits), len(grid), lr, fits[-1][1].get("train_loss_last", math.nan))
    # a run whose loss ended NaN diverged: it compares false with every loss, so it would
    # be kept where it came first
    method, training = min(fits, key=lambda fit: _loss_or_inf(fit[1].get("train_loss_last", 0.0)))
    if len(fits) > 1:
        training["train_loss_by_lr"] = {
            m.hyperparameters["train_lr"]: t["train_loss_last"] for m, t in fits
        }
    return method, training


#: A stage of a method (its selection, its training) reports each step once it has run this long.
STAGE_QUIET_SECONDS = 5.0


class _StageLines:
    """A progress line after each step of a method's stage, with an ETA, once the stage has
    run :data:`STAGE_QUIET_SECONDS` (MemN2N's training on 64 × 64 colour images took 93 s,
    VAE-BP-GMM's choice among 12 candidates minutes, with nothing printed); silent without
    ``log``. Called as ``(done, total, *details)``; ``describe`` makes the line's middle."""

    def __init__(self, log, name, describe):
        self.log, self.name, self.describe = log, name, describe
        self.start = time.perf_counter()

    def __call__(self, done, total, *details):
        elapsed = time.perf_counter() - self.start
        if self.log is None or elapsed < STAGE_QUIET_SECONDS:
            return
        eta = elapsed / done * (total - done)
        middle = self.describe(done, total, *details)
        self.log(f"{self.name}: {middle} ({elapsed:.0f} s, ETA {eta:.0f} s)")


def _candidate_line(done, total, score):
    values = " ".join(f"{k}={v:.3g}" for k, v in score["hyperparameters"].items())
    return f"candidate {done}/{total} ({values}): {score['train_success']:.1f} % retrieved"


def _training_line(done, total, lr, loss):
    return f"trained {done}/{total} (train_lr={lr:g}): last loss {loss:.4g}"


def _build_seeded(name, image_shape, vae, hyperparameters):
    # A learned reader's random initialisation is drawn from its own seed, so that a method's
    # row does not depend on the methods that ran before it; the caller's RNG is left as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TRAIN_SEED_OFFSET)
        return build_method(name, image_shape, vae, **hyperparameters)


def format_table(results, key=None):
    """Tables 2-4 as Markdown: one row per method, one column per corruption, mean ± std in %.

    :param dict results: ``{method: {corruption: summary}}``.
    :param str key: ``None`` for the success rate, ``"nearest"`` or ``"threshold"``.
    """
    if key not in (None, "nearest", "threshold"):
        raise ValueError(f"key must be None, 'nearest' or 'threshold', got {key!r}")
    if not isinstance(results, dict):
        raise TypeError(
            f"results must be a dict {{method: {{corruption: summary}}}}, got "
            f"{type(results).__name__}"
        )
    methods = list(results)
    corruptions = list(results[methods[0]]) if methods else []
    for name, row in results.items():
        # the whole table (its "results" entry was meant), or rows of other corruptions, would
        # stop with a KeyError on 'mean' or on a corruption
        if not isinstance(row, dict) or list(row) != corruptions:
            got = list(row) if isinstance(row, dict) else type(row).__name__
            raise ValueError(
                f"results: expected {{method: {{corruption: summary}}}} with the corruptions "
                f"{corruptions} in every row, e.g. retrieval_table(...)['results']; the row "
                f"{name!r} holds {got}"
            )
        for corruption, summary in row.items():
            cell = summary.get(key) if key and isinstance(summary, dict) else summary
            if not (isinstance(cell, dict) and "mean" in cell and "std" in cell):
                where = "" if key is None else f" under {key!r}"
                raise ValueError(
                    f"results: the cell ({name!r}, {corruption!r}) is not a summary with "
                    f"'mean' and 'std'{where}, e.g. retrieval_table(...)['results']"
                )
    lines = [
        "| method | " + " | ".join(corruptions) + " |",
        "| --- |" + " ---: |" * len(corruptions),
    ]
    for name in methods:
        cells = [
            _cell(results[name][c] if key is None else results[name][c][key]) for c in corruptions
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(summary):
    return f"{summary['mean']:.1f} ± {summary['std']:.1f}"
