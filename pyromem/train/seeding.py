"""Per-epoch randomness that depends only on the seed and the epoch.

A resumed run must retrace an uninterrupted one exactly. Carrying the global
RNG state across epochs (and across a checkpoint) is fragile, so every epoch
starts from a seed derived from ``(seed, epoch, rank)`` and the data order from
``(seed, epoch)`` alone.
"""

import pyro
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import BatchSampler, Sampler

from pyromem.data.fresh_episodes import derive_seed


def reseed_epoch(seed: int, epoch: int, rank: int) -> None:
    """Seed ``torch``, ``pyro``, ``numpy`` and ``random`` for one training epoch on one rank."""
    pyro.set_rng_seed(derive_seed(seed, epoch, rank))


class EpochShuffleSampler(Sampler[int]):
    """Random permutation of ``range(num_data)`` that depends only on ``(seed, epoch)``.

    Lightning calls :meth:`set_epoch` before every epoch, so a run resumed from
    a checkpoint visits the data in the same order as an uninterrupted run.

    :param int num_data: dataset size N.
    :param int seed: base seed.
    """

    def __init__(self, num_data: int, seed: int):
        self.num_data = num_data
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def permutation(self) -> torch.Tensor:
        """This epoch's order of the indices, a tensor ``[num_data]``."""
        generator = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch))
        return torch.randperm(self.num_data, generator=generator)

    def __iter__(self):
        return iter(self.permutation().tolist())

    def __len__(self) -> int:
        return self.num_data


class DatasetEpoch(Callback):
    """Tell a dataset with ``set_epoch(epoch, rank)`` (e.g. :class:`~pyromem.data.FreshEpisodes`)
    which epoch and rank it serves, before every training epoch.

    :param dataset: the training dataset.
    """

    def __init__(self, dataset):
        self.dataset = dataset

    def on_train_epoch_start(self, trainer, pl_module):
        set_epoch = getattr(self.dataset, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(trainer.current_epoch, trainer.global_rank)


class EpochShuffleBatches(BatchSampler):
    """Batches of indices of an :class:`EpochShuffleSampler`, each a tensor, for datasets
    that index a whole batch at once; passes Lightning's :meth:`set_epoch` on to the sampler."""

    def __iter__(self):
        # A generator, so the permutation is drawn at the first batch, after Lightning's
        # set_epoch (it may create the iterator before); slices of one permutation, so no
        # Python list per batch to turn back into a tensor.
        batches = self.sampler.permutation().split(self.batch_size)
        if self.drop_last and len(batches[-1]) < self.batch_size:
            batches = batches[:-1]
        yield from batches

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)
