"""The config of every recipe, each option declared once (:mod:`pyromem.experiments.options`).

The CLI's subcommands and their ``--help`` are generated from these classes;
the recipes (:mod:`pyromem.experiments.vae`, ``vma``, ``kanerva``, ``retrieval``,
``guide_comparison``, ``estimator_comparison``) take them. Presets are the papers'
set-ups (docs/presets.md).
"""

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from pyromem.experiments.options import MAX_SEED, Choices, Options, option

# The choice lists of the options, each from its home, imported when first used.
DATASET_NAMES = Choices("pyromem.data:DATASETS")
#: ``"none"`` keeps the grey levels.
BINARIZATIONS = Choices(
    "pyromem.data:BINARIZATIONS", lambda names: ("none",) + tuple(b for b in names if b)
)
LIKELIHOODS = Choices(
    "pyromem.nets.likelihoods:LIKELIHOODS", lambda heads: (h for h in heads if h != "dlm")
)
PRIORS = Choices("pyromem.memory.addressing:PRIORS")
SIMILARITIES = Choices("pyromem.memory.addressing:SIMILARITIES")
ENCODERS = Choices("pyromem.models.kanerva:ENCODERS")
NETS = Choices("pyromem.models.vae:NETS")
AUGMENTATIONS = Choices("pyromem.data.views:AUGMENTATIONS")
VMA_NETS = Choices("pyromem.models.vma:NETS")
#: VMA's addresses, and §4.2's soft-attention baseline, which has none.
ADDRESSES = Choices("pyromem.models.vma:ADDRESSING", lambda names: tuple(names) + ("soft",))
METHODS = Choices("pyromem.retrieval.methods:METHODS")
SCHEDULES = Choices("pyromem.train.schedules:SCHEDULES")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
MODES = ("recall", "learned", "fewshot")
#: The options of VMA that some modes read, and those modes; the others ignore them.
MODE_OPTIONS = {
    "memory_size": ("recall", "learned"),
    "steps": ("recall", "fewshot"),
    "steps_per_epoch": ("recall", "fewshot"),
    "epochs": ("learned",),
    "batch_size": ("recall", "learned"),
    "num_test": ("learned",),
    "test_classes": ("fewshot",),
    "classes": ("fewshot",),
    "shots": ("fewshot",),
    "queries": ("fewshot",),
    "memory_classes": ("fewshot",),
}
GUIDE_MODELS = ("vae", "memory-vae")
#: ``pyromem.diagnostics.psis.MIN_DRAWS``, the fewest draws k̂ is fitted on, which this module
#: cannot import (the CLI answers a bad flag before torch loads); tests/test_psis.py keeps
#: the two equal.
PSIS_MIN_DRAWS = 30


def check_checkpoint_file(path) -> None:
    """Refuse a ``checkpoint`` option that names no file, in the option's name, before any
    work (the loader's own message names its ``path`` argument).

    :param path: the option's value; ``None`` passes.
    """
    if path is not None and not Path(path).is_file():
        raise ValueError(f"checkpoint: no checkpoint file at {path}")


def _case_guess(name, known) -> str:
    """``"did you mean X? "`` for the known name closest to ``name``, whatever their case
    (names such as ``GMM`` are case-sensitive), or ``""``."""
    by_lower = {k.lower(): k for k in known}
    close = difflib.get_close_matches(name.lower(), by_lower, n=1)
    return f"did you mean {by_lower[close[0]]!r}? " if close else ""


def refuse_repeats(name, values) -> None:
    """Refuse a value given twice to a tuple option (results are keyed by the value, so the
    second would overwrite the first).

    :param str name: the option's name.
    :param values: its value (``None`` passes).
    """
    seen = set()
    for value in values or ():
        if value in seen:
            raise ValueError(f"{name}: {value!r} is given twice; give each once")
        seen.add(value)


@dataclass
class ProgressOption(Options):
    """Whether a command shows its progress."""

    progress: bool = option(True, "show progress on stderr", flag="--no-progress")


