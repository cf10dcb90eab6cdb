"""``pyromem demo``: the main job, run on the embedded datasets, with a Markdown report.

Each recipe of the registry's ``DEMO_SECTIONS`` adds a section: the VAE on
``digits`` (16×16, dynamically binarised); associative retrieval (Annabi et
al.); variational memory addressing (Bornschein et al.); Kanerva++ (Ramapuram
et al.). Each section says its own setting. The report opens with the run's
settings and a table of each section's headline numbers (:func:`at_a_glance`).

Each section that finishes is recorded in ``sections.json`` (its report text and results),
and so is the section in progress, so that an interrupted demo can be resumed
(``resume=True``) without running the finished sections again, and with the interrupted
section's runs continued from their checkpoints.
"""

import json
import sys
import time
from pathlib import Path

from pyromem.checks import as_int
from pyromem.experiments.options import writable_folder
from pyromem.experiments.registry import DEMO_SECTIONS, recipe
from pyromem.experiments.vae import torch_threads, write_results
from pyromem.train.checkpoint import write_atomically


def run_demo(
    out_dir="pyromem-demo", quick=False, seed=0, progress=True, num_threads=1, resume=False
):
    """Run every recipe of the demo and write ``out_dir/report.md`` and ``results.json``.

    :param out_dir: the report's folder.
    :param bool quick: a shorter run (under 2 minutes on a 2-core CPU).
    :param int num_threads: torch's CPU threads. One by default: the demo's models are small,
        and when another process holds a core, each of their operations on two threads waits
        for the second (the quick demo took 212 s on two threads and 41 s on one, on the
        2-core CPU beside a two-thread job).
    :param bool resume: continue the demo in ``out_dir``, interrupted or finished: the
        sections it finished (``sections.json``) are kept, the others run (the runs of the
        section it was interrupted in from their last checkpoints). Its ``quick`` and
        ``seed`` must be this run's.
    :returns: the results dict, with the report's path under ``"report"``.
    :raises ValueError: before any work, if ``out_dir`` is a file or cannot be written, or if
        ``resume`` and ``out_dir`` holds no demo that was started, or one of another
        ``quick`` or ``seed``.
    """
    as_int(num_threads, "num_threads", 1)
    start = time.perf_counter()
    out_dir = Path(out_dir)
    report = out_dir / "report.md"
    record = out_dir / SECTIONS_FILE
    if resume:
        finished, interrupted = finished_sections(record, quick, seed)
    # a file there, or a folder that cannot be written, stopped the first section seconds in
    writable_folder(out_dir)
    if not resume:
        finished, interrupted = {}, None
        if record.is_file():  # an earlier demo's, whose sections this one replaces
            if progress:
                print(
                    f"demo: replacing the demo in {out_dir} (the same command with --resume "
                    "keeps its finished sections)",
                    file=sys.stderr,
                    flush=True,
                )
            record.unlink()
    # the sections kept count with the seconds they took
    kept_seconds = sum(section["seconds"] for section in finished.values())
    sections = []
    family_results = {}
    with torch_threads(num_threads):
        for number, name in enumerate(DEMO_SECTIONS, 1):
            section = finished.get(name)
            if progress:
                kept = f": finished before ({section['seconds']:.0f} s), kept" if section else ""
                if name == interrupted:
                    kept = ": interrupted before, its runs continue from their checkpoints"
                print(
                    f"demo [{number}/{len(DEMO_SECTIONS)}] {name}{kept}",
                    file=sys.stderr,
                    flush=True,
                )
            if section is None:
                section_start = time.perf_counter()
                _write_record(record, quick, seed, finished, started=name)
                module = recipe(name).load()
                # the runs of the section this demo was interrupted in go on from their
                # checkpoints; a later section's folder may hold an older demo's runs
                text, results = module.demo_section(
                    out_dir, quick, seed=seed, progress=progress, resume=name == interrupted
                )
                section = finished[name] = {
                    "text": text,
                    "results": results,
                    "seconds": time.perf_counter() - section_start,
                }
                _write_record(record, quick, seed, finished)
            sections.append(section["text"])
            family_results[name] = section["results"]
    seconds = time.perf_counter() - start + kept_seconds
    opening = [
        "# pyromem demo report",
        "",
        *header(quick, seed, num_threads, seconds, family_results),
    ]
    report.write_text("\n".join(opening + sections))
    results = {
        "demo": "quick" if quick else "full",
        "seed": seed,
        "num_threads": num_threads,
        "report": str(report),
        **family_results,
        "seconds": seconds,
    }
    write_results(results, out_dir)
    return results


