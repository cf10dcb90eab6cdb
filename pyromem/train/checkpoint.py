"""Crash-safe checkpoints: written atomically after every epoch, read back with clear errors."""

import os
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Checkpoint as CheckpointCallback
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning_utilities.core.apply_func import apply_to_collection

from pyromem.train.divergence import check_finite_parameters
from pyromem.train.module import CHECKPOINT_KEY


def last_checkpoint(out_dir) -> Path:
    """The path of the checkpoint that :func:`~pyromem.train.fit` keeps for a run in
    ``out_dir`` (that of its last completed epoch), whether or not it exists yet."""
    return Path(out_dir) / "checkpoints" / "last.ckpt"


def umask_file_mode() -> int:
    """The permissions ``open`` gives a new file under the process's umask."""
    # os.umask only reads by setting: called on the main thread, never from the writer's
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def with_umask_permissions(path, mode: int | None = None) -> None:
    """Give a file made by ``tempfile.mkstemp`` (private, 0600) the permissions of the umask,
    as ``open`` would have, before it replaces the real file."""
    os.chmod(path, umask_file_mode() if mode is None else mode)


def write_atomically(path, write, *, binary=False, sync=False, mode=None) -> Path:
    """Write the file ``path`` so that a run killed at any moment leaves the old file or the
    new one, never part of one.

    ``write(file)`` fills a temporary file in the same folder (so that :func:`os.replace`
    never crosses file systems), which then replaces ``path`` atomically, on POSIX and
    Windows, with the permissions ``open`` would give.

    :param write: called with the open temporary file: text (``newline=""``: the lines as
        written) or, with ``binary``, bytes.
    :param bool sync: flush the file to disk before it replaces ``path``.
    :param int mode: its permissions (default: the umask's; read it on the main thread,
        :func:`umask_file_mode`, for a write on another).
    :returns: ``path``, a ``Path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", newline="") as file:
            write(file)
            if sync:
                file.flush()
                os.fsync(file.fileno())
        with_umask_permissions(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO that never leaves a partly written file at the target path.

    The checkpoint is written to a temporary file in the target's folder, synced
    to disk and moved over the target with :func:`os.replace`, which is atomic
    on POSIX and Windows: a run killed at any moment leaves either the previous
    checkpoint or the new one.

    With ``background=True`` the caller's thread only takes a copy of the
    checkpoint's tensors on the CPU (the optimiser goes on changing the live
    ones) and a worker thread writes and syncs it while training continues.
    Writes happen one at a time, in order; the next save, and Lightning's
    teardown at the end of ``fit`` (normal or on an exception), wait for the
    write in progress and raise its error, if any. So when ``fit`` returns or
    raises, the last checkpoint asked for is on disk.

    :param bool background: write in a worker thread.
    """

    def __init__(self, background: bool = False):
        super().__init__()
        self.background = background
        self._executor: ThreadPoolExecutor | None = None
        self._pending: Future | None = None

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        """Read a checkpoint with ``torch.load(weights_only=True)`` whatever the caller asks:
        a pyromem checkpoint holds tensors and plain containers only, so a file that
        carries anything else (a pickled payload) is refused rather than run."""
        try:
            return torch.load(path, map_location=map_location or "cpu", weights_only=True)
        except Exception as error:
            raise ValueError(f"corrupt or not a pyromem checkpoint: {path}") from error

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        if storage_options is not None:
            raise TypeError(
                f"storage_options: expected None for {type(self).__name__}, got {storage_options!r}"
            )
        path = Path(path)
        # the folder and the file mode on this thread: the umask is process-wide state
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = umask_file_mode()
        if not self.background:
            self._write(checkpoint, path, mode)
            return
        self.wait()
        snapshot = apply_to_collection(checkpoint, torch.Tensor, _cpu_copy)
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self._pending = self._executor.submit(self._write, snapshot, path, mode)

    def wait(self) -> None:
        """Wait for the background write in progress, if any, and raise its error."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def teardown(self) -> None:
        try:
            self.wait()
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None

    @staticmethod
    def _write(checkpoint, path: Path, mode: int) -> None:
        write_atomically(
            path, lambda file: torch.save(checkpoint, file), binary=True, sync=True, mode=mode
        )


def _cpu_copy(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to("cpu", copy=True)


class LastCheckpoint(CheckpointCallback):
    """Save the whole training state to ``path`` at the end of every training epoch.

    As a Lightning ``Checkpoint`` callback it runs after the other callbacks'
    ``on_train_epoch_end``, so the saved history includes the epoch just finished.

    :param path: the checkpoint file, e.g. ``out_dir/checkpoints/last.ckpt``.
    :param int epochs_saved: the epochs the file holds already (those of a resumed run).
    """

    def __init__(self, path: str | os.PathLike, epochs_saved: int = 0):
        self.path = Path(path)
        #: the epochs completed in the checkpoint at ``path`` that this run wrote or resumed
        #: from (0: none yet)
        self.epochs_saved = epochs_saved

    def on_train_epoch_end(self, trainer, pl_module):
        # a non-finite state never replaces the last good checkpoint
        check_finite_parameters(pl_module, trainer.current_epoch + 1, trainer)
        trainer.save_checkpoint(self.path)
        self.epochs_saved = trainer.current_epoch + 1


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` reads from a pyromem checkpoint.

    :ivar config: the JSON-able config dict passed to :func:`~pyromem.train.fit`.
    :ivar state_dict: the trained model's ``state_dict()``, a dict ready for
        ``model.load_state_dict``.
    :ivar epoch: the number of training epochs completed, an int.
    :ivar history: a list of one dict of metrics per completed epoch.
    """

    config: dict
    state_dict: dict[str, torch.Tensor]
    epoch: int
    history: list[dict] = field(default_factory=list)


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device | None = "cpu"
) -> Checkpoint:
    """Read a checkpoint written by :func:`~pyromem.train.fit`.

    Loads with ``torch.load(weights_only=True)``: the file holds only tensors
    and primitive containers, so nothing in it is executed.

    :param path: path of the ``.ckpt`` file.
    :param map_location: where to put the tensors, as in :func:`torch.load`.
    :raises FileNotFoundError: if ``path`` is not a file.
    :raises ValueError: if the file is not a readable torch checkpoint with pyromem's entries.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no checkpoint file at {path}")
    try:
        raw = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        # torch.load raises many types on bad bytes (UnpicklingError, RuntimeError, EOFError, ...).
        raise ValueError(f"corrupt or not a pyromem checkpoint: {path}") from error
    entry = raw.get(CHECKPOINT_KEY) if isinstance(raw, dict) else None
    if not isinstance(entry, dict) or not isinstance(raw.get("state_dict"), dict):
        raise ValueError(f"corrupt or not a pyromem checkpoint: {path}")
    missing = [key for key in ("config", "epochs_completed", "history") if key not in entry]
    if missing:
        raise ValueError(
            f"corrupt or not a pyromem checkpoint: {path} (its {CHECKPOINT_KEY!r} entry lacks "
            f"{', '.join(map(repr, missing))})"
        )
    prefix = "model."
    state_dict = {
        key[len(prefix) :]: value
        for key, value in raw["state_dict"].items()
        if key.startswith(prefix)
    }
    return Checkpoint(
        config=entry["config"],
        state_dict=state_dict,
        epoch=entry["epochs_completed"],
        history=list(entry["history"]),
    )


def remove_stale_temporaries(folder) -> list[Path]:
    """Delete the temporary files a killed run left in ``folder`` (``.NAME.*.tmp``)."""
    folder = Path(folder)
    stale = sorted(folder.glob(".*.tmp")) if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def check_resumable(path, model, config) -> "Checkpoint":
    """Raise a one-line ``ValueError`` unless the checkpoint at ``path`` can resume ``model``.

    The checkpoint must be readable (weights only), of the same model kind, with the
    same architecture, data and training settings (``config["model"]``,
    ``config[<model>]``, ``config["data"]`` and ``config["training"]``, where present),
    and parameters of the same names and shapes.

    :returns: the checkpoint, as :func:`load_checkpoint` reads it.
    """
    saved = load_checkpoint(path)
    for key in ("model", config.get("model"), "data", "training"):
        if key is None or (key not in config and key not in saved.config):
            continue
        if key == "training" and key not in saved.config:
            continue  # written before the training settings were stored
        now = config.get(key)
        if key == "training":
            # a setting stored since (epochs, of the cosine and one-cycle schedules) is not
            # checked against a checkpoint written before
            now = {name: value for name, value in now.items() if name in saved.config[key]}
        difference = _first_difference(saved.config.get(key), now, key)
        if difference is not None:
            name, was, now = difference
            name = name.removeprefix("training.")
            why = (
                f"; its {saved.config[key]['lr_schedule']} schedule spans the run's epochs, "
                "which a resume must keep (the constant schedule lets them change)"
                if key == "training" and name == "epochs"
                else ""
            )
            raise ValueError(
                f"resume: the checkpoint {path} was trained with {name}={was!r}, "
                f"this run has {name}={now!r}{why}"
            )
    current = model.state_dict()
    for name, value in saved.state_dict.items():
        if name not in current or current[name].shape != value.shape:
            now = tuple(current[name].shape) if name in current else "no such parameter"
            raise ValueError(
                f"resume: parameter {name} of the checkpoint {path} has shape "
                f"{tuple(value.shape)}, this model's {now}"
            )
    return saved


def _first_difference(was, now, name):
    if isinstance(was, dict) and isinstance(now, dict):
        for key in dict.fromkeys([*was, *now]):
            found = _first_difference(was.get(key), now.get(key), f"{name}.{key}")
            if found is not None:
                return found
        return None
    return None if was == now else (name, was, now)
