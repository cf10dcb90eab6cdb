"""``fit``: train a Pyro model and guide with Lightning on one CPU, one GPU or many devices."""

import json
import logging
import numbers
import os
import signal
import sys
import threading
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import lightning
import pyro.infer
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback, ProgressBar
from torch.utils.data import DataLoader, Dataset

from pyromem.checks import as_int
from pyromem.data import ImageDataset
from pyromem.train.batches import yields_labels
from pyromem.train.checkpoint import (
    AtomicCheckpointIO,
    LastCheckpoint,
    check_resumable,
    last_checkpoint,
    remove_stale_temporaries,
)
from pyromem.train.data_checks import check_training_data
from pyromem.train.divergence import DivergenceGuard
from pyromem.train.metrics import EpochMetrics
from pyromem.train.module import SVIModule
from pyromem.train.progress import EpochLines
from pyromem.train.schedules import SCHEDULES
from pyromem.train.seeding import DatasetEpoch, EpochShuffleBatches, EpochShuffleSampler


@dataclass
class FitResult:
    """What :func:`fit` returns.

    :ivar model: the trained model, on the device it was passed on.
    :ivar history: a list of one dict of metrics per completed epoch (the rows of
        ``metrics_csv``).
    :ivar checkpoint: the path of ``last.ckpt``, a ``Path``.
    :ivar metrics_csv: the path of ``metrics.csv``, a ``Path``.
    :ivar epochs: the number of epochs completed, an int.
    :ivar device: the device trained on, a str, e.g. ``"cpu"`` or ``"cuda:0"``.
    """

    model: torch.nn.Module
    history: list[dict]
    checkpoint: Path
    metrics_csv: Path
    epochs: int
    device: str


class TrainingInterrupted(KeyboardInterrupt):
    """Training was interrupted (Ctrl-C, or SIGTERM from a scheduler or ``kill``); the last
    checkpoint is the last completed epoch's.

    A ``KeyboardInterrupt``, as the interrupt that caused it, in place of the ``SystemExit(1)``
    that Lightning raises for one.

    :ivar epoch: the epoch interrupted, counted from 1, an int.
    :ivar epochs: the epochs asked for, an int.
    :ivar completed: the epochs completed, those the checkpoint holds, an int.
    :ivar checkpoint: the path of ``last.ckpt``, or ``None`` when no epoch was completed.
    :ivar signal_number: the signal that stopped it, ``signal.SIGINT`` or ``signal.SIGTERM``.
    """

    def __init__(
        self,
        epoch: int,
        epochs: int,
        completed: int,
        checkpoint: Path | None,
        signal_number: int = signal.SIGINT,
    ):
        self.epoch, self.epochs = epoch, epochs
        self.completed, self.checkpoint = completed, checkpoint
        self.signal_number = signal_number
        kept = (
            f"{checkpoint} holds the {completed} epochs completed; resume=True continues the run"
            if checkpoint is not None
            else "no epoch was completed, so no checkpoint was written"
        )
        super().__init__(f"training interrupted in epoch {epoch} of {epochs}; {kept}")


class _TensorDataset(Dataset):
    # torch's TensorDataset yields 1-tuples; models take the tensor itself.
    def __init__(self, data: torch.Tensor):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index):
        if isinstance(index, list):  # a batch of indices, from a BatchSampler
            index = torch.as_tensor(index)
        return self.data[index]


