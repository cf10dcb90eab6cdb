"""Recipe: train and evaluate Kanerva++ on episodes, with the plain VAE and dense-write baselines.

Every bound is per test image in nats (and bits/dim). The test split is cut
once into fixed episodes of T images (a seeded permutation, each image in one
episode; with ``same_class`` each class's images are cut apart), on one static
binarisation for binarised data; the memory of each
test episode is written from that episode, so the K++ bounds are conditional
bounds on log p(x_t | M) (eq. 4). The plain VAE is ``KanervaPlusPlus(write="none")``:
the same encoder, q(z | X) head and decoder with p(z) = N(0, I), no memory and
no keys, trained on the same episodes; its bound is the ordinary ELBO of each
image (``kl_key`` = 0).

- ``test_conditional_elbo_nats``: L_T of eq. 4 per image, with
  ``num_particles`` draws of (y, z) and analytic KLs;
  ``reconstruction_nats`` − ``kl_z`` − ``kl_key`` = ``test_conditional_elbo_nats``,
  where ``reconstruction_nats`` is E_q log p(x | z).
- ``test_conditional_log_likelihood_nats``: the IWAE-K bound on log p(x_t | M)
  per image, K = ``num_samples`` joint draws of (y_t, z_t) for each image (the
  conditional likelihood factorises over the images of an episode).

Training logs (``metrics.csv``) are per episode, the engine's datapoint.
"""

import math
import sys
import time
from pathlib import Path

import pyro
import torch
from torch.utils.data import Dataset

from pyromem.checks import as_int
from pyromem.data import poisson, salt_and_pepper, speckle
from pyromem.data.episodes import sample_class_episodes, sample_episode
from pyromem.diagnostics import elbo_decomposition
from pyromem.diagnostics.log_likelihood import chunked_log_weights, importance_bound
from pyromem.diagnostics.plots import save_curves, save_image_rows
from pyromem.experiments.configs import KPPConfig
from pyromem.experiments.options import interrupted_run_file
from pyromem.experiments.vae import (
    LIKELIHOOD_FOR_SUPPORT,
    StartLines,
    TenthsProgress,
    config_kept_if_refused,
    data_options,
    engine_options,
    evaluation_device,
    load_splits,
    load_trained,
    resumed_checkpoint,
    stderr_line,
    stored_as_before,
    torch_threads,
    write_results,
)
from pyromem.models import KanervaPlusPlus
from pyromem.nets import typical_image
from pyromem.train import fit, last_checkpoint

EVAL_EPISODES_PER_CHUNK = 32  # episodes (of T images each) per evaluation pass
EVAL_CHUNK = EVAL_EPISODES_PER_CHUNK  # deprecated alias, kept for one release
NOISES = {
    "salt_and_pepper": lambda x, g: salt_and_pepper(x, 0.1, generator=g),
    "speckle": lambda x, g: speckle(x, 0.5, generator=g),
    "poisson": lambda x, g: poisson(x, 4.0, generator=g),
}


class EpisodeDataset(Dataset):
    """``num_episodes`` episodes of ``length`` images, drawn afresh at every access.

    Each item is ``sample_episode(images, length)`` (``sample_class_episodes`` with
    ``same_class``) from torch's global generator (which the engine reseeds every
    epoch), so an epoch sees new episodes and dynamic binarisation applies.
    """

    def __init__(self, images, length, num_episodes, same_class=False):
        self.images, self.length, self.num_episodes = images, length, num_episodes
        self.same_class = same_class
        # the engine's datapoint, as its progress lines name it
        self.datapoint = f"episode of {length} images"

    def __len__(self):
        return self.num_episodes

    def __getitem__(self, index):
        if self.same_class:
            return sample_class_episodes(self.images, 1, self.length)[0]
        return sample_episode(self.images, self.length)


def test_episode_index(num_images, length, seed=0, labels=None):
    """The indices ``(E, T)`` of the fixed test episodes of :func:`test_episodes` into a
    test split of ``num_images`` images (``labels`` ``(num_images,)`` or ``None``).

    :raises ValueError: if ``length`` is not a positive int or is longer than the test split
        (with ``labels``, than its largest class).
    """
    length = as_int(length, "episode_length", 1, form="expected")
    generator = torch.Generator().manual_seed(seed)
    if labels is None:
        groups = [torch.arange(num_images)]
    else:
        groups = [(labels == c).nonzero().squeeze(1) for c in labels.unique()]
    episodes = []
    for group in groups:
        group = group[torch.randperm(len(group), generator=generator)]
        count = len(group) // length
        episodes.append(group[: count * length].reshape(count, length))
    index = torch.cat(episodes)
    if len(index) == 0:
        what = "the test split" if labels is None else "its largest class"
        largest = max(len(group) for group in groups)
        raise ValueError(
            f"episode_length must be at most the {largest} images of {what}, got {length}"
        )
    if labels is not None:
        index = index[torch.randperm(len(index), generator=generator)]
    return index


