"""Recipe: train and evaluate the VAE on an image dataset (the foundation of every family).

Bounds are reported per test image in nats, and in bits/dim: the ELBO (with
``num_particles`` guide draws and analytic KL) and the importance-sampled
IWAE-K bound with K = ``num_samples``. Binarised datasets are trained with the
binarisation asked for and always evaluated on one static binarisation of the
test split (seeded), so the test bound is a number and not a random variable.
"""

import json
import sys
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pyro
import torch
from lightning.pytorch.callbacks import Callback

from pyromem.data import load
from pyromem.diagnostics import elbo_decomposition, log_likelihood
from pyromem.diagnostics.plots import save_curves, save_image_rows
from pyromem.experiments.configs import VAEConfig
from pyromem.experiments.options import interrupted_run_file
from pyromem.models import VAE
from pyromem.train import fit, last_checkpoint, load_checkpoint
from pyromem.train.checkpoint import write_atomically

LIKELIHOOD_FOR_SUPPORT = {
    "binary": "bernoulli",
    "unit_interval": "gaussian",
    "8bit": "discretized_logistic_mixture",
}
EVAL_IMAGES_PER_CHUNK = 256  # test images per evaluation pass
EVAL_QUIET_SECONDS = 5.0  # an evaluation shows its progress once it has run this long
EVAL_CHUNK = EVAL_IMAGES_PER_CHUNK  # deprecated alias, kept for one release


def evaluation_device(accelerator="auto"):
    """The device to evaluate on: a GPU when one is present and not refused."""
    if accelerator != "cpu" and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


#: Ends a binarisation that applies to grey-scale images only (a recipe's default): a pixel
#: read by a Bernoulli likelihood has one channel, so colour images are not binarised.
IF_GREY = "-if-grey"


def binarization(asked, default):
    """A recipe's ``binarize`` option as a data config holds it: ``None`` for ``"none"``, the
    mode asked for, or, left unset, ``default + IF_GREY``."""
    if asked is None:
        return default + IF_GREY
    return None if asked == "none" else asked


def load_binarized(dataset, binarize, **options):
    """The train split of ``dataset`` binarised by ``binarize`` and its test split, on one
    static binarisation where the train split is binarised (see the module's docstring).

    :param str binarize: ``None``, ``"static"``, ``"dynamic"``, or either followed by
        :data:`IF_GREY`: that mode for grey-scale images, none for colour ones.
    :param options: keyword arguments of :func:`~pyromem.data.load` (``root``, ``seed``, ...).
    :returns: ``(train, test)``; ``train.binarize`` is the binarisation applied.
    """
    train = load(dataset, "train", **options)
    if binarize is not None and binarize.endswith(IF_GREY):
        binarize = binarize.removesuffix(IF_GREY) if train.event_shape[0] == 1 else None
    if binarize is not None:
        train = train.binarized(binarize, seed=options.get("seed", 0))
    test = load(dataset, "test", binarize="static" if binarize else None, **options)
    return train, test


def load_splits(data_config):
    """The splits of a data config (:func:`load_binarized`); a run stores the binarisation
    applied, ``train.binarize``, in its data config."""
    options = {
        "root": data_config.get("root"),
        "download": data_config.get("download", False),
        "seed": data_config.get("seed", 0),
        "size": data_config.get("size"),
    }
    return load_binarized(data_config["dataset"], data_config.get("binarize"), **options)


def load_vae_data(data_config):
    """The train split (as configured) and the fixed test images of a data config."""
    train, test = load_splits(data_config)
    return train, test.images


def stderr_line(line: str) -> None:
    """Print one progress line on stderr at once (stdout may carry ``--json``)."""
    print(line, file=sys.stderr, flush=True)