#: The record of a demo's finished sections, in its folder.
SECTIONS_FILE = "sections.json"


def finished_sections(record, quick, seed) -> tuple[dict, str | None]:
    """The sections a demo finished, by name (``{"text", "results", "seconds"}`` each), and
    the section it was interrupted in (``None``: none), from its ``record``
    (:data:`SECTIONS_FILE`), for a demo resumed with ``quick`` and ``seed``.

    :raises ValueError: in one line, if there is no record or it is of another demo.
    """
    try:
        saved = json.loads(Path(record).read_text())
    except FileNotFoundError:
        raise ValueError(
            f"resume: there is no demo in {Path(record).parent} to continue (no {record.name})"
        ) from None
    except (OSError, ValueError) as error:
        raise ValueError(f"resume: cannot read {record}: {error}") from None
    if (saved.get("quick"), saved.get("seed")) != (quick, seed):

        def demo(quick, seed):
            return f"a {'quick' if quick else 'full'} demo of seed {seed}"

        raise ValueError(
            f"resume: {Path(record).parent} holds {demo(saved.get('quick'), saved.get('seed'))}, "
            f"this run is {demo(quick, seed)}; give its --quick and --seed to continue it, or "
            "leave out --resume to start again"
        )
    started = saved.get("started")
    return saved["sections"], None if started in saved["sections"] else started


def _write_record(record, quick, seed, sections, started=None):
    text = json.dumps({"quick": quick, "seed": seed, "sections": sections, "started": started})
    write_atomically(record, lambda file: file.write(text))


QUICK_NOTE = (
    "**Quick mode**: every model trains for a fraction of the full demo's steps and is "
    "scored with fewer importance samples, to check in a minute that everything runs. Its "
    "numbers are not results, and its figures may show under-trained models; `pyromem demo` "
    "(without `--quick`) writes the report to judge the library by."
)


def header(quick, seed, num_threads, seconds, family_results):
    """The report's opening lines: the run, what its numbers are, and a table of each
    section's headline results (:func:`at_a_glance`)."""
    lines = [
        f"Mode: {'quick' if quick else 'full'}; seed {seed}; {num_threads} torch thread"
        f"{'s' if num_threads != 1 else ''}; {seconds:.0f} s in all. Bounds are in nats per "
        "test image (higher is better; an NLL, its negative, lower is better), each on the "
        "test split with the binarisation its section states. Files: `results.json` (all "
        "figures of this report as numbers), one folder per recipe.",
        "",
    ]
    if quick:
        lines += [QUICK_NOTE, ""]
    rows = at_a_glance(family_results)
    if rows:
        lines += [
            "## At a glance",
            "",
            "| section | result | what the number is | test data |",
            "| --- | --- | --- | --- |",
            *(f"| {' | '.join(row)} |" for row in rows),
            "",
            "Each section below says how it was trained and what to look at in its figures.",
            "",
        ]
    return lines


def _vae_row(r):
    return [
        "VAE",
        f"log p(x) ≥ {r['test_log_likelihood_nats']:.2f} nats (ELBO {r['test_elbo_nats']:.2f})",
        f"IWAE-{r['num_samples']} (ELBO: {r['num_particles']} particles), per test image",
        f"`{r['dataset']}` test split, {r['num_test_images']} images, "
        f"{r['config']['size']}×{r['config']['size']}, "
        f"{r['binarization']['test']} binarisation",
    ]


