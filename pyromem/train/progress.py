"""Training progress where no terminal shows it: one line per epoch, with an ETA.

On a terminal :func:`~pyromem.train.fit` shows Lightning's progress bar. Written to a file
or a pipe (a log, CI), that bar's carriage-return updates pile up into one huge line, about
650 KB for a quick ``pyromem demo``; :class:`EpochLines` takes its place there.
"""

import sys
import time

from lightning.pytorch.callbacks import ProgressBar

#: The first epoch a run trains shows a line at each tenth of its steps once it has run this
#: long, so that a long epoch (VMA's blocks of 100 steps, an epoch of a large dataset on a
#: CPU) shows its progress and an ETA before it ends.
QUIET_SECONDS = 5.0


class EpochLines(ProgressBar):
    """Lightning's progress bar as one line per completed epoch, on rank zero:
    ``epoch 3/20: train ELBO -123.45 nats per image, eval ELBO -121.02 nats per image (4.1 s,
    ETA 70 s)``.

    The ELBOs are those of the epoch's row of ``metrics.csv`` (the module's ``history``, which
    :class:`~pyromem.train.metrics.EpochMetrics` appends before this callback runs). The ETA
    assumes the remaining epochs take as long as the mean epoch of this run (a resumed run
    counts from where it resumed).

    Before the first of these lines, the first epoch the run trains also shows a line at each
    tenth of its steps once it has run :data:`QUIET_SECONDS`, ``epoch 1/25: step 30/100 (6.2
    s, ETA 510 s)``, its ETA from the mean step so far (the epoch's own line takes the last).

    :param stream: a text stream; ``None`` writes to ``sys.stderr`` as it is at each line.
    :param str per: what one datapoint of the training data is, e.g. ``"image"`` or
        ``"episode of 4 images"``: the lines then say ``nats per image``; ``None``: ``nats``.
    """

    def __init__(self, stream=None, per=None):
        super().__init__()
        self.stream, self.per = stream, per
        self._enabled = True
        self._start, self._first_epoch = 0.0, 0
        # the tenths of the first epoch shown so far; None once its line is out
        self._tenths: int | None = None

    def disable(self):
        self._enabled = False

    def enable(self):
        self._enabled = True

    def on_train_start(self, trainer, pl_module):
        self._start, self._first_epoch = time.perf_counter(), trainer.current_epoch
        self._tenths = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._tenths is None or not (self._enabled and trainer.is_global_zero):
            return
        steps, done = trainer.num_training_batches, batch_idx + 1
        if not isinstance(steps, int) or done >= steps or 10 * done // steps <= self._tenths:
            return  # a loader without a length, the epoch's end, or no tenth passed
        self._tenths = 10 * done // steps
        elapsed = time.perf_counter() - self._start
        if elapsed < QUIET_SECONDS:
            return
        left = steps * (trainer.max_epochs - self._first_epoch) - done
        print(
            f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}: step {done}/{steps} "
            f"({_seconds(elapsed)}, ETA {_seconds(left * elapsed / done)})",
            file=self.stream or sys.stderr,
            flush=True,
        )

    def on_train_epoch_end(self, trainer, pl_module):
        self._tenths = None  # the epoch lines from here on
        if not (self._enabled and trainer.is_global_zero):
            return
        epoch, total = trainer.current_epoch + 1, trainer.max_epochs
        elapsed = time.perf_counter() - self._start
        left = (total - epoch) * elapsed / (epoch - self._first_epoch)
        row = pl_module.history[-1] if pl_module.history else {}
        values = [
            f"{label} {row[key]:.2f} nats" + (f" per {self.per}" if self.per else "")
            for key, label in (("train_elbo_nats", "train ELBO"), ("eval_elbo_nats", "eval ELBO"))
            if key in row
        ]
        head = f"epoch {epoch}/{total}" + (": " + ", ".join(values) if values else "")
        stream = self.stream or sys.stderr
        print(f"{head} ({_seconds(elapsed)}, ETA {_seconds(left)})", file=stream, flush=True)


def _seconds(seconds):
    return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
