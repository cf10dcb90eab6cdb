"""``pyromem demo``: the main job, run on the embedded datasets, with a Markdown report.

Each recipe of the registry's ``DEMO_SECTIONS`` adds a section: the VAE on
``digits`` (16×16, dynamically binarised); associative retrieval (Annabi et
al.); variational memory addressing (Bornschein et al.); Kanerva++ (Ramapuram
et al.). Each section says its own setting.
"""

import sys
import time
from pathlib import Path

from pyromem.checks import as_int
from pyromem.experiments.registry import DEMO_SECTIONS, recipe
from pyromem.experiments.vae import torch_threads, write_results


def run_demo(out_dir="pyromem-demo", quick=False, seed=0, progress=True, num_threads=1):
    """Run every recipe of the demo and write ``out_dir/report.md`` and ``results.json``.

    :param out_dir: the report's folder.
    :param bool quick: a shorter run (under 2 minutes on a 2-core CPU).
    :param int num_threads: torch's CPU threads. One by default: the demo's models are small,
        and when another process holds a core, each of their operations on two threads waits
        for the second (the quick demo took 212 s on two threads and 41 s on one, on the
        2-core CPU beside a two-thread job).
    :returns: the results dict, with the report's path under ``"report"``.
    """
    as_int(num_threads, "num_threads", 1)
    start = time.perf_counter()
    out_dir = Path(out_dir)
    report = out_dir / "report.md"
    sections = [
        "# pyromem demo report",
        "",
        f"Mode: {'quick' if quick else 'full'}; seed {seed}. Every bound is per test image. "
        "Files: `results.json` (all figures of this report as numbers), one folder per recipe.",
        "",
    ]
    family_results = {}
    with torch_threads(num_threads):
        for number, name in enumerate(DEMO_SECTIONS, 1):
            if progress:
                print(f"demo [{number}/{len(DEMO_SECTIONS)}] {name}", file=sys.stderr, flush=True)
            module = recipe(name).load()
            text, family_results[name] = module.demo_section(
                out_dir, quick, seed=seed, progress=progress
            )
            sections.append(text)
    report.write_text("\n".join(sections))
    results = {
        "demo": "quick" if quick else "full",
        "seed": seed,
        "num_threads": num_threads,
        "report": str(report),
        **family_results,
        "seconds": time.perf_counter() - start,
    }
    write_results(results, out_dir)
    return results