def test_episodes(test_images, length, seed=0, labels=None):
    """The test images cut into fixed episodes ``(E, T, C, H, W)`` by a seeded permutation.

    Without ``labels`` E = N // T; with ``labels`` ``(N,)`` every episode holds one
    class (each class's images cut apart, leftovers dropped) and the episodes come
    in a seeded random order.
    """
    return test_images[test_episode_index(len(test_images), length, seed, labels)]


def load_kpp_data(data_config, length):
    """The train split (as configured), the fixed test episodes of a data config and, for
    episodes of one class each (``same_class``), their classes ``(E,)`` (else ``None``)."""
    train, test = load_splits(data_config)
    same_class = data_config.get("same_class", False)
    for split in (train, test) if same_class else ():
        # -1 is "unlabelled" (a user's npz without labels): no classes to draw episodes from
        if (split.labels == -1).all():
            raise ValueError(
                f"same_class: the {split.split} split of {split.name} has no labels (all -1), "
                "so no class to draw an episode from; leave out --same-class or give labels"
            )
    labels = test.labels if same_class else None
    index = test_episode_index(len(test.images), length, data_config.get("seed", 0), labels)
    classes = labels[index[:, 0]] if same_class else None
    return train, test.images[index], classes


def nearest_class_mean(images, labels):
    """A classifier of images by the nearest mean image of a class (Euclidean, in pixels).

    :param torch.Tensor images: ``(N, C, H, W)``.
    :param torch.Tensor labels: ``(N,)``; a label of -1 (unlabelled) is left out.
    :returns: ``classify(x)``, mapping images ``batch_shape + (C, H, W)`` on any device to
        the labels ``batch_shape`` of their nearest class means.
    :raises ValueError: if there is not one label per image, or no image is labelled.
    """
    if len(images) != len(labels):
        raise ValueError(
            f"images and labels: expected one label per image, got {len(images)} images and "
            f"{len(labels)} labels"
        )
    classes = labels.unique()
    classes = classes[classes != -1]
    if len(classes) == 0:
        raise ValueError("labels: expected at least one labelled image, got only -1 (unlabelled)")
    # one class in float64 at a time: the whole of a large split would take gigabytes
    means = torch.stack([images[labels == c].flatten(1).double().mean(0) for c in classes])

    def classify(x):
        flat = x.flatten(-3).to("cpu", torch.float64)
        nearest = torch.cdist(flat.reshape(-1, flat.shape[-1]), means).argmin(-1)
        return classes[nearest].reshape(flat.shape[:-1])

    return classify


def read_class_agreement(kpp, episodes, classes, train, num_reads=10, device=None):
    """How often random-key reads of a memory are images of its episode's class, as a
    classifier of the training images (:func:`nearest_class_mean`) tells.

    The memory of each test episode (of one class) is written and ``num_reads`` images are
    read from it through keys y ~ p(y) (:meth:`KanervaPlusPlus.generate`, the decoder's
    means); the plain VAE (``write="none"``), which reads no memory, draws z ~ N(0, I)
    instead, so that its figure is the chance of drawing the class. The classifier's own
    accuracy on the episodes' test images is the ceiling any reader can be scored at.

    :param KanervaPlusPlus kpp: the trained model.
    :param torch.Tensor episodes: ``(E, T, C, H, W)``, each of one class.
    :param torch.Tensor classes: ``(E,)``, the class of each episode.
    :param train: the training split (``images`` ``(N, C, H, W)`` and ``labels`` ``(N,)``).
    :returns: ``{"read_class_agreement": ..., "read_classifier_accuracy": ...,
        "reads_per_memory": num_reads}``, the first two fractions in [0, 1].
    :raises ValueError: if ``num_reads`` is not a positive int, or ``classes`` does not give
        one class per episode.
    """
    num_reads = as_int(num_reads, "num_reads", 1, form="expected")
    if classes.shape != episodes.shape[:1]:
        raise ValueError(
            f"classes: expected one class per episode, shape ({len(episodes)},), got "
            f"{tuple(classes.shape)}"
        )
    device = device or evaluation_device()
    kpp = kpp.to(device).eval()
    classify = nearest_class_mean(train.images, train.labels)
    agree, count = 0, 0
    with torch.no_grad():
        for chunk, chunk_classes in zip(
            episodes.split(EVAL_EPISODES_PER_CHUNK),
            classes.split(EVAL_EPISODES_PER_CHUNK),
            strict=True,
        ):
            chunk = chunk.to(device)
            if kpp.write_kind == "none":
                z = torch.randn(len(chunk), num_reads, kpp.latent_dim, device=device)
                reads = typical_image(kpp.decode(z))
            else:
                reads = kpp.generate(num_reads, kpp.write(chunk))
            agree += (classify(reads) == chunk_classes[:, None]).sum().item()
            count += reads.shape[0] * reads.shape[1]
    accuracy = (classify(episodes) == classes[:, None]).double().mean().item()
    return {
        "read_class_agreement": agree / count,
        "read_classifier_accuracy": accuracy,
        "reads_per_memory": num_reads,
    }