@dataclass
class RunOptions(ProgressOption):
    """Options of every run."""

    # numpy's seeds are 32-bit
    seed: int = option(0, "seed of the whole run", minimum=0, maximum=MAX_SEED)
    overwrite: bool = option(False, "replace a finished run in --out", stored=False)


@dataclass
class ImageSource(Options):
    """Where the images of a ``dataset`` come from, and their size."""

    root: str | None = option(None, "folder of a torchvision dataset, or the user's folder/.npz")
    download: bool = option(False, "let torchvision fetch the dataset into --root")
    size: int | None = option(None, "resize images to SIZE×SIZE (default: as stored)", minimum=1)


@dataclass
class DataOptions(ImageSource):
    """Which images: an embedded dataset, a torchvision one under ``root``, or the user's own."""

    dataset: str = option(
        "digits",
        "embedded (digits, patches, shapes, glyphs), torchvision (mnist, fashion_mnist, omniglot,"
        " cifar10; from --root) or the user's own (imagefolder: a folder, npz: a file; --root)",
        choices=DATASET_NAMES,
    )
    binarize: str | None = option(
        None,
        "binarisation of grey-scale images (default: dynamic; colour images are not binarised)",
        choices=BINARIZATIONS,
    )


@dataclass
class ResumeOption(Options):
    """Whether a run continues the one in its folder."""

    resume: bool = option(False, "continue the run in --out from its last checkpoint", stored=False)


@dataclass
class EngineOptions(ResumeOption):
    """Options of the training engine, :func:`pyromem.train.fit`."""

    accelerator: str = option("auto", "Lightning accelerator", choices=ACCELERATORS)
    devices: int = option(1, "devices (GPUs, or CPU processes with --accelerator cpu)", minimum=1)
    strategy: str = option("auto", "Lightning strategy: auto, or ddp for several devices")
    gradient_clip_val: float | None = option(
        None, "clip the gradient norm to this value", flag="--gradient-clip", above=0
    )
    lr_schedule: str = option("constant", "learning-rate schedule", choices=SCHEDULES)
    warmup_epochs: float = option(0.0, "epochs of learning-rate warm-up", minimum=0)
    weight_decay: float = option(0.0, "Adam's weight decay", minimum=0)
    eval_every: int = option(1, "score the held-out data every N epochs (and the last)", minimum=1)
    eval_particles: int = option(10, "guide draws of the per-epoch held-out ELBO", minimum=1)

    def trained_epochs(self) -> int | None:
        """The epochs the engine will train (``None``: a config without them)."""
        return getattr(self, "epochs", None)

    def check(self):
        # the engine would find out once the data are loaded and the model built
        epochs = self.trained_epochs()
        if epochs is not None and self.warmup_epochs > epochs:
            raise ValueError(
                f"warmup_epochs: expected at most epochs={epochs}, got {self.warmup_epochs:g}"
            )


@dataclass
class VAEConfig(RunOptions, EngineOptions, DataOptions):
    """``pyromem train vae``: the VAE with a standard-normal prior."""

    recipe: ClassVar[str] = "vae"
    presets: ClassVar[dict] = {
        # Pyro's examples/vae/vae.py: MLP 784-400-50, Adam 1e-3, batches of 128 (MNIST)
        "paper": {"dataset": "mnist", "hidden": (400,), "latent_dim": 50, "epochs": 101},
    }

    epochs: int = option(20, "training epochs", minimum=1)
    latent_dim: int = option(16, "width of z", minimum=1)
    likelihood: str | None = option(
        None, "likelihood head (default: from the data's support)", choices=LIKELIHOODS
    )
    net: str = option("mlp", "encoder and decoder", choices=NETS)
    hidden: tuple[int, ...] = option((400,), "hidden widths of the MLPs", minimum=1)
    batch_size: int = option(128, "images per step", minimum=1)
    lr: float = option(1e-3, "Adam learning rate", above=0)
    jit: bool = option(False, "train with Pyro's JitTrace_ELBO, compiled once per batch shape")
    num_samples: int = option(1000, "K of the IWAE-K test bound", minimum=1)
    num_particles: int = option(10, "draws of the test ELBO", minimum=1)

    def ignored(self):
        return {"hidden": "by net 'conv', whose widths are fixed"} if self.net == "conv" else {}


