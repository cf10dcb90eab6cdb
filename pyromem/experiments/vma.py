"""Recipes: the experiments of Variational Memory Addressing (Bornschein et al. 2017).

Three modes, each trained with the address enumerated (``address="enum"``,
``TraceEnum_ELBO``) or sampled (``"vimco"``, ``VIMCO`` with K particles), or
with §4.2's soft-attention baseline in place of VMA (``"soft"``,
:class:`~pyromem.models.vma.SoftAttentionVAE` trained with ``Trace_ELBO``; the
same nets, the memory read as Σ_a w_a(z) m_a):

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
  sweep of Fig. 5A (more confounding classes; optimum = NLL at C = 1 + log C)
  and few-shot classification from q(a|x) (5/20-way, 1/5-shot).

Every test bound is per image in nats: ``kl_address`` = KL(q(a|x) ‖ p(a))
(exact), ``kl_z`` = E_q(a)[KL(q(z|x,m_a) ‖ p(z|m_a))] (analytic KL, averaged
over ``num_particles`` draws of a), ``reconstruction`` = E_q[log p(x|z,m_a)],
and ``test_nll_nats`` = −IWAE-K with K = ``num_samples`` (1000 by default)
importance samples from q(a, z | x). The soft-attention model has no address:
its ``kl_address`` is ``None``, ``kl_z`` = KL(q(z|x) ‖ N(0, I)), its test NLL
samples z alone from q(z|x), and its read weights w(z) at the mean of q(z|x)
stand for q(a|x) in the slot counts and the few-shot classification. Data are
statically binarised.
"""

import json
import math
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pyro
import torch
from matplotlib.figure import Figure

from pyromem.data import load, sample_few_shot
from pyromem.diagnostics import elbo_decomposition, log_likelihood
from pyromem.diagnostics.plots import save_curves, save_figure, save_image_rows
from pyromem.experiments.vae import evaluation_device, write_results
from pyromem.infer import VIMCO
from pyromem.models import VMA
from pyromem.models.vma import SoftAttentionVAE
from pyromem.train import fit, load_checkpoint
from pyromem.train.module import CHECKPOINT_KEY

MODES = ("recall", "learned", "fewshot")
ADDRESSES = ("enum", "vimco", "soft")
DATASET = {"recall": "digits", "learned": "digits", "fewshot": "glyphs"}
# test episodes averaged per memory size of the few-shot sweep (2 queries per class each)
EVAL_EPISODES = 4


def objective(address, num_particles=4):
    """The training objective of an address: exact enumeration, VIMCO with K
    particles, or the single-sample ELBO of the soft-attention baseline."""
    if address == "enum":
        return pyro.infer.TraceEnum_ELBO(max_plate_nesting=1)
    if address == "vimco":
        return VIMCO(num_particles=num_particles, max_plate_nesting=1)
    if address == "soft":
        return pyro.infer.Trace_ELBO(max_plate_nesting=1)
    raise ValueError(f"address: expected one of {ADDRESSES}, got {address!r}")


def build_model(address, input_shape, **options):
    """A :class:`VMA` for ``"enum"`` or ``"vimco"``, a :class:`SoftAttentionVAE` for
    ``"soft"`` (which takes no ``prior``: its p(z) is N(0, I))."""
    if address == "soft":
        options.pop("prior", None)
        return SoftAttentionVAE(input_shape, **options)
    return VMA(input_shape, address=address, **options)


def slot_weights(model, x, memory=None):
    """q(a | x) of a VMA, the read weights w(z) at the mean of q(z | x) of the soft baseline."""
    if isinstance(model, SoftAttentionVAE):
        return model.read_weights(x, memory)
    return model.address_posterior(x, memory)


def diagnostics(vma, x, memory=None, num_samples=1000, num_particles=4):
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


@contextmanager
def _threads(num_threads):
    # Small MLPs on a busy CPU run several times faster on one intra-op thread.
    before = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _load(dataset, split, size, seed):
    return load(dataset, split, binarize="static", size=size, seed=seed)


def _random_memory(images, memory_size, generator):
    if memory_size > len(images):
        raise ValueError(
            f"memory_size: at most the {len(images)} images of the split, got {memory_size}"
        )
    return images[torch.randperm(len(images), generator=generator)[:memory_size]]


