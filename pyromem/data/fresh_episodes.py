"""A dataset that draws a fresh episode for each item, seeded by (seed, epoch, rank, index)."""

from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from pyromem.checks import as_int


def derive_seed(*keys: int) -> int:
    """Derive an independent 32-bit seed from non-negative integer ``keys``."""
    return int(np.random.SeedSequence(keys).generate_state(1)[0])


class FreshEpisodes(Dataset):
    """``num_episodes`` items, each drawn afresh by ``draw(generator)`` when it is read.

    Item ``index`` of epoch ``e`` on process ``r`` is drawn with a ``torch.Generator``
    seeded by ``(seed, e, r, index)``: every epoch sees new episodes, each rank of a
    DDP run draws its own, and a resumed run redraws exactly the episodes of an
    uninterrupted one, whatever order, worker or process reads them. The engine
    (:func:`pyromem.train.fit`) calls :meth:`set_epoch` before every epoch.

    An item is whatever ``draw`` returns: a model's arguments, e.g. the dict
    ``{"x": queries, "memory": memory}`` of a few-shot episode; with
    ``fit(batch_size=None)`` each item is one training step.

    :param callable draw: ``draw(generator) -> item``, its randomness from ``generator``.
    :param int num_episodes: items per epoch.
    :param int seed: a non-negative base seed.
    """

    def __init__(self, draw: Callable[[torch.Generator], object], num_episodes: int, seed: int = 0):
        if not callable(draw):
            raise TypeError(f"draw: expected a callable draw(generator), got {type(draw).__name__}")
        for name, value, low in (("num_episodes", num_episodes, 1), ("seed", seed, 0)):
            as_int(value, name, low, form="expected")
        self.draw, self.num_episodes, self.seed = draw, num_episodes, seed
        self.epoch, self.rank = 0, 0

    def set_epoch(self, epoch: int, rank: int = 0) -> None:
        """Draw the episodes of ``epoch`` on process ``rank`` from now on.

        :param int epoch: a non-negative int.
        :param int rank: a non-negative int.
        """
        # checked here: a bad one would stop only at the next item, in NumPy's SeedSequence
        for name, value in (("epoch", epoch), ("rank", rank)):
            as_int(value, name, 0, form="expected")
        self.epoch, self.rank = epoch, rank

    def __len__(self) -> int:
        return self.num_episodes

    def __getitem__(self, index: int):
        if not 0 <= index < self.num_episodes:
            raise IndexError(f"index: expected 0 <= index < {self.num_episodes}, got {index}")
        seed = derive_seed(self.seed, self.epoch, self.rank, int(index))
        return self.draw(torch.Generator().manual_seed(seed))