@dataclass
class VMAConfig(RunOptions, EngineOptions, ImageSource):
    """``pyromem train vma``: variational memory addressing (Bornschein et al. 2017)."""

    recipe: ClassVar[str] = "vma"
    presets: ClassVar[dict] = {
        # §4.2: conv nets with skips from m, z 64, matching space 128, 8 classes x 4 shots;
        # §4: VIMCO with K = 4, Adam at 1e-4 or 3e-4
        "paper": {
            "mode": "fewshot",
            "address": "vimco",
            "dataset": "omniglot",
            "size": 28,
            "net": "conv",
            "channels": 64,
            "latent_dim": 64,
            "embedding_dim": 128,
            "num_particles": 4,
            "classes": 8,
            "shots": 4,
            "queries": 4,
            "lr": 3e-4,
            "steps": 100000,
            "steps_per_epoch": 1000,
        },
        # §4.1: MLP 256-128, z 32, train-to-recall on MNIST, VIMCO K = 4, batches of 32
        "paper-mnist": {
            "mode": "recall",
            "address": "vimco",
            "num_particles": 4,
            "batch_size": 32,
            "lr": 3e-4,
            "dataset": "mnist",
            "net": "mlp",
            "hidden": (256, 128),
            "latent_dim": 32,
            "steps": 100000,
            "steps_per_epoch": 1000,
        },
    }

    mode: str = option("recall", "train-to-recall, learned memory or few-shot", choices=MODES)
    address: str = option(
        "enum",
        "the address's estimator: enumerated, VIMCO, reweighted wake-sleep, NVIL, Gumbel-softmax;"
        " or soft: the soft-attention baseline (§4.2)",
        choices=ADDRESSES,
    )
    dataset: str | None = option(
        None,
        "images (default: digits for recall and learned, glyphs for fewshot); names as for vae",
        choices=DATASET_NAMES,
    )
    size: int | None = option(None, "image side (default: 8 for digits, 16 for glyphs)", minimum=1)
    binarize: str | None = option(
        None,
        "binarisation of grey-scale images (default: static; colour images are not binarised)",
        choices=BINARIZATIONS,
    )
    test_classes: tuple[int, ...] | None = option(
        None,
        "fewshot: labels held out for testing, the rest train (omniglot, glyphs: by split)",
        minimum=0,
    )
    memory_size: int = option(64, "|M| of recall and learned", minimum=1)
    # recall at |M| = 64 ends 0.22 nats above log|M| after 2500 steps at 3e-3, within 3 minutes on
    # 2 cores; 2000 steps end 0.32 above (docs/models/vma.md)
    steps: int = option(2500, "gradient steps of recall and fewshot", minimum=1)
    steps_per_epoch: int = option(
        100, "recall and fewshot: episodes per epoch (log, checkpoint)", minimum=1
    )
    epochs: int = option(20, "epochs of learned", minimum=1)
    batch_size: int = option(32, "targets per step (recall, learned)", minimum=1)
    num_particles: int = option(
        4, "K of VIMCO and RWS; the draws of a of the test KL of z (any address)", minimum=1
    )
    temperature: float = option(1.0, "gumbel: the first τ of the relaxation", above=0)
    final_temperature: float = option(
        0.5, "gumbel: the last τ, reached geometrically over the training steps", above=0
    )
    net: str = option(
        "mlp", "the nets: MLPs, or §4.2's conv nets with skips from m", choices=VMA_NETS
    )
    channels: int = option(64, "feature maps of the conv nets", minimum=1)
    latent_dim: int = option(16, "width of z", minimum=1)
    embedding_dim: int = option(64, "width of the matching space of S(m_a, x)", minimum=1)
    hidden: tuple[int, ...] = option((256, 128), "hidden widths of the MLPs", minimum=1)
    similarity: str = option("normalized", "S of eq. 5, or dot or cosine", choices=SIMILARITIES)
    prior: str = option("learned", "p(a): a learned query point, or flat", choices=PRIORS)
    classes: int = option(8, "fewshot: C classes per training episode", minimum=1)
    shots: int = option(4, "fewshot: S shots per class", minimum=1)
    queries: int = option(4, "fewshot: targets per class", minimum=1)
    memory_classes: tuple[int, ...] = option(
        (1, 2, 4, 8, 16), "fewshot: classes in memory of the test sweep (Fig. 5A)", minimum=1
    )
    lr: float | None = option(
        None, "Adam learning rate (default: 3e-3 for recall, 1e-3 otherwise)", above=0
    )
    lr_schedule: str | None = option(
        None, "default: cosine for recall and fewshot, constant for learned", choices=SCHEDULES
    )
    num_samples: int = option(1000, "K of the test NLL", minimum=1)
    num_test: int = option(256, "test images of learned", minimum=1)
    num_threads: int | None = option(None, "torch's CPU threads while this runs", minimum=1)

    def trained_epochs(self):
        if self.mode == "learned":
            return self.epochs
        return self.steps // min(self.steps_per_epoch, self.steps)

    def ignored(self):
        return vma_ignored(self.mode, self.address, self.net)

    def check(self):
        if self.mode != "learned":
            if self.steps_per_epoch > self.steps:
                # fewer steps than an epoch's train as one epoch of them all: the default
                # (the class attribute) is cut so, a value given is refused as any ignored one
                if self.steps_per_epoch != VMAConfig.steps_per_epoch:
                    raise ValueError(
                        f"steps_per_epoch: expected at most steps ({self.steps}), "
                        f"got {self.steps_per_epoch}"
                    )
            elif self.steps % self.steps_per_epoch:
                raise ValueError(
                    f"steps: expected a multiple of steps_per_epoch ({self.steps_per_epoch}), "
                    f"got {self.steps}"
                )
        super().check()
        # the sweep would score a memory size twice, the held-out classes are a set
        refuse_repeats("memory_classes", self.memory_classes)
        refuse_repeats("test_classes", self.test_classes)
        if self.address in ("vimco", "rws") and self.num_particles < 2:
            raise ValueError(
                f"num_particles: address {self.address!r} needs K >= 2 particles, "
                f"got {self.num_particles}"
            )