def per_image_log_likelihood(kpp, x, num_samples=100, chunk_size=50):
    """IWAE-K bound on log p(x_t | M) per image, shape ``(B, T)``, and the effective sample size.

    The weights w_k = p(x_t, y_k, z_k | M) / q(y_k, z_k | X) are formed per image,
    since the conditional likelihood factorises over the episode given M.
    """
    log_weight, _ = chunked_log_weights(
        kpp.model, kpp.guide, x, num_samples, chunk_size, keep_dims=True
    )
    bound, ess = importance_bound(log_weight.reshape(num_samples, x.shape[1], x.shape[0]))
    return bound.T, ess.T  # (K, T, B) → (B, T)


def evaluate_kpp_model(kpp, episodes, num_samples=100, num_particles=10, device=None, log=None):
    """Per-image test bounds of a trained K++ (or dense-write ablation) on fixed episodes.

    :param KanervaPlusPlus kpp: the trained model.
    :param torch.Tensor episodes: ``(B, T, C, H, W)``.
    :param int num_samples: K of the per-image IWAE-K bound (0 skips it).
    :param int num_particles: draws of (y, z) of the ELBO estimate.
    :param log: optional callable taking a progress line at each tenth of the episodes, with
        an ETA, once the evaluation has run a few seconds (:class:`TenthsProgress`).
    :returns: a JSON-able dict.
    """
    device = device or evaluation_device()
    kpp = kpp.to(device).eval()
    length = episodes.shape[1]
    num_dims = math.prod(episodes.shape[2:])
    parts, iwae, ess, done = [], [], [], 0
    bounds = f"ELBO and IWAE-{num_samples}" if num_samples else "ELBO"
    progress = TenthsProgress(log, f"kpp: {bounds} on {len(episodes)} test episodes")
    for chunk in episodes.split(EVAL_EPISODES_PER_CHUNK):
        chunk = chunk.to(device)
        parts.append(elbo_decomposition(kpp.model, kpp.guide, chunk, num_particles))
        if num_samples:
            bound, weight_ess = per_image_log_likelihood(kpp, chunk, num_samples)
            iwae.append(bound.flatten())
            ess.append(weight_ess.flatten())
        done += len(chunk)
        progress(done / len(episodes))

    def per_image(values):
        # per-episode sums over the T images, divided by T once
        return torch.cat(values).mean().item() / length

    elbo = per_image([p.elbo for p in parts])
    results = {
        "test_conditional_elbo_nats": elbo,
        "test_conditional_elbo_bits_per_dim": -elbo / (num_dims * math.log(2)),
        "reconstruction_nats": per_image([p.log_likelihood["x"] for p in parts]),
        "kl_z": per_image([p.kl["z"] for p in parts]),
        # the plain VAE (write="none") has no keys
        "kl_key": per_image([p.kl.get("y", torch.zeros_like(p.elbo)) for p in parts]),
        "num_particles": num_particles,
        "num_test_images": episodes.shape[0] * length,
        "num_test_episodes": episodes.shape[0],
    }
    if num_samples:
        bound = torch.cat(iwae).mean().item()
        results.update(
            {
                "test_conditional_log_likelihood_nats": bound,
                "test_conditional_log_likelihood_bits_per_dim": -bound / (num_dims * math.log(2)),
                "num_samples": num_samples,
                "ess": torch.cat(ess).mean().item(),
            }
        )
    results["bounds"] = {
        "test_conditional_elbo_nats": (
            f"conditional ELBO L_T of eq. 4 per image, {num_particles} particles, analytic KLs; "
            "= reconstruction_nats - kl_z - kl_key"
        ),
        "test_conditional_log_likelihood_nats": (
            f"IWAE-{num_samples} on log p(x_t | M) per image, K joint draws of (y_t, z_t)"
            if kpp.write_kind != "none"
            # the plain VAE has neither memory nor keys
            else f"IWAE-{num_samples} on log p(x_t) per image, K draws of z_t"
        ),
    }
    return results