def _train_episodes(vma, elbo, next_episode, *, steps, lr, log_every, progress):
    """Adam on ``elbo(vma.model, vma.guide)(x, memory=memory)`` over episodes, the
    learning rate decayed from ``lr`` to 0 on a cosine.

    :returns: the history, one row per ``log_every`` steps.
    """
    loss_fn = elbo(vma.model, vma.guide)
    optimizer = torch.optim.Adam(vma.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    history, total, count, start = [], 0.0, 0, time.perf_counter()
    with pyro.validation_enabled(False):
        for step in range(1, steps + 1):
            memory, x = next_episode()
            loss = loss_fn(x, memory=memory) / len(x)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total, count = total - loss.item(), count + 1
            if step % log_every == 0 or step == steps:
                row = {"epoch": len(history) + 1, "step": step, "train_elbo_nats": total / count}
                row["seconds"] = time.perf_counter() - start
                history.append(row)
                total, count = 0.0, 0
                if progress:
                    print(
                        f"step {step}/{steps}  train ELBO {row['train_elbo_nats']:.2f} nats",
                        file=sys.stderr,
                    )
    return history


def _save_checkpoint(vma, config, history, out_dir):
    # the layout of fit's checkpoints, so that load_checkpoint reads both
    path = Path(out_dir) / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {f"model.{k}": v.detach().cpu() for k, v in vma.state_dict().items()}
    entry = {
        "format_version": 1,
        "config": config,
        "history": history,
        "epochs_completed": len(history),
    }
    torch.save({"state_dict": state, CHECKPOINT_KEY: entry}, path)
    return path


def _fewshot_episode(data, classes, shots, queries, generator, device):
    episode = sample_few_shot(data, classes, shots, queries, generator=generator)
    return episode, episode.memory.to(device), episode.query.to(device)


def classification_accuracy(vma, data, ways, shots, episodes=20, queries=5, seed=0):
    """Few-shot classification from q(a|x): p(c|x) ≈ Σ_{a of class c} q(a|x) (§4.2);
    from the read weights for the soft-attention baseline (:func:`slot_weights`).

    :returns: the accuracy over ``episodes`` episodes of ``ways`` classes.
    """
    generator, correct, total = torch.Generator().manual_seed(seed), 0, 0
    device = next(vma.parameters()).device
    with torch.no_grad():
        for _ in range(episodes):
            episode, memory, query = _fewshot_episode(data, ways, shots, queries, generator, device)
            q = slot_weights(vma, query, memory).cpu()
            scores = torch.zeros(len(query), ways).index_add_(1, episode.memory_labels, q)
            correct += (scores.argmax(-1) == episode.query_labels).sum().item()
            total += len(query)
    return correct / total


def _mean(values):
    values = list(values)
    return None if values[0] is None else sum(values) / len(values)


def _evaluate(vma, config, num_samples, num_particles=4):
    """The test results of a trained VMA in the mode of ``config``."""
    mode, data_config, seed = config["mode"], config["data"], config["seed"]
    device = next(vma.parameters()).device
    test = _load(data_config["dataset"], "test", data_config["size"], data_config["seed"])
    generator = torch.Generator().manual_seed(seed + 1)
    memory_size = config["vma"]["memory_size"] or config["memory_size"]
    results = {"mode": mode, "address": config["address"], "memory_size": memory_size}
    vma.eval()
    if mode == "recall":
        memory = _random_memory(test.images, memory_size, generator).to(device)
        results.update(diagnostics(vma, memory, memory, num_samples, num_particles))
        results["log_memory_size"] = math.log(memory_size)
        results["figure_memory"] = memory[:20].cpu()
    elif mode == "learned":
        x = test.images[: config["num_test"]].to(device)
        results.update(diagnostics(vma, x, None, num_samples, num_particles))
        with torch.no_grad():
            q = slot_weights(vma, x)
        average = q.mean(0)
        results["slots_used"] = int(q.argmax(-1).unique().numel())
        results["effective_slots"] = math.exp(-(average * average.clamp_min(1e-30).log()).sum())
        results["log_memory_size"] = math.log(memory_size)
    else:
        episode = config["episode"]
        classes, shots = episode["classes"], episode["shots"]
        sweep, nll_one_class = [], None
        for c in episode["test_classes"]:
            rows = []
            for _ in range(EVAL_EPISODES):
                _, memory, query = _fewshot_episode(test, c, shots, 2, generator, device)
                rows.append(diagnostics(vma, query, memory, num_samples, num_particles))
            row = {"classes": c, "memory_size": c * shots, "episodes": EVAL_EPISODES}
            row.update({k: _mean(r[k] for r in rows) for k in rows[0]})
            if nll_one_class is None:
                nll_one_class = row["test_nll_nats"]
            row["optimum_nll_nats"] = nll_one_class + math.log(c / episode["test_classes"][0])
            sweep.append(row)
        at_training_size = min(sweep, key=lambda row: abs(row["classes"] - classes))
        results.update({k: v for k, v in at_training_size.items() if k != "optimum_nll_nats"})
        results["memory_size_sweep"] = sweep
        results["classification_accuracy"] = {
            f"{ways}-way {s}-shot": classification_accuracy(vma, test, ways, s, seed=seed)
            for ways, s in ((5, 1), (5, 5), (20, 1), (20, 5))
        }
        results["figure_memory"] = memory[: shots * min(classes, 10)].cpu()
    return results


def _figures(vma, results, history, out_dir):
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
        "decoder mean at z ~ N(0, I), reading the whole memory"
        if isinstance(vma, SoftAttentionVAE)
        else "decoder mean at z ~ p(z | m_a), one per slot"
    )
    figures = {
        "samples": save_image_rows(
            rows, out_dir / "samples.png", titles=["memory slots m_a"] + [title] * 3
        )
    }
    if history:
        figures["elbo_curve"] = save_curves(
            history, ["train_elbo_nats"], out_dir / "elbo_curve.png"
        )
    return {name: str(path) for name, path in figures.items()}