def vma_ignored(mode, address, net) -> dict:
    """The options of :class:`VMAConfig` that a VMA run in ``mode`` with ``address`` and ``net``
    ignores, as :meth:`~pyromem.experiments.options.Options.ignored` gives them."""
    ignored = {
        name: f"unless mode is {' or '.join(map(repr, modes))}, got mode {mode!r}"
        for name, modes in MODE_OPTIONS.items()
        if mode not in modes
    }
    if address != "gumbel":
        ignored.update(
            dict.fromkeys(("temperature", "final_temperature"), "unless address is 'gumbel'")
        )
    if address == "soft":
        ignored["prior"] = "by address 'soft', whose p(z) is N(0, I)"
    if net != "conv":
        ignored["channels"] = "unless net is 'conv'"
    return ignored


@dataclass
class KPPConfig(RunOptions, EngineOptions, DataOptions):
    """``pyromem train kpp``: Kanerva++ (Ramapuram et al. 2021)."""

    recipe: ClassVar[str] = "kpp"
    presets: ClassVar[dict] = {
        # App. E: TSM-ResNet-18, memory 3x64x64, K = 2, one-cycle cosine with a 10-epoch
        # warm-up, weight decay 1e-3 (LARS left out), 500 epochs
        "paper": {
            "dataset": "mnist",
            "size": 32,
            "encoder": "resnet18-tsm",
            "memory_shape": (3, 64, 64),
            "reads": 2,
            "episode_length": 32,
            "latent_dim": 64,
            "lr_schedule": "one-cycle",
            "warmup_epochs": 10.0,
            "weight_decay": 1e-3,
            "epochs": 500,
        },
    }

    episode_length: int = option(8, "T images per episode", minimum=2)
    reads: int = option(2, "K block reads per image", minimum=1)
    same_class: bool = option(False, "episodes of images of one class each")
    key_scale: float | None = option(
        None, "the key that moves a block read by tanh(1) of its range (default: 3)", above=0
    )
    baselines: bool = option(False, "also the plain VAE and the dense write")
    encoder: str = option("conv", "f_enc: a conv stack or ResNet-18-TSM (§3.3)", choices=ENCODERS)
    encoder_width: int | None = option(
        None, "width of resnet18-tsm's first stage (default: 64)", minimum=1
    )
    memory_shape: tuple[int, ...] | None = option(
        None, "memory C H W (default: 3 × the image's H W)", minimum=1
    )
    block_shape: tuple[int, ...] | None = option(
        None, "block H W read by each key (default: half the memory's side)", minimum=1
    )
    epochs: int = option(20, "training epochs", minimum=1)
    latent_dim: int = option(16, "width of z", minimum=1)
    embed_dim: int = option(256, "width of the encoder's embedding", minimum=1)
    likelihood: str | None = option(
        None, "likelihood head (default: from the data's support)", choices=LIKELIHOODS
    )
    batch_size: int = option(16, "episodes per step", minimum=1)
    lr: float = option(1e-3, "Adam learning rate", above=0)
    num_samples: int = option(100, "K of the IWAE-K test bound", minimum=1)
    num_particles: int = option(10, "draws of the test ELBO", minimum=1)
    num_threads: int | None = option(None, "torch's CPU threads while this runs", minimum=1)

    def ignored(self):
        if self.encoder == "resnet18-tsm":
            return {}
        return {"encoder_width": "unless encoder is 'resnet18-tsm'"}

    def check(self):
        super().check()
        for name, dims in (("memory_shape", "C H W"), ("block_shape", "H W")):
            shape = getattr(self, name)
            if shape is not None and len(shape) != len(dims.split()):
                raise ValueError(f"{name}: expected {dims}, got {' '.join(map(str, shape))}")