def dkm_accounting_nats(parts, length):
    """The per-image figure of the authors' Dynamic Kanerva Machine loss: NOT a bound.

    The public DKM code (``jramapuram/dynamic_kanerva_machine``, ``models/dkm.py``,
    whose ``loss_function`` reads "Loss function for Kanerva ++") divides each KL of
    an episode's T images by T and then averages it over the episode, and divides the
    reconstruction term once. With r_t = E_q log p(x_t | z_t) and KL_t the KLs of image
    t (here of z and of the keys y), per image that is

        A_T = (1/T) Σ_t r_t − (1/T) Σ_t KL_t / T = L_T / T + (1 − 1/T) · (1/T) Σ_t KL_t,

    where L_T / T is the per-image bound of eq. 4 (:func:`evaluate_kpp_model`). A_T is
    the β-ELBO with β = 1/T: log p(x_t | M) − A_T = KL(q ‖ posterior) − (1 − 1/T) KL_t,
    which is negative as soon as the guide is closer to the posterior than (1 − 1/T) of
    its KL to the prior, so A_T may exceed log p(x_t | M); as T grows it tends to the
    reconstruction term alone.

    :param ELBODecomposition parts: per-episode values (sums over the T images), e.g.
        ``elbo_decomposition(kpp.model, kpp.guide, x)`` for episodes ``x`` ``(B, T, ...)``.
    :param int length: T, the images per episode.
    :returns: ``(B,)``, A_T of each episode, nats per image.
    """
    kl = sum(parts.kl.values())
    return (parts.log_likelihood["x"] - kl / length) / length


def compare_accountings(
    kpp,
    images,
    labels=None,
    lengths=(2, 4, 8, 16),
    num_particles=10,
    num_samples=100,
    seed=0,
    device=None,
    max_episodes=None,
):
    """The same trained K++ scored on test episodes of several lengths T, both ways.

    For each T the test images are cut into fixed episodes (:func:`test_episodes`,
    of one class each when ``labels`` are given), and each row holds the per-image
    bound (``elbo_nats``, ours), the DKM code's accounting
    (``dkm_accounting_nats``, :func:`dkm_accounting_nats`: not a bound), the per-image
    IWAE-K bound on log p(x_t | M), the reconstruction term and the KLs.

    :param KanervaPlusPlus kpp: the trained model.
    :param torch.Tensor images: ``(N, C, H, W)`` test images.
    :param torch.Tensor labels: ``(N,)`` or None.
    :param int max_episodes: score only the first this many episodes of each T (None: all).
    :returns: a list of dicts, one per T.
    """
    device = device or evaluation_device()
    kpp = kpp.to(device).eval()
    rows = []
    for length in lengths:
        episodes = test_episodes(images, length, seed, labels)[:max_episodes]
        ours, dkm, iwae, parts_list = [], [], [], []
        for chunk in episodes.split(EVAL_EPISODES_PER_CHUNK):
            chunk = chunk.to(device)
            parts = elbo_decomposition(kpp.model, kpp.guide, chunk, num_particles)
            parts_list.append(parts)
            ours.append(parts.elbo / length)
            dkm.append(dkm_accounting_nats(parts, length))
            if num_samples:
                iwae.append(per_image_log_likelihood(kpp, chunk, num_samples)[0].mean(1))

        def mean(values):
            return torch.cat(values).mean().item()

        row = {
            "episode_length": length,
            "num_test_episodes": len(episodes),
            "elbo_nats": mean(ours),
            "dkm_accounting_nats": mean(dkm),
            "reconstruction_nats": mean([p.log_likelihood["x"] / length for p in parts_list]),
            "kl_z": mean([p.kl["z"] / length for p in parts_list]),
            "kl_key": mean([p.kl["y"] / length for p in parts_list]),
        }
        if num_samples:
            row["iwae_nats"] = mean(iwae)
        rows.append(row)
    return rows