class TenthsProgress:
    """A line at each tenth of a long evaluation, with an ETA, once it has run
    :data:`EVAL_QUIET_SECONDS`: ``progress(fraction)`` after each pass, the fraction done in
    [0, 1]. Silent without ``log``.

    :param log: a callable taking a line, or ``None``.
    :param str label: what runs, the start of each line.
    """

    def __init__(self, log, label):
        self.log, self.label = log, label
        self.start, self.tenths = time.perf_counter(), 0

    def __call__(self, fraction):
        if self.log is None or int(10 * fraction) <= self.tenths:
            return
        elapsed = time.perf_counter() - self.start
        if elapsed < EVAL_QUIET_SECONDS:
            return
        self.tenths = int(10 * fraction)
        self.log(
            f"{self.label} {fraction:4.0%} "
            f"({elapsed:.0f} s, ETA {elapsed * (1 - fraction) / fraction:.0f} s)"
        )


def evaluate_vae(vae, test_x, num_samples=1000, num_particles=10, device=None, log=None):
    """Test bounds of a trained VAE, per image in nats and bits/dim.

    :param VAE vae: the trained model.
    :param torch.Tensor test_x: test images ``(B, C, H, W)``.
    :param int num_samples: K of the IWAE-K estimate.
    :param int num_particles: guide draws of the ELBO estimate.
    :param log: optional callable taking a progress line: one that says what runs, then one
        at each tenth of the IWAE-K draws, with an ETA, once the evaluation has run
        :data:`EVAL_QUIET_SECONDS` (the IWAE-1000 of colour images takes minutes on a CPU).
    :returns: a JSON-able dict.
    """
    device = device or evaluation_device()
    vae = vae.to(device).eval()
    elbo_parts, iwae_parts = [], []
    if log is not None:
        log(
            f"vae: evaluating on {len(test_x)} test images (ELBO with {num_particles} "
            f"particles, IWAE-{num_samples})"
        )
    progress, done = TenthsProgress(log, f"vae: IWAE-{num_samples} on {len(test_x)} test images"), 0

    def report(chunk_size, draws, _):
        progress((done + chunk_size * draws) / (len(test_x) * num_samples))

    for chunk in test_x.split(EVAL_IMAGES_PER_CHUNK):
        chunk = chunk.to(device)
        elbo_parts.append(elbo_decomposition(vae.model, vae.guide, chunk, num_particles))
        iwae_parts.append(
            log_likelihood(
                vae.model,
                vae.guide,
                chunk,
                num_samples=num_samples,
                on_pass=partial(report, len(chunk)),
            )
        )
        done += len(chunk) * num_samples
    elbo = torch.cat([p.elbo for p in elbo_parts])
    bpd = torch.cat([p.bits_per_dim for p in elbo_parts])
    iwae = torch.cat([p.log_likelihood for p in iwae_parts])
    iwae_bpd = torch.cat([p.bits_per_dim for p in iwae_parts])
    ess = torch.cat([p.ess for p in iwae_parts])
    return {
        "test_elbo_nats": elbo.mean().item(),
        "test_elbo_bits_per_dim": bpd.mean().item(),
        "test_log_likelihood_nats": iwae.mean().item(),
        "test_log_likelihood_bits_per_dim": iwae_bpd.mean().item(),
        "num_samples": num_samples,
        "num_particles": num_particles,
        "ess": ess.mean().item(),
        "kl": {s: torch.cat([p.kl[s] for p in elbo_parts]).mean().item() for s in elbo_parts[0].kl},
        "log_likelihood": {
            s: torch.cat([p.log_likelihood[s] for p in elbo_parts]).mean().item()
            for s in elbo_parts[0].log_likelihood
        },
        "num_test_images": len(test_x),
        "bounds": {
            "test_elbo_nats": f"ELBO, {num_particles} particles, analytic KL where registered",
            "test_log_likelihood_nats": f"IWAE-{num_samples}",
        },
    }