def fit(
    model: torch.nn.Module,
    train_data: torch.Tensor | Dataset | list,
    *,
    out_dir: str | os.PathLike,
    eval_data: torch.Tensor | None = None,
    eval_every: int = 1,
    eval_particles: int = 10,
    epochs: int = 10,
    batch_size: int | None = 128,
    lr: float = 1e-3,
    lr_schedule: str = "constant",
    warmup_epochs: float = 0.0,
    weight_decay: float = 0.0,
    elbo: pyro.infer.ELBO | None = None,
    resume: bool = False,
    seed: int = 0,
    accelerator: str = "auto",
    devices: int | Sequence[int] | str = 1,
    strategy: str = "auto",
    gradient_clip_val: float | None = None,
    progress: bool = True,
    config: dict | None = None,
    callbacks: Sequence[Callback] = (),
    drop_labels: bool | None = None,
) -> FitResult:
    """Train ``model.model`` / ``model.guide`` by SVI with a Lightning ``Trainer``.

    One CPU, one GPU and ``devices=N, strategy="ddp"`` run the same code. On several
    devices, only global rank 0 returns: Lightning's ``"ddp"`` launches the other ranks as
    copies of the script, and they exit once training ends, so that what follows (an
    evaluation, the results) runs once.

    The batch is the model's argument list (:mod:`pyromem.train.batches`): dataset
    items are tensors ``x``, tuples of positional or dicts of keyword arguments.

    - With an int ``batch_size`` the items are datapoints, collated into batches;
      the model is called with ``num_data=len(train_data)``, so the loss of a
      batch is scaled to the whole training set (through the model's
      ``pyro.plate("data", num_data)``) and divided by its size.
    - With ``batch_size=None`` each item is one step's arguments, passed as they
      are: an episode such as ``{"x": queries, "memory": memory}``, e.g. from a
      :class:`~pyromem.data.FreshEpisodes` that draws a new one for every step.
      The loss is divided by the episode's datapoints.

    Either way logged ELBOs are nats per datapoint.

    After every epoch, ``eval_data`` (if given, every ``eval_every`` epochs) is scored by
    :func:`pyromem.diagnostics.elbo_decomposition`, a row is written to
    ``out_dir/metrics.csv`` and the whole training state, ``config`` and the
    history are saved atomically to ``out_dir/checkpoints/last.ckpt``: copied
    on the CPU at once, then written and synced by a worker thread while the
    next epoch trains. ``fit`` returns, or raises, once the last write is on disk.

    Runs are reproducible: each epoch reseeds torch/pyro/numpy/random from
    ``(seed, epoch, rank)`` and shuffles by ``(seed, epoch)``, so on CPU a run
    resumed from a checkpoint ends with exactly the parameters of an
    uninterrupted run.

    :param model: a :class:`~pyro.nn.PyroModule` with methods ``model(x, num_data=None)``
        and ``guide(x, num_data=None)``.
    :param train_data: a tensor ``[N, ...]``, a torch ``Dataset`` or a list of N
        items: tensors ``x``, tuples of positional or dicts of keyword arguments.
    :param out_dir: folder for ``metrics.csv`` and ``checkpoints/last.ckpt``.
    :param eval_data: optional fixed held-out tensor ``[M, ...]``, scored in
        chunks of at most 512 datapoints under ``torch.no_grad`` in eval mode.
    :param int eval_every: score ``eval_data`` every this many epochs (and after the last).
    :param int eval_particles: guide draws of the held-out ELBO.
    :param int epochs: total number of epochs, counting those of a resumed run (at
        least those its checkpoint holds; under a cosine or one-cycle schedule, which
        spans the run, the same as the run resumed).
    :param batch_size: datapoints per step (per device), or ``None``: each item is a step.
    :param float lr: Adam learning rate (the peak of a schedule).
    :param str lr_schedule: ``"constant"``, ``"cosine"`` (to 0 at the end of the run)
        or ``"one-cycle"`` (:mod:`pyromem.train.schedules`); the rate is logged as ``lr``.
    :param float warmup_epochs: epochs of linear (one-cycle: half-cosine) warm-up.
    :param float weight_decay: Adam's weight decay.
    :param elbo: a Pyro ELBO instance (default ``Trace_ELBO()``).
    :param bool resume: continue from ``out_dir/checkpoints/last.ckpt``; raises
        ``FileNotFoundError`` if there is none.
    :param int seed: seed of the whole run.
    :param accelerator: Lightning accelerator: ``"auto"``, ``"cpu"``, ``"gpu"``, ``"cuda"``, ...
    :param devices: Lightning devices (number, list of ids or ``"auto"``).
    :param strategy: Lightning strategy, e.g. ``"auto"`` or ``"ddp"``.
    :param gradient_clip_val: clip the gradient norm to this value (``None``: no clipping).
    :param bool progress: show progress: Lightning's bar on a terminal, one line per epoch with
        an ETA on a file or pipe (:class:`~pyromem.train.progress.EpochLines`), unless
        ``callbacks`` holds a progress bar of its own. The lines name the unit of their ELBOs
        by the dataset's ``datapoint`` attribute where it has one (``"image"`` for an
        :class:`~pyromem.data.ImageDataset`).
    :param dict config: JSON-able dict stored in the checkpoint (e.g. how to rebuild the model),
        with ``lr_schedule``, ``warmup_epochs`` and ``batch_size`` (and ``epochs`` under a
        cosine or one-cycle schedule) added under ``"training"``: a resumed run must keep
        them (and the ``"model"``, ``config["model"]`` and ``"data"`` entries of ``config``,
        where present; its other entries may change), and may change the rates (and, under
        a constant schedule, the epochs).
    :param callbacks: extra Lightning callbacks.
    :param drop_labels: items are ``(image, label)`` pairs to train on the image;
        ``None`` asks the dataset (:func:`pyromem.train.batches.yields_labels`:
        torchvision datasets do).
    :raises FileNotFoundError: if ``resume=True`` and there is no checkpoint.
    :raises ValueError: on bad argument values, more GPUs asked for than present, or a
        checkpoint that cannot resume this run (another model or data, more epochs).
    :raises TypeError: on arguments of the wrong type.
    :raises TrainingDiverged: on a non-finite loss, gradient or parameter
        (:mod:`pyromem.train.divergence`); the last checkpoint is the last good epoch's.
    :raises TrainingInterrupted: on Ctrl-C (a ``KeyboardInterrupt``) or SIGTERM, once the
        last checkpoint is on disk; Ctrl-C works again afterwards (Lightning ignores it from
        the interrupt on).
    """
    dataset = _as_dataset(train_data)
    if batch_size is None and isinstance(dataset, (_TensorDataset, ImageDataset)):
        # each item would be one datapoint passed as a whole step's arguments: its first
        # dim taken for the batch's datapoints, trained without an error on nonsense
        raise ValueError(
            "batch_size: None makes each item of train_data one step's arguments (an episode), "
            f"but train_data is a {type(train_data).__name__} of {len(dataset)} datapoints; "
            f"batch_size={len(dataset)} trains on all of them at every step"
        )
    _check_options(
        lr=lr,
        weight_decay=weight_decay,
        warmup_epochs=warmup_epochs,
        gradient_clip_val=gradient_clip_val,
        resume=resume,
        progress=progress,
        drop_labels=drop_labels,
        callbacks=callbacks,
    )
    if eval_data is not None:
        if not isinstance(eval_data, torch.Tensor):
            raise TypeError(
                f"eval_data: expected a torch.Tensor or None, got {type(eval_data).__name__}"
            )
        if len(eval_data) == 0:
            raise ValueError(
                f"eval_data: expected at least one datapoint, got shape {tuple(eval_data.shape)}"
            )
    # Plain Python numbers from here on: a NumPy scalar (np.float64 is a float, np.int64 an
    # Integral) would reach the checkpoint, which torch.load(weights_only=True) cannot read back.
    epochs, batch_size, eval_every, eval_particles = (
        None if name == "batch_size" and value is None else as_int(value, name, 1, form="expected")
        for name, value in (
            ("epochs", epochs),
            ("batch_size", batch_size),
            ("eval_every", eval_every),
            ("eval_particles", eval_particles),
        )
    )
    lr, weight_decay, warmup_epochs = float(lr), float(weight_decay), float(warmup_epochs)
    if gradient_clip_val is not None:
        gradient_clip_val = float(gradient_clip_val)
    if lr_schedule not in SCHEDULES:
        raise ValueError(f"lr_schedule: expected one of {SCHEDULES}, got {lr_schedule!r}")
    if warmup_epochs > epochs:
        raise ValueError(f"warmup_epochs: expected at most epochs={epochs}, got {warmup_epochs:g}")
    if drop_labels is None:
        drop_labels = yields_labels(dataset)
    seed = as_int(seed, "seed", 0, form="expected")
    if gradient_clip_val is not None and not gradient_clip_val > 0:
        raise ValueError(
            f"gradient_clip_val: expected None or a positive float, got {gradient_clip_val!r}"
        )
    config = {} if config is None else config
    if not isinstance(config, dict):
        raise TypeError(f"config: expected a JSON-able dict, got {type(config).__name__}")
    try:
        json.dumps(config)
    except (TypeError, ValueError) as error:
        raise TypeError(f"config: expected a JSON-able dict, got {config!r}") from error
    config = _plain(config)
    _check_gpus(accelerator, devices)
    _check_strategy(strategy)
    # what a resumed run must share with the epochs its checkpoint holds: the schedule's
    # shape and the batches (the rates may change: SVIModule.on_train_start)
    training = {
        "lr_schedule": lr_schedule,
        "warmup_epochs": warmup_epochs,
        "batch_size": batch_size,
    }
    if lr_schedule != "constant":
        # a cosine or one-cycle schedule spans the run: the scheduler a resume restores keeps
        # its length, so more epochs would train at its final rate (0 for cosine)
        training["epochs"] = epochs
    config = {**config, "training": training}

    if not isinstance(out_dir, (str, os.PathLike)):
        raise TypeError(f"out_dir: expected a folder's path, got {type(out_dir).__name__}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"out_dir: {out_dir} is a file, not a folder")
    # the folder is made at the first save, after the first epoch: a file on its path would
    # stop the run there
    above = next(folder for folder in out_dir.absolute().parents if folder.exists())
    if not above.is_dir():
        raise ValueError(f"out_dir: {out_dir} cannot be made, {above} is a file")
    checkpoint = last_checkpoint(out_dir)
    metrics_csv = out_dir / "metrics.csv"
    if resume and not checkpoint.is_file():
        raise FileNotFoundError(f"resume: there is no checkpoint at {checkpoint} to continue")
    if resume:
        saved = check_resumable(checkpoint, model, config)
        if saved.epoch > epochs:
            # Lightning would stop at once and hand back the model of all those epochs
            raise ValueError(
                f"epochs: the checkpoint {checkpoint} holds {saved.epoch} epochs completed, "
                f"more than the {epochs} asked for"
            )
    remove_stale_temporaries(checkpoint.parent)
    remove_stale_temporaries(out_dir)

    module = SVIModule(
        model,
        None if batch_size is None else len(dataset),
        elbo,
        lr=lr,
        lr_schedule=lr_schedule,
        warmup_epochs=warmup_epochs,
        weight_decay=weight_decay,
        seed=seed,
        config=config,
        drop_labels=drop_labels,
    )
    check_training_data(
        model, dataset, batch_size=batch_size, drop_labels=drop_labels, num_data=module.num_data
    )
    if eval_data is not None:
        # scored only after the first epoch: checked now, before any training
        check_training_data(
            model,
            _TensorDataset(eval_data),
            batch_size=min(len(eval_data), 512),
            drop_labels=False,
            name="eval_data",
        )
        _check_scoring(model, eval_data, eval_particles)
    lightning.seed_everything(seed, verbose=False)
    checkpoint_saver = LastCheckpoint(checkpoint, saved.epoch if resume else 0)
    with _quiet_lightning(), _one_line_misconfiguration():
        trainer = lightning.Trainer(
            accelerator=accelerator,
            devices=devices,
            strategy=strategy,
            max_epochs=epochs,
            gradient_clip_val=gradient_clip_val,
            logger=False,
            enable_progress_bar=progress,
            enable_model_summary=False,
            plugins=[AtomicCheckpointIO(background=True)],
            callbacks=[
                *callbacks,
                DatasetEpoch(dataset),
                DivergenceGuard(),
                EpochMetrics(
                    metrics_csv, eval_data, every=eval_every, num_particles=eval_particles
                ),
                checkpoint_saver,
                *_progress_lines(progress, callbacks, getattr(dataset, "datapoint", None)),
            ],
        )
        # Creating a DataLoader iterator draws a seed from its generator. Drawn from
        # the global RNG it would shift the epoch's random stream, since Lightning
        # creates the iterator at a different point when resuming.
        generator = torch.Generator().manual_seed(seed)
        if batch_size is None:
            # Each item is a step, random in itself: read in order (under DDP, Lightning
            # swaps in a DistributedSampler, which gives each rank its own indices).
            loader = DataLoader(dataset, batch_size=None, generator=generator)
        elif trainer.world_size > 1:
            # Lightning swaps in a DistributedSampler seeded by seed_everything.
            loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator)
        else:
            sampler = EpochShuffleSampler(len(dataset), seed)
            if isinstance(dataset, (_TensorDataset, ImageDataset)):
                # these index a whole batch at once: one gather instead of B items stacked
                batches = EpochShuffleBatches(sampler, batch_size, drop_last=False)
                loader = DataLoader(dataset, batch_size=None, sampler=batches, generator=generator)
            else:
                loader = DataLoader(
                    dataset, batch_size=batch_size, sampler=sampler, generator=generator
                )
        device = next(model.parameters(), torch.empty(0)).device
        on_interrupt = signal.getsignal(signal.SIGINT)
        try:
            trainer.fit(module, train_dataloaders=loader, ckpt_path=checkpoint if resume else None)
        except SystemExit:
            # Lightning answers Ctrl-C with sys.exit(1), once its teardown has waited for the
            # last checkpoint's write
            if not trainer.interrupted:
                raise
            raise TrainingInterrupted(
                # a signal as the last epoch ends leaves Lightning's counter past it
                min(trainer.current_epoch + 1, epochs),
                epochs,
                max(trainer.current_epoch, checkpoint_saver.epochs_saved),
                # before this run's first save, a file there is this run's only when resumed
                checkpoint if (resume or checkpoint_saver.epochs_saved) else None,
                signal.SIGTERM if trainer.received_sigterm else signal.SIGINT,
            ) from None
        finally:
            # Lightning calls no module hook when training stops on an exception.
            module.restore_pyro_validation()
            # and ignores Ctrl-C for the rest of the process once interrupted
            if on_interrupt is not None and threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGINT, on_interrupt)
    if trainer.world_size > 1 and torch.distributed.is_initialized():
        # Every rank is done with the group. Left to the interpreter's exit, gloo's threads
        # could abort the process ("terminate called without an active exception").
        torch.distributed.destroy_process_group()
    if trainer.global_rank != 0:
        # A rank that Lightning launched as a copy of the whole script (the "ddp" strategy
        # on the command line) would go on to evaluate and write the results again.
        raise SystemExit(0)
    # Lightning leaves the model on the CPU after training; give it back where it was.
    model.to(device)
    return FitResult(
        model=model,
        history=list(module.history),
        checkpoint=checkpoint,
        metrics_csv=metrics_csv,
        epochs=trainer.current_epoch,
        device=str(trainer.strategy.root_device),
    )


