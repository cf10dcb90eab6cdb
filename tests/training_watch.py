"""Watching a recipe's trainings in tests: the epochs each trains, and a stop in one of them."""

from pathlib import Path

from lightning.pytorch.callbacks import Callback


class CountEpochs(Callback):
    """Counts the epochs trained in each run folder, in ``counts``."""

    def __init__(self, counts, name):
        self.counts, self.name = counts, name
        counts.setdefault(name, 0)

    def on_train_epoch_end(self, trainer, pl_module):
        self.counts[self.name] += 1


def watch_fit(monkeypatch, module, counts, interrupt=None, stop=None):
    """Wrap ``module.fit`` so that every training counts its epochs in ``counts`` (by run
    folder), and the one in the folder named ``interrupt`` runs the callback ``stop`` too (one
    that stops it as Ctrl-C does)."""
    from pyromem.train import fit as real_fit

    def fit(*args, out_dir, callbacks=(), **kwargs):
        name = Path(out_dir).name
        extra = [CountEpochs(counts, name)]
        if name == interrupt:
            extra.append(stop)
        return real_fit(*args, out_dir=out_dir, callbacks=[*callbacks, *extra], **kwargs)

    monkeypatch.setattr(module, "fit", fit)