def save_vae_figures(vae, test_x, out_dir, history=None):
    """Reconstructions, samples and (given a history) the ELBO curve, as PNGs in ``out_dir``."""
    out_dir = Path(out_dir)
    device = next(vae.parameters()).device
    with torch.no_grad():
        x = test_x[:20].to(device)
        figures = {
            "reconstructions": save_image_rows(
                [x.cpu(), vae.reconstruct(x).cpu()],
                out_dir / "reconstructions.png",
                titles=["test images", "reconstructions (decoder mean at encoder mean)"],
            ),
            "samples": save_image_rows(
                [vae.generate(40).cpu()], out_dir / "samples.png", titles=["samples from p(z)"]
            ),
        }
    if history:
        keys = [k for k in ("train_elbo_nats", "eval_elbo_nats") if k in history[0]]
        figures["elbo_curve"] = save_curves(history, keys, out_dir / "elbo_curve.png")
    return {name: str(path) for name, path in figures.items()}


@contextmanager
def torch_threads(num_threads):
    """A context in which torch uses ``num_threads`` CPU threads (``None``: as it is)."""
    # Small MLPs on a busy CPU run several times faster on one intra-op thread.
    before = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def write_results(results, out_dir):
    """Write ``results`` as ``out_dir/results.json`` (atomically: a run killed meanwhile
    leaves the old file or the new one) and return the path."""
    text = json.dumps(results, indent=2) + "\n"
    return write_atomically(Path(out_dir) / "results.json", lambda file: file.write(text))


def load_trained(checkpoint, family, model_class):
    """The trained model of a checkpoint that ``family``'s recipe wrote, rebuilt as
    ``model_class(**saved.config[family])``, and the checkpoint itself.

    :param str family: ``"vae"`` or ``"kpp"``: the recipe that wrote it.
    :raises ValueError: if another recipe wrote the checkpoint.
    """
    saved = load_checkpoint(checkpoint)
    if saved.config.get("model") != family:
        raise ValueError(
            f"checkpoint {checkpoint} holds a {saved.config.get('model')!r} model, "
            f"expected {family!r}"
        )
    model = model_class(**saved.config[family])
    model.load_state_dict(saved.state_dict)
    return model, saved


def finish_run(results, config, start, out_dir):
    """Record the run's config and its seconds since ``start`` (a ``time.perf_counter()``)
    in ``results``, write them to ``out_dir/results.json`` and return them."""
    results["config"] = config.to_dict()
    results["seconds"] = time.perf_counter() - start
    write_results(results, out_dir)
    return results


def table_summary(results):
    """The run's Markdown table, for the terminal."""
    return results["table"]


def engine_options(config):
    """The keyword arguments of :func:`pyromem.train.fit` that a recipe's config sets."""
    return {
        "seed": config.seed,
        "progress": config.progress,
        "resume": config.resume,
        "accelerator": config.accelerator,
        "devices": config.devices,
        "strategy": config.strategy,
        "gradient_clip_val": config.gradient_clip_val,
        "lr_schedule": config.lr_schedule,
        "warmup_epochs": config.warmup_epochs,
        "weight_decay": config.weight_decay,
        "eval_every": config.eval_every,
        "eval_particles": config.eval_particles,
    }


def resumed_checkpoint(out_dir, resume):
    """The checkpoint that a run in ``out_dir`` continues (a
    :class:`~pyromem.train.checkpoint.Checkpoint`), or ``None``: not resumed, or nothing to
    continue (which the engine refuses in its own words)."""
    path = last_checkpoint(out_dir)
    return load_checkpoint(path) if resume and path.is_file() else None


def stored_as_before(checkpoint_config, saved):
    """``checkpoint_config`` less the entries of its ``"data"`` that the checkpoint ``saved``
    predates: a run of an earlier pyromem resumes as it did then, those entries unchecked
    (the engine would read a missing entry as a change)."""
    if saved is None or "data" not in checkpoint_config:
        return checkpoint_config
    was = saved.config.get("data")
    if was is None:
        return {key: value for key, value in checkpoint_config.items() if key != "data"}
    data = {key: value for key, value in checkpoint_config["data"].items() if key in was}
    return dict(checkpoint_config, data=data)