def _plain(value):
    """``value`` with each str, int and float of a subclass (a NumPy ``float64`` or ``str_``, an
    ``IntEnum``), which ``json`` takes, made the builtin, which ``torch.load(weights_only=True)``
    reads back, and each tuple or list a plain one."""
    if isinstance(value, dict):
        return {_plain(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (tuple, list)):
        return (tuple if isinstance(value, tuple) else list)(map(_plain, value))
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str.__str__(value)  # the text itself: str() of a str enum member is its name
    return value


def _check_scoring(model, eval_data, eval_particles) -> None:
    # the held-out ELBO after each epoch is elbo_decomposition's, whose own checks (every
    # latent site drawn by the guide, every site in the data plate) would otherwise stop
    # the run at the end of its first epoch, before that epoch's checkpoint
    from pyromem.diagnostics import elbo_decomposition

    device = next(model.parameters(), torch.empty(0)).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            elbo_decomposition(
                model.model, model.guide, eval_data[:2].to(device), min(eval_particles, 2)
            )
    except (ValueError, TypeError, RuntimeError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise ValueError(
            f"eval_data: the held-out ELBO (pyromem.diagnostics.elbo_decomposition) cannot "
            f"score this model: {first_line}"
        ) from None
    finally:
        model.train(was_training)


def _check_options(
    *, lr, weight_decay, warmup_epochs, gradient_clip_val, resume, progress, drop_labels, callbacks
) -> None:
    # the types, before any comparison of the values would fail in torch's or Python's words
    for name, value, none in (
        ("lr", lr, False),
        ("weight_decay", weight_decay, False),
        ("warmup_epochs", warmup_epochs, False),
        ("gradient_clip_val", gradient_clip_val, True),
    ):
        if not (none and value is None) and (
            not isinstance(value, numbers.Real) or isinstance(value, bool)
        ):
            expected = "a float" + (" or None" if none else "")
            raise TypeError(f"{name}: expected {expected}, got {type(value).__name__} {value!r}")
    for name, value, none in (
        ("resume", resume, False),
        ("progress", progress, False),
        ("drop_labels", drop_labels, True),
    ):
        if not (isinstance(value, bool) or (none and value is None)):
            expected = "True or False" + (" or None" if none else "")
            raise TypeError(f"{name}: expected {expected}, got {type(value).__name__} {value!r}")
    if isinstance(callbacks, Callback) or not isinstance(callbacks, Sequence):
        raise TypeError(
            f"callbacks: expected a list of Lightning callbacks, got {type(callbacks).__name__}"
        )
    for index, callback in enumerate(callbacks):
        if not isinstance(callback, Callback):
            raise TypeError(
                f"callbacks: expected Lightning callbacks, got {type(callback).__name__} "
                f"{callback!r:.40} at index {index}"
            )


def _progress_lines(progress, callbacks, per) -> list:
    # after EpochMetrics, whose row of the epoch the lines print
    if not progress or sys.stderr.isatty() or any(isinstance(c, ProgressBar) for c in callbacks):
        return []
    return [EpochLines(per=per)]


def _as_dataset(train_data) -> Dataset:
    if isinstance(train_data, torch.Tensor):
        dataset = _TensorDataset(train_data)
    elif isinstance(train_data, (Dataset, list)):
        dataset = train_data
    else:
        raise TypeError(
            "train_data: expected a torch.Tensor, a torch Dataset or a list of items, "
            f"got {type(train_data).__name__}"
        )
    if len(dataset) == 0:
        raise ValueError("train_data: expected at least one datapoint, got an empty dataset")
    if isinstance(dataset, list) and not isinstance(dataset[0], (torch.Tensor, tuple, list, dict)):
        raise TypeError(
            "train_data: expected a list of tensors, tuples or dicts (the model's arguments), "
            f"got a list of {type(dataset[0]).__name__}"
        )
    return dataset


def _check_gpus(accelerator, devices) -> None:
    # Lightning's own message for this case does not say that CPU processes are an option.
    if accelerator not in ("auto", "gpu", "cuda"):
        return
    if isinstance(devices, int) and not isinstance(devices, bool):
        wanted = devices
    elif isinstance(devices, Sequence) and not isinstance(devices, str):
        wanted = len(devices)
    else:
        return
    found = torch.cuda.device_count()
    if accelerator in ("gpu", "cuda") and found == 0:
        raise ValueError(
            f"accelerator: {accelerator!r} asks for a GPU and torch finds none; "
            'accelerator="cpu" or "auto" trains on the CPU'
        )
    if wanted > 1 and found < wanted:
        raise ValueError(
            f"devices: asked for {wanted} GPUs with accelerator={accelerator!r}, found {found}; "
            f'accelerator="cpu", devices={wanted} runs {wanted} CPU processes instead'
        )


def _check_strategy(strategy) -> None:
    # Lightning's own message for an unknown name is several sentences and a URL.
    if isinstance(strategy, str) and strategy != "auto":
        from lightning.pytorch.strategies import StrategyRegistry

        if strategy not in StrategyRegistry.available_strategies():
            raise ValueError(
                f"strategy: {strategy!r} is not one of Lightning's strategies; the usual ones "
                "are 'auto' and, for several devices, 'ddp'"
            )


@contextmanager
def _one_line_misconfiguration():
    # Lightning's MisconfigurationException (a bad accelerator, strategy or devices value)
    # is a ValueError for the caller, in one line.
    try:
        yield
    except MisconfigurationException as error:
        message = " ".join(str(error).split())
        raise ValueError(f"Lightning refused the engine options: {message}") from None


@contextmanager
def _quiet_lightning():
    # Lightning reports devices and tips at INFO level; warnings still show.
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