def save_kpp_figures(kpp, episodes, out_dir, history=None, seed=0, num_memories=4):
    """Reconstructions, random-key and key-perturbed generations, iterative clean-up,
    denoising and the training curve, as PNGs in ``out_dir``.

    Each memory is written from one test episode, and every generation panel starts
    with that episode's images, so that a reader can tell what the memory holds.

    :param KanervaPlusPlus kpp: the trained model.
    :param torch.Tensor episodes: test episodes ``(E, T, C, H, W)``; the first
        ``num_memories`` are written to memories.
    :param list history: the engine's per-epoch rows, whose ELBOs are per episode;
        the curve shows them per image.
    :returns: ``(figures, denoising)``, the paths and the denoising errors.
    """
    out_dir = Path(out_dir)
    device = next(kpp.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    figures, denoising = {}, {}
    length = episodes.shape[1]
    num_generations = 10
    with torch.no_grad():
        x = episodes[:num_memories].to(device)
        memory = kpp.write(x)
        count = len(x)
        figures["reconstructions"] = save_image_rows(
            [x.flatten(0, 1).cpu(), kpp.reconstruct(x).flatten(0, 1).cpu().clamp(0, 1)],
            out_dir / "reconstructions.png",
            titles=[
                f"{count} test episodes of T = {length} images, one after the other",
                "their reconstructions (decoder mean at the mean of q(z|X))",
            ],
            ncols=count * length,
        )
        keys = kpp.sample_keys(memory, num_generations)
        random = kpp.generate(num_generations, memory, keys=keys)
        # Fig. 7: keys near one key, and one draw of z's noise for all of them, so that
        # the panel shows what the key alone changes
        base = keys[:, :1].expand(-1, num_generations, -1, -1)
        noise = 0.1 * torch.randn(base.shape, generator=generator).to(device)
        prior = kpp.readout_prior(memory, (base + noise).transpose(0, 1)).base_dist
        z = prior.loc + prior.scale * torch.randn(prior.loc.shape[1:], generator=generator).to(
            device
        )
        perturbed = typical_image(kpp.decode(z)).transpose(0, 1)
        for name, images, what in (
            ("random_key_generations", random, f"{num_generations} reads with keys y ~ p(y)"),
            (
                "key_perturbed_generations",
                perturbed,
                f"{num_generations} reads with keys y + ε, ε ~ N(0, 0.1²), around one y "
                "and with one draw of z's noise",
            ),
        ):
            figures[name] = save_image_rows(
                [torch.cat([x[b], images[b]]).cpu().clamp(0, 1) for b in range(count)],
                out_dir / f"{name}.png",
                titles=[
                    f"memory {b}: its episode ({length} images), then {what}" for b in range(count)
                ],
                ncols=length + num_generations,
            )
        # Fig. 6 left: a random-key generation cleaned up by iterative reads
        steps = kpp.iterative_read(random[:, :1], memory, steps=9)  # (10, B, 1, ...)
        figures["iterative_read"] = save_image_rows(
            [torch.cat([x[b], steps[:, b, 0]]).cpu().clamp(0, 1) for b in range(count)],
            out_dir / "iterative_read.png",
            titles=[
                f"memory {b}: its episode ({length} images), a random-key generation, "
                "then 9 iterative reads"
                for b in range(count)
            ],
            ncols=length + 10,
        )
        # Fig. 6 right: noisy test images cleaned up by 10 reads of their episode's memory
        rows, titles = [x.flatten(0, 1).cpu()], [f"{count} test episodes of T = {length}"]
        for name, corrupt in NOISES.items():
            noisy = corrupt(x.cpu(), generator).to(device)
            cleaned = kpp.iterative_read(noisy, memory, steps=10)[-1]
            denoising[name] = {
                "mse_noisy": (noisy - x).square().mean().item(),
                "mse_after_10_reads": (cleaned - x).square().mean().item(),
            }
            rows += [noisy.flatten(0, 1).cpu(), cleaned.flatten(0, 1).cpu().clamp(0, 1)]
            titles += [f"{name.replace('_', ' ')} noise", "after 10 iterative reads"]
        figures["denoising"] = save_image_rows(
            rows, out_dir / "denoising.png", titles=titles, ncols=count * length
        )
    if history:
        labels = {"train_elbo_nats": "training episodes", "eval_elbo_nats": "held-out episodes"}
        per_image = [
            {"epoch": row["epoch"]}
            | {labels[k]: v / length for k, v in row.items() if k in labels and v is not None}
            for row in history
        ]
        figures["elbo_curve"] = save_curves(
            per_image,
            [label for key, label in labels.items() if key in history[0]],
            out_dir / "elbo_curve.png",
            ylabel="ELBO, nats per image",
        )
    return {name: str(path) for name, path in figures.items()}, denoising


def default_memory(image_shape):
    """Memory ``(3, H, W)`` for images ``(C, H, W)`` and blocks of half its side."""
    _, h, w = image_shape
    return (3, h, w), (max(h // 2, 1), max(w // 2, 1))


def train_kpp(*, out_dir, **options):
    """Train Kanerva++ on episodes, evaluate, write results and figures: :func:`run` with
    the :class:`~pyromem.experiments.configs.KPPConfig` of ``options``."""
    return run(KPPConfig.build(**options), out_dir)


def run(config, out_dir):
    """Train Kanerva++ on episodes of T images; evaluate; write results and figures.

    :param KPPConfig config: the run's options. ``same_class``: episodes of one class
        each, in training and test (:func:`~pyromem.data.sample_class_episodes`), the
        setting in which a short training already gains from the memory
        (docs/models/kanerva.md); ``baselines``: also train the plain VAE (same
        encoder and decoder) and the dense-write ablation (§4.2), same epochs and
        images per step; ``likelihood=None`` picks Bernoulli for binary, Gaussian for
        [0, 1] and the discretized logistic mixture for 8-bit data.
    :param out_dir: the run's folder (config.toml, checkpoints, metrics.csv,
        results.json, figures); baselines go to ``out_dir/vae`` and ``out_dir/dense``.
        With ``config.resume`` K++ continues from its last checkpoint, and each baseline
        from its own, or from its start where a stop came before its first.
    :returns: the results dict also written to ``out_dir/results.json``.
    """
    with torch_threads(config.num_threads):
        return _run(config, out_dir)


def _run(config, out_dir):
    start = time.perf_counter()
    pyro.set_rng_seed(config.seed)
    episode_length = config.episode_length
    if episode_length < 2:
        raise ValueError(f"episode_length must be at least 2, got {episode_length}")
    config.start_run(out_dir)
    with config_kept_if_refused(config, out_dir):
        return _train_and_evaluate(config, out_dir, start)


def _train_and_evaluate(config, out_dir, start):
    episode_length = config.episode_length
    # what a resumed training must share with its checkpoint, besides the nets: the images,
    # the seed and the episodes (the engine refuses any other)
    data_config = dict(
        data_options(config), same_class=config.same_class, episode_length=episode_length
    )
    train, episodes, classes = load_kpp_data(data_config, episode_length)
    data_config["binarize"] = train.binarize
    likelihood = config.likelihood or LIKELIHOOD_FOR_SUPPORT[train.support]
    default_memory_shape, default_block = default_memory(train.event_shape)
    memory_shape = config.memory_shape or default_memory_shape
    if config.block_shape is None and config.memory_shape is not None:
        default_block = default_memory((train.event_shape[0], *memory_shape[1:]))[1]
    options = {
        "latent_dim": config.latent_dim,
        "memory_shape": memory_shape,
        "block_shape": config.block_shape or default_block,
        "reads": config.reads,
        "likelihood": likelihood,
        "embed_dim": config.embed_dim,
        "encoder": config.encoder,
    }
    if config.key_scale is not None:
        options["key_scale"] = config.key_scale
    if config.encoder_width is not None:
        options["channels"] = (config.encoder_width,)
    device = evaluation_device(config.accelerator)
    num_episodes = max(len(train) // episode_length, 1)
    names = {"block": "K++", "dense": "the dense-write ablation", "none": "the plain VAE"}

    def say(line):
        if config.progress:
            print(f"kpp: {line}", file=sys.stderr, flush=True)

    def run_kpp(write, folder, baseline=False):
        # a baseline continues its training where its checkpoint is: a run stopped before
        # a baseline's first checkpoint trains that baseline from its start
        resume = config.resume and (not baseline or last_checkpoint(folder).is_file())
        saved = resumed_checkpoint(folder, resume)
        if saved is None:
            start_line = f"kpp: training {names[write]}, {config.epochs} epochs"
        else:
            start_line = (
                f"kpp: continuing {names[write]} from epoch {saved.epoch}, "
                f"to {config.epochs} epochs"
            )
        kpp = KanervaPlusPlus(train.event_shape, write=write, **options)
        checkpoint_config = {
            "model": "kpp",
            "kpp": kpp.config,
            "data": data_config,
            "episode_length": episode_length,
        }
        result = fit(
            kpp,
            EpisodeDataset(train, episode_length, num_episodes, config.same_class),
            out_dir=folder,
            eval_data=episodes[:64],
            batch_size=config.batch_size,
            config=stored_as_before(checkpoint_config, saved),
            epochs=config.epochs,
            lr=config.lr,
            # once the engine has checked the run: a refused one says only why
            callbacks=[StartLines(start_line)] if config.progress else [],
            **dict(engine_options(config), resume=resume),
        )
        say(
            f"evaluating {names[write]} on {len(episodes)} test episodes "
            f"(ELBO, IWAE-{config.num_samples})"
        )
        # draws from the run's seed, not from where training left the generators: a
        # finished run resumed (no epoch to train) scores as it did
        pyro.set_rng_seed(config.seed)
        evaluation = evaluate_kpp_model(
            result.model,
            episodes,
            config.num_samples,
            config.num_particles,
            device,
            log=stderr_line if config.progress else None,
        )
        if classes is not None:
            evaluation.update(
                read_class_agreement(result.model, episodes, classes, train, device=device)
            )
        return result, evaluation

    result, evaluation = run_kpp("block", out_dir)
    binarize = data_config["binarize"]
    results = {
        "model": "kpp",
        "dataset": config.dataset,
        "episode_length": episode_length,
        "reads": config.reads,
        "same_class": config.same_class,
        "epochs": result.epochs,
        "steps": result.epochs * math.ceil(num_episodes / config.batch_size),
        "device": result.device,
        "likelihood": likelihood,
        "binarization": {"train": binarize, "test": "static" if binarize else None},
        "split": "test",
        **{k: v for k, v in options.items() if k not in ("reads", "likelihood")},
        **evaluation,
        "checkpoint": str(result.checkpoint),
        "metrics_csv": str(result.metrics_csv),
        "config": config.to_dict(),
    }
    say("figures")
    results["figures"], results["denoising"] = save_kpp_figures(
        result.model, episodes, out_dir, result.history, config.seed
    )
    if config.baselines:
        dense_result, dense = run_kpp("dense", Path(out_dir) / "dense", baseline=True)
        vae_result, vae = run_kpp("none", Path(out_dir) / "vae", baseline=True)
        results["baselines"] = {
            "vae": dict(vae, checkpoint=str(vae_result.checkpoint)),
            "dense_write": dict(dense, checkpoint=str(dense_result.checkpoint)),
        }
    results["seconds"] = time.perf_counter() - start
    write_results(results, out_dir)
    return results


def load_kpp(checkpoint):
    """The trained K++ of a checkpoint of :func:`train_kpp`, and the checkpoint itself
    (whose ``config`` holds the data config and the episode length)."""
    return load_trained(checkpoint, "kpp", KanervaPlusPlus)


def evaluate_kpp(checkpoint, *, out_dir, num_samples=100, num_particles=10, root=None, log=None):
    """Rebuild a K++ from a checkpoint of :func:`train_kpp` and evaluate it on its test episodes.

    The importance-sampled bound is IWAE-K on log p(x_t | M) per image with
    K = ``num_samples`` joint draws of (y_t, z_t).

    :param log: optional callable taking a line before the evaluation and the figures, and
        the evaluation's progress lines (:func:`evaluate_kpp_model`'s).
    :returns: the results dict also written to ``out_dir/results.json``.
    """
    kpp, saved = load_kpp(checkpoint)
    data_config = dict(saved.config["data"], **({"root": root} if root else {}))
    length = saved.config["episode_length"]
    train, episodes, classes = load_kpp_data(data_config, length)
    device = evaluation_device()
    say = log or (lambda line: None)
    say(f"kpp: evaluating on {len(episodes)} test episodes (ELBO, IWAE-{num_samples})")
    results = {
        "model": "kpp",
        # "none": the plain VAE of a run with --baselines, which reads no memory
        "write": kpp.write_kind,
        "dataset": data_config["dataset"],
        "episode_length": length,
        **({"reads": saved.config["kpp"]["reads"]} if kpp.write_kind != "none" else {}),
        "same_class": data_config.get("same_class", False),
        "epochs": saved.epoch,
        "device": str(device),
        "split": "test",
        **evaluate_kpp_model(kpp, episodes, num_samples, num_particles, device, log),
        "checkpoint": str(checkpoint),
    }
    if classes is not None:
        results.update(read_class_agreement(kpp, episodes, classes, train, device=device))
    if kpp.write_kind != "none":
        say("kpp: figures")
        results["figures"], results["denoising"] = save_kpp_figures(
            kpp.to(device), episodes, out_dir, saved.history, data_config.get("seed", 0)
        )
    write_results(results, out_dir)
    return results


#: 16×16 digits: at 8×8 the dynamically binarised digits hold so little beyond their
#: mean that both K++ and the plain VAE of its nets stay at the mean image (KL z ≈ 0.1-0.4
#: nats after 300 steps). One intra-op thread: these small nets run several times faster
#: on one thread of a busy CPU. An epoch is 23 steps of 16 episodes.
DEMO_NETS = {"size": 16, "latent_dim": 8, "embed_dim": 64, "lr": 3e-3, "num_threads": 1}
DEMO_SETTINGS = {
    # quick: ~30 s on 2 CPU cores (K++ alone, ~300 steps); full: ~2 min (K++ and its two
    # baselines, 1,840 steps each). After 920 steps the random-key reads of a memory of 4s
    # were mostly 0s and 6s; after 1,840 they are digits of the memory's class.
    "quick": {"epochs": 13, "num_samples": 10, "eval_particles": 2, "baselines": False},
    "full": {"epochs": 80, "num_samples": 100, "eval_particles": 4, "baselines": True},
}


def bounds_rows(results):
    """The Markdown rows ``| model | ELBO | KL z | KL key |`` of K++ and of its baselines."""
    rows = [
        ("Kanerva++", results["test_conditional_elbo_nats"], results["kl_z"], results["kl_key"])
    ]
    for name, label in (("vae", "plain VAE (same nets)"), ("dense_write", "dense-write ablation")):
        if name in results.get("baselines", {}):
            b = results["baselines"][name]
            rows.append((label, b["test_conditional_elbo_nats"], b["kl_z"], b["kl_key"]))
    return [f"| {n} | {e:.2f} | {kz:.2f} | {ky:.2f} |" for n, e, kz, ky in rows]


def summary(results):
    """The test bounds of a K++ run, per image, as a Markdown table: for the terminal."""
    lines = ["| model | ELBO (nats/image) | KL z | KL key |", "| --- | ---: | ---: | ---: |"]
    lines += bounds_rows(results)
    if "test_conditional_log_likelihood_nats" in results:
        lines += [
            "",
            f"IWAE-{results['num_samples']} on log p(x_t | M): "
            f"{results['test_conditional_log_likelihood_nats']:.2f} nats/image.",
        ]
    return "\n".join(lines)


def _class_agreement_text(results):
    """The demo's sentences on :func:`read_class_agreement`, or "" for a run without it."""
    if "read_class_agreement" not in results:
        return ""
    baselines = results.get("baselines", {})
    others = [
        f"{what}: {100 * baselines[name]['read_class_agreement']:.0f} %"
        for name, what in (
            ("vae", "for the plain VAE's samples, which read no memory"),
            ("dense_write", "for the dense ablation's reads"),
        )
        if "read_class_agreement" in baselines.get(name, {})
    ]
    return (
        f" Over all {results['num_test_episodes']} test memories, the nearest class mean of the "
        f"training digits assigns {100 * results['read_class_agreement']:.0f} % of "
        f"{results['reads_per_memory']} such reads per memory to the memory's class (and "
        f"{100 * results['read_classifier_accuracy']:.0f} % of the test digits themselves to "
        "theirs)." + (f" The same {'; '.join(others)}." if others else "")
    )


def demo_section(out_dir, quick, seed=0, progress=True, resume=False):
    """K++ on ``digits`` episodes of one class for ``pyromem demo``: ``(markdown_text, results)``.

    :param out_dir: the demo's folder; this section writes to ``out_dir/kpp``.
    :param bool quick: the short setting (no baselines).
    :param bool resume: continue the runs interrupted there from their checkpoints.
    """
    out_dir = Path(out_dir)
    results = train_kpp(
        out_dir=out_dir / "kpp",
        resume=resume and interrupted_run_file(out_dir / "kpp") is not None,
        dataset="digits",
        episode_length=4,
        reads=2,
        same_class=True,
        binarize="dynamic",
        seed=seed,
        progress=progress,
        overwrite=True,
        **DEMO_NETS,
        **DEMO_SETTINGS["quick" if quick else "full"],
    )
    rel = {name: Path(path).relative_to(out_dir) for name, path in results["figures"].items()}
    table = bounds_rows(results)
    length = results["episode_length"]
    denoising = results["denoising"]
    text = "\n".join(
        [
            "## Kanerva++ on digits episodes",
            "",
            f"K++ (memory {tuple(results['memory_shape'])}, blocks {tuple(results['block_shape'])},"
            f" K = {results['reads']} reads, z of width {results['latent_dim']}) trained "
            f"{results['epochs']} epochs ({results['steps']} steps of 16 episodes) on episodes of "
            f"T = {length} `digits` images of one class (16×16, dynamic binarisation), "
            f"evaluated on {results['num_test_episodes']} fixed test episodes"
            " (static binarisation). Bounds per test image, given the memory of its episode."
            f" Trained and evaluated in {results['seconds']:.0f} s.",
            "",
            "| model | ELBO (nats/image) | KL z | KL key |",
            "| --- | ---: | ---: | ---: |",
            *table,
            "",
            f"IWAE-{results['num_samples']} on log p(x_t | M): "
            f"{results['test_conditional_log_likelihood_nats']:.2f} nats/image.",
            "",
            "Look at whether the training and held-out ELBO still rise at the last epoch.",
            "",
            f"![ELBO per epoch]({rel['elbo_curve']})",
            "",
            "Look at whether each reconstruction keeps its digit's shape and slant.",
            "",
            f"![reconstructions]({rel['reconstructions']})",
            "",
            f"Each row starts with the {length} images written to a memory: look at whether the "
            "reads that follow, through random keys, are digits of that episode's class."
            + _class_agreement_text(results),
            "",
            f"![random-key generations]({rel['random_key_generations']})",
            "",
            "Look at how little nearby keys change a read (the paper's Fig. 7).",
            "",
            f"![key-perturbed generations]({rel['key_perturbed_generations']})",
            "",
            "Look at whether repeated reads with the memory fixed (eq. 7) sharpen toward the "
            "episode's class, as in the paper's Fig. 6, or wander: a read passes the previous "
            "image on only through its keys, which here carry "
            f"{results['kl_key']:.2f} nats (KL key), so each read is close to a fresh draw "
            "from the memory's prior.",
            "",
            f"![iterative read]({rel['iterative_read']})",
            "",
            "Look at whether 10 reads turn noisy images into digits of their episode's class "
            "(through the keys alone, as above, so they need not return the same digit). Mean "
            "squared error of the decoder's means to the clean binary images, noisy → after the "
            "reads: "
            + ", ".join(
                f"{name.replace('_', ' ')} {v['mse_noisy']:.3f} → {v['mse_after_10_reads']:.3f}"
                for name, v in denoising.items()
            )
            + ".",
            "",
            f"![denoising]({rel['denoising']})",
            "",
        ]
    )
    return text, results