def train_vma(
    *,
    out_dir,
    mode="recall",
    address="enum",
    memory_size=None,
    steps=None,
    epochs=20,
    batch_size=32,
    num_particles=4,
    latent_dim=16,
    embedding_dim=64,
    hidden=(256, 128),
    similarity="normalized",
    prior="learned",
    classes=8,
    shots=4,
    queries=4,
    test_classes=(1, 2, 4, 8, 16),
    size=None,
    lr=1e-3,
    seed=0,
    num_samples=1000,
    num_test=256,
    accelerator="auto",
    num_threads=None,
    progress=True,
):
    """Train a VMA in one of the paper's settings, evaluate it, write results and figures.

    :param out_dir: the run's folder: checkpoints, results.json, figures.
    :param str mode: ``"recall"``, ``"learned"`` or ``"fewshot"``.
    :param str address: ``"enum"`` (TraceEnum_ELBO), ``"vimco"`` (VIMCO, K =
        ``num_particles``) or ``"soft"`` (the soft-attention baseline, Trace_ELBO).
    :param int memory_size: |M| for recall (default 64) and learned (default 64);
        few-shot memories hold ``classes * shots`` images.
    :param int steps: gradient steps of the episodic modes (recall, fewshot; default 2000).
    :param int epochs: epochs of the learned mode (trained by :func:`pyromem.train.fit`).
    :param int batch_size: targets per step (recall, learned).
    :param int classes: C, classes per few-shot training episode.
    :param int shots: S, memory examples per class.
    :param int queries: targets per class in a few-shot training episode.
    :param tuple test_classes: the classes in memory of the test sweep (Fig. 5A).
    :param int size: image side (default: 8 for digits, 16 for glyphs).
    :param int num_samples: K of the importance-sampled test NLL (draws of (a, z),
        or of z alone for the soft-attention baseline).
    :param int num_test: test images of the learned mode.
    :param int num_threads: torch's CPU threads while this runs (``None``: unchanged).
    :returns: the results dict also written to ``out_dir/results.json``: mode,
        address, memory_size, test_nll_nats, num_samples, kl_address (``None``
        for ``"soft"``), kl_z,
        reconstruction (and log_memory_size for recall and learned; the sweep
        and classification accuracies for fewshot), figures.
    """
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    options = {k: v for k, v in locals().items() if k not in ("mode", "num_threads")}
    with _threads(num_threads):
        return _train_vma(mode, **options)