def _retrieval_row(r):
    seeds = r["seeds"]
    best = []
    for corruption in r["corruptions"]:
        scores = {method: cells[corruption] for method, cells in r["results"].items()}
        top = max(score["mean"] for score in scores.values())
        winners = [m for m, score in scores.items() if score["mean"] == top]
        cell = f"{corruption}: {', '.join(winners)} {top:.1f} ± {scores[winners[0]]['std']:.1f}"
        others = [m for m in scores if m not in winners]
        if others:
            runner_up = max(others, key=lambda m: scores[m]["mean"])
            score = scores[runner_up]
            cell += f" (next: {runner_up} {score['mean']:.1f} ± {score['std']:.1f})"
        best.append(cell)
    return [
        "Associative retrieval",
        "; ".join(best),
        f"highest mean successful-retrieval rate per query type, %, ± std over {seeds} seeds, "
        "and the next method's (every method: the section's table)",
        f"`{r['dataset']}`: memories of {r['memory_size']} test-split images",
    ]


def _vma_rows(r):
    rows = []
    for run in r.values():
        if not isinstance(run, dict) or "test_nll_nats" not in run:
            continue
        side = run["image_size"]
        reference, split = "", "test split"
        if run.get("mode") == "recall":
            reference = f" (log {run['memory_size']} = {run['log_memory_size']:.2f})"
        elif run.get("classes"):
            split = f"unseen test classes, {run['classes']} in memory"
        rows.append(
            [
                f"VMA, {run['mode']}, {run['address']}",
                f"NLL {run['test_nll_nats']:.2f} nats{reference}",
                f"−IWAE-{run['num_samples']} per test image, lower is better",
                f"`{run['dataset']}` {split}, {side}×{side}, {run['binarization']} "
                f"binarisation, {run['memory_size']} slots",
            ]
        )
    return rows


def _kpp_row(r):
    worse, reads = [], ""
    for name, mse in (r.get("denoising") or {}).items():
        after = [key for key in mse if key.startswith("mse_after_")]
        if after and "mse_noisy" in mse and mse[after[0]] > mse["mse_noisy"]:
            worse.append(name.replace("_", " "))
            reads = after[0].removeprefix("mse_after_").replace("_", " ")
    note = ""
    if "read_class_agreement" in r:
        note = (
            f"; {100 * r['read_class_agreement']:.0f} % of random-key reads of the memory's class"
        )
    if worse:
        note += f"; {reads} raise the MSE of {', '.join(worse)} images: they do not denoise"
    return [
        "Kanerva++",
        f"log p(x_t \\| M) ≥ {r['test_conditional_log_likelihood_nats']:.2f} nats (ELBO "
        f"{r['test_conditional_elbo_nats']:.2f}; KL key {r['kl_key']:.2f}{note})",
        f"IWAE-{r['num_samples']} (ELBO: {r['num_particles']} particles), per test image "
        "given its episode's memory",
        f"`{r['dataset']}`, {r['num_test_episodes']} test episodes of "
        f"{r['episode_length']} images, {r['binarization']['test']} binarisation",
    ]


GLANCE = {"vae": _vae_row, "retrieval": _retrieval_row, "vma": _vma_rows, "kpp": _kpp_row}


def at_a_glance(family_results):
    """One row or more per section of the demo: ``[section, result, what the number is, test
    data]``, cells of Markdown. A section whose results lack a field the row reads is left
    out (its own section still reports it)."""
    rows = []
    for name, results in family_results.items():
        make = GLANCE.get(name)
        if make is None:
            continue
        try:
            made = make(results)
        except (KeyError, TypeError):
            continue
        # a row (a list of cells) or a list of rows, none where the section has none
        rows += [made] if made and isinstance(made[0], str) else made
    return rows