@dataclass
class RetrievalConfig(RunOptions, ResumeOption, ImageSource):
    """``pyromem retrieval``: the associative-retrieval benchmark (Annabi et al. 2022)."""

    recipe: ClassVar[str] = "retrieval"
    presets: ClassVar[dict] = {
        # §5.1 on CIFAR10: a conv VAE with d = 16 (MONet, for CLEVR, left out)
        "paper": {"dataset": "cifar10", "vae_net": "conv", "vae_latent_dim": 16},
        # the authors' public code on CIFAR10 (options.py and the notebook): d = 64, and a
        # KL weight of 0.1 on the batch's mean KL against the batch's summed squared error;
        # with their batches of 20 that is 0.1 / 20 per image, a Gaussian likelihood of
        # variance 0.1 / 20 / 2 (scale 0.05)
        "authors-code": {
            "dataset": "cifar10",
            "vae_net": "conv",
            "vae_latent_dim": 64,
            "vae_scale": 0.05,
            "vae_epochs": 20,
        },
    }

    dataset: str = option(
        "patches",
        "images: names as for train vae (--root for torchvision and own data)",
        choices=DATASET_NAMES,
    )
    methods: tuple[str, ...] | None = option(
        None,
        "the readers compared, e.g. GMM VAE-GMM NTM (default: the tables', or with --capacity "
        "the sweep's)",
    )
    corruptions: tuple[str, ...] | None = option(
        None,
        "clean noise-0.6 mask-16 ... (default: those of Tables 2-4 for the image size; with "
        "--capacity, the one corruption of the sweep: noise-0.6)",
    )
    # a memory of one pattern has no nearest neighbour to set the success threshold by
    memory_size: int = option(100, "N stored patterns", minimum=2)
    seeds: int = option(10, "memories per table cell", minimum=1)
    selection_seeds: int = option(2, "train memories per candidate and corruption", minimum=1)
    checkpoint: str | None = option(None, "a VAE checkpoint to load instead of training one")
    vae_epochs: int = option(60, "epochs of the VAE of the VAE-* methods", minimum=1)
    vae_net: str = option("mlp", "the VAE's nets", choices=NETS)
    vae_latent_dim: int = option(16, "the VAE's d (§5.1: 16)", minimum=1)
    vae_scale: float = option(
        0.1, "the fixed scale of the VAE's Gaussian likelihood (eq. 10's squared error)", above=0
    )
    vae_augment: str = option(
        "none",
        "the VAE's training images: as they are, or with their 8 dihedral views (8x an epoch)",
        choices=AUGMENTATIONS,
    )
    capacity: bool = option(False, "run the capacity sweep of App. E.4 instead of the table")
    capacity_sizes: tuple[int, ...] | None = option(
        None,
        "N of the sweep (default: App. E.4's, 5 to 10000, those both splits hold)",
        minimum=2,
    )
    num_threads: int | None = option(
        1,
        "torch's CPU threads while this runs (1: the table's small ops run fastest on one)",
        minimum=1,
    )

    def check(self):
        check_checkpoint_file(self.checkpoint)
        unknown = [name for name in self.methods or () if name not in METHODS]
        if unknown:
            raise ValueError(
                f"methods: unknown method {unknown[0]!r}; {_case_guess(unknown[0], METHODS)}"
                f"known: {', '.join(METHODS)}"
            )
        refuse_repeats("methods", self.methods)
        refuse_repeats("corruptions", self.corruptions)
        refuse_repeats("capacity_sizes", self.capacity_sizes)
        # imported here, not above: the command line parses its flags before torch loads
        from pyromem.retrieval.corruptions import parse_corruption

        for name in self.corruptions or ():
            try:
                parse_corruption(name)
            except ValueError as error:
                raise ValueError(f"corruptions: {error}") from None
        if self.capacity and len(self.corruptions or ()) > 1:
            raise ValueError(
                f"corruptions: the capacity sweep queries with one corruption, got "
                f"{len(self.corruptions)}"
            )

    def ignored(self):
        from pyromem.retrieval.methods import LATENT_METHODS

        ignored = {}
        if self.capacity:
            ignored["memory_size"] = "by the capacity sweep, whose N are capacity_sizes"
        else:
            ignored["capacity_sizes"] = "unless capacity is set"
        vae_options = ("vae_epochs", "vae_net", "vae_latent_dim", "vae_scale", "vae_augment")
        if self.methods is not None and not set(self.methods) & set(LATENT_METHODS):
            why = "unless methods names a VAE-* method"
            ignored.update(dict.fromkeys(("checkpoint", *vae_options), why))
        elif self.checkpoint is not None:
            ignored.update(dict.fromkeys(vae_options, "with checkpoint, whose VAE is loaded"))
        return ignored