class StartLines(Callback):
    """Prints ``lines`` on stderr when the training starts, on rank zero: once the engine has
    checked the run, so that a run it refuses says only why. (A resumed run with no epoch
    left does not start.)

    :param lines: the lines; empty strings and ``None`` are left out.
    """

    def __init__(self, *lines):
        self.lines = [line for line in lines if line]

    def on_train_start(self, trainer, pl_module):
        if trainer.is_global_zero:
            for line in self.lines:
                stderr_line(line)


@contextmanager
def config_kept_if_refused(config, out_dir):
    """A context in which an error (a check that comes after the run's
    :meth:`~pyromem.experiments.options.Options.start_run`: its data, its checkpoint; data
    not found) puts back the ``config.toml`` that the run replaced, in Python as on the
    command line (:meth:`~pyromem.experiments.options.Options.abandon_run`)."""
    try:
        yield
    except Exception:
        config.abandon_run(out_dir)
        raise


def data_options(config):
    """The data config of a run, stored in its checkpoints: what ``load`` needs."""
    return {
        "dataset": config.dataset,
        "binarize": binarization(config.binarize, "dynamic"),
        "size": config.size,
        "root": config.root,
        "download": config.download,
        "seed": config.seed,
    }


def train_vae(*, out_dir, **options):
    """Train a VAE with the engine, evaluate it, write results and figures: :func:`run` with
    the :class:`~pyromem.experiments.configs.VAEConfig` of ``options``."""
    return run(VAEConfig.build(**options), out_dir)


def run(config, out_dir):
    """Train a VAE with the engine, evaluate it on the test split, write results and figures.

    :param VAEConfig config: the run's options; ``likelihood=None`` picks the head from
        the data: Bernoulli for binary, Gaussian for [0, 1], discretized logistic
        mixture for 8-bit images.
    :param out_dir: the run's folder: config.toml, checkpoints, metrics.csv,
        results.json, figures.
    :returns: the results dict also written to ``out_dir/results.json``.
    """
    start = time.perf_counter()
    pyro.set_rng_seed(config.seed)
    config.start_run(out_dir)
    with config_kept_if_refused(config, out_dir):
        data_config = data_options(config)
        train, test_x = load_vae_data(data_config)
        data_config["binarize"] = train.binarize
        likelihood = config.likelihood or LIKELIHOOD_FOR_SUPPORT[train.support]
        vae = VAE(train.event_shape, config.latent_dim, likelihood, config.net, config.hidden)
        result = fit(
            vae,
            train,
            eval_data=test_x[:512],
            epochs=config.epochs,
            batch_size=config.batch_size,
            lr=config.lr,
            elbo=pyro.infer.JitTrace_ELBO(ignore_jit_warnings=True) if config.jit else None,
            out_dir=out_dir,
            config={"model": "vae", "vae": vae.config, "data": data_config},
            **engine_options(config),
        )
    device = evaluation_device(config.accelerator)
    binarize = data_config["binarize"]
    # the evaluation and figures draw from the run's seed, not from where training left the
    # generators: a finished run resumed (no epoch to train) scores as it did
    pyro.set_rng_seed(config.seed)
    results = {
        "model": "vae",
        "dataset": config.dataset,
        "epochs": result.epochs,
        "lr": config.lr,
        "device": result.device,
        "likelihood": likelihood,
        "latent_dim": config.latent_dim,
        "net": config.net,
        "binarization": {"train": binarize, "test": "static" if binarize else None},
        "split": "test",
        **evaluate_vae(
            result.model,
            test_x,
            num_samples=config.num_samples,
            num_particles=config.num_particles,
            device=device,
            log=stderr_line if config.progress else None,
        ),
        "checkpoint": str(result.checkpoint),
        "metrics_csv": str(result.metrics_csv),
        "config": config.to_dict(),
    }
    results["figures"] = save_vae_figures(result.model, test_x, out_dir, result.history)
    results["seconds"] = time.perf_counter() - start
    write_results(results, out_dir)
    return results


