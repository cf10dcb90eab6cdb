"""Per-epoch metrics: the training ELBO, a held-out ELBO decomposition, and ``metrics.csv``."""

import csv
import os
import time
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

from pyromem.diagnostics import elbo_decomposition
from pyromem.train.checkpoint import write_atomically


class EpochMetrics(Callback):
    """Record one row of metrics per training epoch in ``pl_module.history`` and a CSV file.

    A row holds ``epoch`` (1 for the first), ``train_elbo_nats`` (the mean
    training ELBO per datapoint, in nats), ``lr`` (the learning rate at the end
    of the epoch), and, when ``eval_data`` is given, its
    ELBO decomposition under the current parameters: ``eval_elbo_nats``,
    ``eval_bits_per_dim``, ``kl_<site>`` for each latent site and
    ``loglik_<site>`` for each observed site, and ``eval_seconds``, the cost of that
    evaluation; finally ``seconds``, the wall time of the epoch including it.

    The history travels in the checkpoint (see :class:`SVIModule`), and the CSV
    is rewritten from it whenever training starts, so a resumed run keeps the
    rows up to the resumed epoch and continues. Only global rank 0 writes.

    :param csv_path: where to write the CSV.
    :param torch.Tensor eval_data: optional fixed held-out data ``[M, ...]``.
    :param int chunk_size: most datapoints scored at once.
    :param int every: score ``eval_data`` after every ``every``-th epoch (and the last);
        its wall time is logged as ``eval_seconds``.
    :param int num_particles: guide draws of the held-out ELBO.
    """

    def __init__(
        self,
        csv_path: str | os.PathLike,
        eval_data: torch.Tensor | None = None,
        chunk_size: int = 512,
        every: int = 1,
        num_particles: int = 10,
    ):
        self.csv_path = Path(csv_path)
        self.eval_data = eval_data
        self.chunk_size = chunk_size
        self.every, self.num_particles = every, num_particles
        self._epoch_start = 0.0

    def on_train_start(self, trainer, pl_module):
        if trainer.is_global_zero:
            self._write(pl_module.history)

    def on_train_epoch_start(self, trainer, pl_module):
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        row = {
            "epoch": trainer.current_epoch + 1,
            "train_elbo_nats": pl_module.train_elbo(),
            "lr": trainer.optimizers[0].param_groups[0]["lr"],
        }
        epoch = trainer.current_epoch + 1
        if self.eval_data is not None and (epoch % self.every == 0 or epoch == trainer.max_epochs):
            start = time.perf_counter()
            row.update(self._evaluate(pl_module.model, pl_module.device))
            row["eval_seconds"] = time.perf_counter() - start
        row["seconds"] = time.perf_counter() - self._epoch_start
        pl_module.history.append(row)
        if trainer.is_global_zero:
            self._write(pl_module.history)

    def _evaluate(self, model: torch.nn.Module, device: torch.device) -> dict[str, float]:
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                chunks = [
                    (
                        len(x),
                        elbo_decomposition(
                            model.model, model.guide, x.to(device), self.num_particles
                        ).summary(),
                    )
                    for x in self.eval_data.split(self.chunk_size)
                ]
        finally:
            model.train(was_training)

        def mean(get) -> float:
            return sum(n * get(summary) for n, summary in chunks) / len(self.eval_data)

        first = chunks[0][1]
        row = {
            "eval_elbo_nats": mean(lambda s: s["elbo_nats"]),
            "eval_bits_per_dim": mean(lambda s: s["bits_per_dim"]),
        }
        for site in first["kl"]:
            row[f"kl_{site}"] = mean(lambda s, site=site: s["kl"][site])
        for site in first["log_likelihood"]:
            row[f"loglik_{site}"] = mean(lambda s, site=site: s["log_likelihood"][site])
        return row

    def _write(self, history: list[dict]) -> None:
        # The file is tiny: rewrite it whole, atomically, so it always matches a history.
        if not history:
            self.csv_path.unlink(missing_ok=True)
            return
        columns = list(dict.fromkeys(key for row in history for key in row))

        def rows(file):
            writer = csv.DictWriter(file, fieldnames=columns)
            writer.writeheader()
            writer.writerows(history)

        write_atomically(self.csv_path, rows)