@dataclass
class CompareGuidesConfig(RunOptions, ResumeOption, ImageSource):
    """``pyromem compare-guides``: amortised, iterative and hybrid guides of one model."""

    recipe: ClassVar[str] = "compare-guides"

    model: str = option("vae", "the model", choices=GUIDE_MODELS)
    dataset: str = option("digits", "images: names as for train vae", choices=DATASET_NAMES)
    epochs: int = option(30, "epochs of the model", minimum=1)
    latent_dim: int = option(8, "width of z", minimum=1)
    hidden: tuple[int, ...] = option((128,), "hidden widths of the MLPs", minimum=1)
    memory_size: int = option(50, "N patterns of memory-vae", minimum=1)
    num_test: int = option(100, "test images compared", minimum=1)
    num_samples: int = option(500, "K of IWAE-K and PSIS", minimum=PSIS_MIN_DRAWS)
    num_particles: int = option(10, "draws of each ELBO", minimum=1)
    steps: int = option(20, "T of the refinements", minimum=0)
    lr: float = option(0.05, "rate of the refinements", above=0)
    iterative_steps: int = option(200, "training steps of the iterative guide's update", minimum=1)

    def ignored(self):
        return {} if self.model == "memory-vae" else {"memory_size": "unless model is 'memory-vae'"}