def evaluate_checkpoint(
    checkpoint, *, out_dir, num_samples=1000, num_particles=10, root=None, log=None
):
    """Rebuild a VAE from a pyromem checkpoint and evaluate it on its dataset's test split.

    :param checkpoint: the path of a checkpoint written by :func:`train_vae`.
    :param root: overrides the data root stored in the checkpoint.
    :param log: optional callable taking progress lines (:func:`evaluate_vae`'s).
    :returns: the results dict also written to ``out_dir/results.json``.
    """
    vae, saved = load_trained(checkpoint, "vae", VAE)
    data_config = dict(saved.config["data"], **({"root": root} if root else {}))
    _, test_x = load_vae_data(data_config)
    results = {
        "model": "vae",
        "dataset": data_config["dataset"],
        "epochs": saved.epoch,
        "device": str(evaluation_device()),
        "split": "test",
        **evaluate_vae(vae, test_x, num_samples=num_samples, num_particles=num_particles, log=log),
        "checkpoint": str(checkpoint),
    }
    results["figures"] = save_vae_figures(vae, test_x, out_dir, saved.history)
    write_results(results, out_dir)
    return results


DEMO_SETTINGS = {
    # --quick is what the tests run: 25 epochs at 3e-3 are the fewest whose samples
    # look like digits (5 gave grey blobs); the full demo stays under 10 minutes
    "quick": {"epochs": 25, "lr": 3e-3, "num_samples": 100},
    "full": {"epochs": 150, "lr": 1e-3, "num_samples": 1000},
}


def demo_section(out_dir, quick, seed=0, progress=True, resume=False):
    """The VAE section of ``pyromem demo``: ``(markdown_text, results)``; writes to
    ``out_dir/vae``. With ``resume``, a run interrupted there continues from its checkpoint."""
    out_dir = Path(out_dir)
    results = train_vae(
        out_dir=out_dir / "vae",
        resume=resume and interrupted_run_file(out_dir / "vae") is not None,
        dataset="digits",
        size=16,
        binarize="dynamic",
        latent_dim=16,
        hidden=(256,),
        batch_size=64,
        seed=seed,
        progress=progress,
        overwrite=True,
        **DEMO_SETTINGS["quick" if quick else "full"],
    )
    return _demo_report(results, out_dir), results


def summary(results):
    """The test bounds of a VAE run as a Markdown table, with its KLs and IWAE's ESS: for the
    terminal, and the demo's report."""
    kl = ", ".join(f"`{site}` {value:.2f}" for site, value in results["kl"].items())
    return "\n".join(
        [
            "| bound (test, per image) | nats | bits/dim |",
            "| --- | ---: | ---: |",
            f"| ELBO ({results['num_particles']} particles) | {results['test_elbo_nats']:.2f} "
            f"| {results['test_elbo_bits_per_dim']:.3f} |",
            f"| IWAE-{results['num_samples']} | {results['test_log_likelihood_nats']:.2f} "
            f"| {results['test_log_likelihood_bits_per_dim']:.3f} |",
            "",
            f"KL per latent site (nats): {kl}. Mean effective sample size of the "
            f"IWAE weights: {results['ess']:.1f} of {results['num_samples']}.",
        ]
    )


def _demo_report(results, out_dir):
    rel = {name: Path(path).relative_to(out_dir) for name, path in results["figures"].items()}
    return "\n".join(
        [
            "## VAE on digits",
            "",
            "What to look at: the samples from p(z) should look like digits, and each "
            "reconstruction like the test image at the same place in the panel above it.",
            "",
            f"An MLP VAE (latent width {results['latent_dim']}, {results['likelihood']} "
            f"likelihood) trained for {results['epochs']} epochs on the `digits` train split "
            f"(16×16, {results['binarization']['train']} binarisation) on {results['device']}, "
            f"evaluated on the test split ({results['num_test_images']} images, "
            f"{results['binarization']['test']} binarisation).",
            "",
            summary(results),
            "",
            f"![ELBO per epoch]({rel['elbo_curve']})",
            "",
            f"![test images and reconstructions]({rel['reconstructions']})",
            "",
            f"![samples]({rel['samples']})",
            "",
        ]
    )
