"""Recipes: the experiments of Variational Memory Addressing (Bornschein et al. 2017).

Three modes, each trained with the address enumerated (``TraceEnum_ELBO``) or
sampled (``VIMCO`` with K particles):

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
importance samples from q(a, z | x). Data are statically binarised.
"""

import math
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pyro
import torch

from pyromem.data import load, sample_few_shot
from pyromem.diagnostics import elbo_decomposition, log_likelihood
from pyromem.diagnostics.plots import save_curves, save_image_rows
from pyromem.experiments.vae import evaluation_device, write_results
from pyromem.infer import VIMCO
from pyromem.models import VMA
from pyromem.train import fit, load_checkpoint
from pyromem.train.module import CHECKPOINT_KEY

MODES = ("recall", "learned", "fewshot")
ADDRESSES = ("enum", "vimco")
DATASET = {"recall": "digits", "learned": "digits", "fewshot": "glyphs"}
# test episodes averaged per memory size of the few-shot sweep (2 queries per class each)
EVAL_EPISODES = 4


def objective(address, num_particles=4):
    """The training objective of an address: exact enumeration or VIMCO with K particles."""
    if address == "enum":
        return pyro.infer.TraceEnum_ELBO(max_plate_nesting=1)
    if address == "vimco":
        return VIMCO(num_particles=num_particles, max_plate_nesting=1)
    raise ValueError(f"address: expected one of {ADDRESSES}, got {address!r}")