@dataclass
class CompareEstimatorsConfig(RunOptions, ResumeOption, ImageSource):
    """``pyromem compare-estimators``: VMA's address estimators by gradient bias, variance, cost."""

    recipe: ClassVar[str] = "compare-estimators"

    dataset: str = option("glyphs", "images of the few-shot episodes", choices=DATASET_NAMES)
    size: int | None = option(
        None, "image side (default: 16 for glyphs, stored at 28; others as stored)", minimum=1
    )
    test_classes: tuple[int, ...] | None = option(
        None,
        "labels held out for the test episodes, the rest train (omniglot, glyphs: by split)",
        minimum=0,
    )
    estimators: tuple[str, ...] | None = option(
        None,
        "the estimators compared, e.g. enum vimco rws (default: all; soft: step, NLL)",
    )
    classes: int = option(4, "C classes per episode", minimum=1)
    shots: int = option(2, "S shots per class: |M| = C·S", minimum=1)
    queries: int = option(4, "targets per class", minimum=1)
    train_steps: int = option(300, "few-shot steps (enum) to the point measured", minimum=1)
    num_particles: int = option(4, "K of VIMCO and RWS", minimum=2)
    gradient_draws: int = option(50, "gradients per estimator for its variance", minimum=2)
    mean_draws: int = option(500, "replicates for each estimator's mean gradient", minimum=2)
    reference_draws: int = option(500, "replicates for the exact-address reference", minimum=2)
    posterior_samples: int = option(256, "draws of z per slot of RWS's p(a|x)", minimum=1)
    temperature: float = option(0.5, "τ of the Gumbel-softmax estimator", above=0)
    baseline_steps: int = option(200, "steps fitting NVIL's baseline first", minimum=0)
    max_tuples: int = option(65536, "largest |M|^K enumerated for VIMCO's reference", minimum=1)
    step_repeats: int = option(5, "timed training steps per estimator", minimum=2)
    nll_steps: int = option(0, "train each estimator this long for a test NLL (0: no)", minimum=0)
    num_samples: int = option(200, "K of the IWAE-K test NLL", minimum=1)
    latent_dim: int = option(8, "width of z", minimum=1)
    embedding_dim: int = option(32, "width of the matching space", minimum=1)
    hidden: tuple[int, ...] = option((64,), "hidden widths of the MLPs", minimum=1)
    lr: float = option(3e-3, "Adam learning rate of every training", above=0)
    num_threads: int | None = option(None, "torch's CPU threads while this runs", minimum=1)

    def check(self):
        unknown = [name for name in self.estimators or () if name not in ADDRESSES]
        if unknown:
            raise ValueError(
                f"estimators: unknown estimator {unknown[0]!r}; known: {', '.join(ADDRESSES)}"
            )
        refuse_repeats("estimators", self.estimators)
        refuse_repeats("test_classes", self.test_classes)

    def ignored(self):
        if self.estimators is None:  # all of them
            return {}
        return {
            name: f"unless estimators names {estimator!r}"
            for name, estimator in (
                ("temperature", "gumbel"),
                ("baseline_steps", "nvil"),
                ("posterior_samples", "rws"),
                ("max_tuples", "vimco"),
            )
            if estimator not in self.estimators
        }


@dataclass
class EvalConfig(ProgressOption):
    """``pyromem eval``: evaluate a checkpoint again."""

    recipe: ClassVar[str] = "eval"

    checkpoint: str = option("", "the run's checkpoints/last.ckpt", required=True)
    num_samples: int | None = option(
        None, "K of the IWAE-K bound (default: 1000; kpp: 100)", minimum=1
    )
    num_particles: int | None = option(
        None, "draws of the test ELBO (default: 10; vma: the training run's K)", minimum=1
    )
    root: str | None = option(None, "data folder, if it moved since training")
    seed: int = option(
        0,
        "seed of the evaluation's draws: the same command, the same numbers",
        minimum=0,
        maximum=MAX_SEED,
    )

    def check(self):
        check_checkpoint_file(self.checkpoint or None)