def _train_vma(
    mode,
    *,
    out_dir,
    address,
    memory_size,
    steps,
    epochs,
    batch_size,
    num_particles,
    latent_dim,
    embedding_dim,
    hidden,
    similarity,
    prior,
    classes,
    shots,
    queries,
    test_classes,
    size,
    lr,
    seed,
    num_samples,
    num_test,
    accelerator,
    progress,
):
    elbo = objective(address, num_particles)
    start = time.perf_counter()
    dataset = DATASET[mode]
    size = size or (8 if dataset == "digits" else 16)
    memory_size = memory_size or 64
    steps = steps or 2000
    torch.manual_seed(seed)
    pyro.set_rng_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    train = _load(dataset, "train", size, seed)
    device = evaluation_device(accelerator)
    vma = build_model(
        address,
        train.event_shape,
        memory_size=memory_size if mode == "learned" else None,
        latent_dim=latent_dim,
        embedding_dim=embedding_dim,
        hidden=hidden,
        similarity=similarity,
        prior=prior,
    ).to(device)
    config = {
        "model": "vma",
        "mode": mode,
        "address": address,
        "vma": vma.config,
        "memory_size": memory_size if mode != "fewshot" else classes * shots,
        "data": {"dataset": dataset, "size": size, "seed": seed, "binarize": "static"},
        "episode": {
            "classes": classes,
            "shots": shots,
            "queries": queries,
            "test_classes": list(test_classes),
        },
        "num_particles": num_particles,
        "num_test": num_test,
        "seed": seed,
    }
    if mode == "learned":
        result = fit(
            vma,
            train.images,
            out_dir=out_dir,
            elbo=elbo,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            accelerator=accelerator,
            progress=progress,
            config=config,
        )
        vma, history, checkpoint = result.model, result.history, result.checkpoint
    else:
        images = train.images.to(device)

        def next_episode():
            if mode == "recall":
                memory = _random_memory(images, memory_size, generator)
                return memory, memory[
                    torch.randint(memory_size, (batch_size,), generator=generator)
                ]
            _, memory, query = _fewshot_episode(train, classes, shots, queries, generator, device)
            return memory, query

        history = _train_episodes(
            vma,
            elbo,
            next_episode,
            steps=steps,
            lr=lr,
            log_every=max(steps // 20, 1),
            progress=progress,
        )
        checkpoint = _save_checkpoint(vma, config, history, out_dir)
    results = _evaluate(vma, config, num_samples, num_particles)
    results.update(
        {
            "dataset": dataset,
            "image_size": size,
            "binarization": "static",
            "split": "test",
            "device": str(device),
            "num_particles": num_particles,
            "bounds": _bounds(address, num_samples, num_particles),
            "checkpoint": str(checkpoint),
        }
    )
    results["figures"] = _figures(vma, results, history, out_dir)
    results["seconds"] = time.perf_counter() - start
    write_results(results, out_dir)
    return results


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


def evaluate_vma(checkpoint, *, out_dir, num_samples=1000):
    """Rebuild a VMA (or the soft-attention baseline) from a checkpoint of
    :func:`train_vma` and evaluate it again.

    :returns: the results dict also written to ``out_dir/results.json``.
    """
    saved = load_checkpoint(checkpoint)
    if saved.config.get("model") != "vma":
        raise ValueError(
            f"checkpoint {checkpoint} holds a {saved.config.get('model')!r} model, expected 'vma'"
        )
    config = saved.config
    vma = SoftAttentionVAE(**config["vma"]) if config["address"] == "soft" else VMA(**config["vma"])
    vma.load_state_dict(saved.state_dict)
    vma.to(evaluation_device())
    results = _evaluate(vma, config, num_samples, config["num_particles"])
    results["checkpoint"] = str(checkpoint)
    results["figures"] = _figures(vma, results, saved.history, out_dir)
    write_results(results, out_dir)
    return results


def compare_vma(*, out_dir, addresses=ADDRESSES, **options):
    """Train one run per address in the same setting and compare their test NLL (§4.2):
    VMA with an enumerated or sampled address against the soft-attention baseline.

    :param out_dir: the runs go to ``out_dir/<address>``; ``comparison.json`` and,
        for few-shot, ``nll_by_classes.png`` (the NLL against the classes in
        memory, Fig. 5A) to ``out_dir``.
    :param tuple addresses: the addresses compared, each as in :func:`train_vma`.
    :param options: the other arguments of :func:`train_vma`, the same for every run.
    :returns: ``{"runs": {address: results}, "table": rows}``, one row per memory
        size (the few-shot sweep, or the one test memory) with each address's test NLL.
    """
    out_dir = Path(out_dir)
    runs = {a: train_vma(out_dir=out_dir / a, address=a, **options) for a in addresses}
    sweeps = {
        a: run.get("memory_size_sweep") or [{"classes": None, **run}] for a, run in runs.items()
    }
    table = [
        {
            "classes": rows[0]["classes"],
            "memory_size": rows[0]["memory_size"],
            **{f"{a}_test_nll_nats": sweeps[a][i]["test_nll_nats"] for a in addresses},
        }
        for i, rows in enumerate(zip(*sweeps.values(), strict=True))
    ]
    comparison = {"runs": runs, "table": table}
    if len(table) > 1:
        comparison["figure"] = str(_save_nll_by_classes(sweeps, out_dir / "nll_by_classes.png"))
    (out_dir / "comparison.json").write_text(json.dumps(comparison, indent=2) + "\n")
    return comparison


def _save_nll_by_classes(sweeps, path):
    figure = Figure(figsize=(5, 3.2))
    ax = figure.subplots()
    for address, rows in sweeps.items():
        classes = [row["classes"] for row in rows]
        (line,) = ax.plot(classes, [row["test_nll_nats"] for row in rows], "o-", label=address)
        if address != "soft":
            optimum = [row["optimum_nll_nats"] for row in rows]
            ax.plot(classes, optimum, "--", color=line.get_color(), label=f"{address} optimum")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("classes in memory")
    ax.set_ylabel("test NLL, nats per image")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(figure, path)


DEMO = {
    # recall and few-shot addresses, recall steps, IWAE K: quick stays under ~25 s and full
    # under ~90 s on one CPU thread
    "quick": {"recall": ("enum", "soft"), "steps": 2000, "num_samples": 200},
    "full": {
        "recall": ("enum", "vimco", "soft"),
        "fewshot": ("enum", "soft"),
        "steps": 2000,
        "num_samples": 1000,
    },
}
DEMO_NETS = {"hidden": (64,), "latent_dim": 4, "embedding_dim": 32, "lr": 1e-2}


def demo_section(out_dir, quick):
    """The VMA section of ``pyromem demo``: train-to-recall with VMA and the soft-attention
    baseline (and, in full, VIMCO and few-shot VMA against soft attention).

    :param out_dir: the demo's folder; runs go to ``out_dir/vma-<mode>-<address>``.
    :param bool quick: two recall runs (enumeration, soft attention) instead of five runs.
    :returns: ``(markdown, results)``, results keyed ``"<mode>_<address>"``.
    """
    out_dir, settings = Path(out_dir), DEMO["quick" if quick else "full"]
    options = {
        "memory_size": 16,
        "num_samples": settings["num_samples"],
        "test_classes": (1, 2, 4, 8),
        "num_threads": 1,
        "progress": False,
        **DEMO_NETS,
    }
    results, lines = {}, ["## Variational Memory Addressing", ""]
    lines += [
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
    for address in settings["recall"]:
        run = train_vma(
            out_dir=out_dir / f"vma-recall-{address}",
            mode="recall",
            address=address,
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
        "term analytic, averaged over 4 draws of a. VIMCO trains with K = 4, soft attention "
        "with the one-sample ELBO.",
        "",
    ]
    if "fewshot" in settings:
        addresses, steps = settings["fewshot"], settings["steps"] // 4
        comparison = compare_vma(
            out_dir=out_dir / "vma-fewshot",
            mode="fewshot",
            addresses=addresses,
            steps=steps,
            **options,
        )
        results.update({f"fewshot_{a}": run for a, run in comparison["runs"].items()})
        lines += [
            f"Few-shot on `glyphs` (16×16, 8 classes × 4 shots in memory, {steps} steps), "
            "tested on unseen classes with 1 to 8 classes in memory (Fig. 5A); the optimum is "
            "VMA's NLL at one class + log C. Classification accuracy from q(a|x) (from the read "
            "weights at the mean of q(z|x) for soft attention):",
            "",
            *(
                f"- {a}: "
                + ", ".join(f"{k} {v:.2f}" for k, v in run["classification_accuracy"].items())
                for a, run in comparison["runs"].items()
            ),
            "",
            "| classes in memory | "
            + " | ".join(f"{a} test NLL" for a in addresses)
            + " | optimum |",
            "| ---: | " + "---: | " * len(addresses) + "---: |",
            *(
                f"| {row['classes']} | "
                + " | ".join(f"{row[f'{a}_test_nll_nats']:.2f}" for a in addresses)
                + f" | {optimum['optimum_nll_nats']:.2f} |"
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
    return "\n".join(lines), results