def diagnostics(vma, x, memory=None, num_samples=1000, num_particles=4):
    """Per-image test diagnostics in nats (see the module's docstring), as floats."""
    with torch.no_grad():
        parts = elbo_decomposition(vma.model, vma.guide, x, num_particles, memory=memory)
        iwae = log_likelihood(vma.model, vma.guide, x, num_samples=num_samples, memory=memory)
    return {
        "test_nll_nats": -iwae.log_likelihood.mean().item(),
        "num_samples": num_samples,
        "ess": iwae.ess.mean().item(),
        "kl_address": parts.kl["a"].mean().item(),
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
    """Few-shot classification from q(a|x): p(c|x) ≈ Σ_{a of class c} q(a|x) (§4.2).

    :returns: the accuracy over ``episodes`` episodes of ``ways`` classes.
    """
    generator, correct, total = torch.Generator().manual_seed(seed), 0, 0
    device = next(vma.parameters()).device
    with torch.no_grad():
        for _ in range(episodes):
            episode, memory, query = _fewshot_episode(data, ways, shots, queries, generator, device)
            q = vma.address_posterior(query, memory).cpu()
            scores = torch.zeros(len(query), ways).index_add_(1, episode.memory_labels, q)
            correct += (scores.argmax(-1) == episode.query_labels).sum().item()
            total += len(query)
    return correct / total


def _evaluate(vma, config, num_samples, num_particles=4):
    """The test results of a trained VMA in the mode of ``config``."""
    mode, data_config, seed = config["mode"], config["data"], config["seed"]
    device = next(vma.parameters()).device
    test = _load(data_config["dataset"], "test", data_config["size"], data_config["seed"])
    generator = torch.Generator().manual_seed(seed + 1)
    memory_size = config["vma"]["memory_size"] or config["memory_size"]
    results = {"mode": mode, "address": config["vma"]["address"], "memory_size": memory_size}
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
            q = vma.address_posterior(x)
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
            row.update({k: sum(r[k] for r in rows) / len(rows) for k in rows[0]})
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
            rows.append(
                torch.cat([vma.generate(1, memory.to(device), slot=s).cpu() for s in range(slots)])
            )
    figures = {
        "samples": save_image_rows(
            rows,
            out_dir / "samples.png",
            titles=["memory slots m_a"] + ["decoder mean at z ~ p(z | m_a), one per slot"] * 3,
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
    :param str address: ``"enum"`` (TraceEnum_ELBO) or ``"vimco"`` (VIMCO, K = ``num_particles``).
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
    :param int num_samples: K of the importance-sampled test NLL.
    :param int num_test: test images of the learned mode.
    :param int num_threads: torch's CPU threads while this runs (``None``: unchanged).
    :returns: the results dict also written to ``out_dir/results.json``: mode,
        address, memory_size, test_nll_nats, num_samples, kl_address, kl_z,
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
    vma = VMA(
        train.event_shape,
        memory_size=memory_size if mode == "learned" else None,
        latent_dim=latent_dim,
        embedding_dim=embedding_dim,
        hidden=hidden,
        address=address,
        similarity=similarity,
        prior=prior,
    ).to(device)
    config = {
        "model": "vma",
        "mode": mode,
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
            "bounds": {
                "test_nll_nats": f"-IWAE-{num_samples}, samples from q(a, z | x)",
                "kl_z": f"analytic KL averaged over {num_particles} draws a ~ q(a | x)",
            },
            "checkpoint": str(checkpoint),
        }
    )
    results["figures"] = _figures(vma, results, history, out_dir)
    results["seconds"] = time.perf_counter() - start
    write_results(results, out_dir)
    return results


def evaluate_vma(checkpoint, *, out_dir, num_samples=1000):
    """Rebuild a VMA from a checkpoint of :func:`train_vma` and evaluate it again.

    :returns: the results dict also written to ``out_dir/results.json``.
    """
    saved = load_checkpoint(checkpoint)
    if saved.config.get("model") != "vma":
        raise ValueError(
            f"checkpoint {checkpoint} holds a {saved.config.get('model')!r} model, expected 'vma'"
        )
    vma = VMA(**saved.config["vma"])
    vma.load_state_dict(saved.state_dict)
    vma.to(evaluation_device())
    results = _evaluate(vma, saved.config, num_samples, saved.config["num_particles"])
    results["checkpoint"] = str(checkpoint)
    results["figures"] = _figures(vma, results, saved.history, out_dir)
    write_results(results, out_dir)
    return results


DEMO = {
    # (runs, steps, IWAE K): quick stays under ~20 s and full under ~90 s on one CPU thread
    "quick": {"runs": [("recall", "enum")], "steps": 2000, "num_samples": 200},
    "full": {
        "runs": [("recall", "enum"), ("recall", "vimco"), ("fewshot", "enum")],
        "steps": 2000,
        "num_samples": 1000,
    },
}
DEMO_NETS = {"hidden": (64,), "latent_dim": 4, "embedding_dim": 32, "lr": 1e-2}


def demo_section(out_dir, quick):
    """The VMA section of ``pyromem demo``: train-to-recall (and, in full, VIMCO and few-shot).

    :param out_dir: the demo's folder; runs go to ``out_dir/vma-<mode>-<address>``.
    :param bool quick: one recall run instead of three runs.
    :returns: ``(markdown, results)``, results keyed ``"<mode>_<address>"``.
    """
    out_dir, settings = Path(out_dir), DEMO["quick" if quick else "full"]
    results, lines = {}, ["## Variational Memory Addressing", ""]
    lines += [
        "Train-to-recall on `digits` (8×8, static binarisation): each step's memory is 16 random "
        "training digits and the targets are drawn from it; tested with 16 test digits in "
        "memory, so an optimal lookup table scores NLL = log 16 = 2.77 nats. Adam at 1e-2 "
        "decays on a cosine to 0.",
        "",
        "| mode | address | steps | memory size | test NLL (nats) | log memory size "
        "| KL(q(a\\|x)‖p(a)) | E KL(q(z)‖p(z)) | reconstruction |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for mode, address in settings["runs"]:
        steps = settings["steps"] if mode == "recall" else settings["steps"] // 4
        run = train_vma(
            out_dir=out_dir / f"vma-{mode}-{address}",
            mode=mode,
            address=address,
            memory_size=16,
            steps=steps,
            num_samples=settings["num_samples"],
            test_classes=(1, 2, 4, 8),
            num_threads=1,
            progress=False,
            **DEMO_NETS,
        )
        results[f"{mode}_{address}"] = run
        log_m = f"{run['log_memory_size']:.2f}" if "log_memory_size" in run else "–"
        lines.append(
            f"| {mode} | {address} | {steps} | {run['memory_size']} | {run['test_nll_nats']:.2f} "
            f"| {log_m} | {run['kl_address']:.2f} | {run['kl_z']:.2f} "
            f"| {run['reconstruction']:.2f} |"
        )
    lines += [
        "",
        f"Test NLL: −IWAE-{settings['num_samples']} with samples from q(a, z | x); KL(q(a|x)‖p(a)) "
        "exact; the z term analytic, averaged over 4 draws of a. VIMCO trains with K = 4.",
        "",
    ]
    if "fewshot_enum" in results:
        run = results["fewshot_enum"]
        accuracy = ", ".join(f"{k} {v:.2f}" for k, v in run["classification_accuracy"].items())
        lines += [
            f"Few-shot on `glyphs` (16×16, 8 classes × 4 shots in memory): classification "
            f"accuracy from q(a|x) on unseen test classes: {accuracy}.",
            "",
            "| classes in memory | test NLL | optimum (NLL at 1 class + log C) |",
            "| ---: | ---: | ---: |",
            *(
                f"| {r['classes']} | {r['test_nll_nats']:.2f} | {r['optimum_nll_nats']:.2f} |"
                for r in run["memory_size_sweep"]
            ),
            "",
        ]
    for name, run in results.items():
        figure = Path(run["figures"]["samples"]).relative_to(out_dir)
        lines += [f"![{name}: memory slots and samples given each slot]({figure})", ""]
    return "\n".join(lines), results
