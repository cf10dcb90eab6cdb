r"""The retrieval protocol of §5: memories of N patterns, corrupted queries, rates over seeds.

For each seed :math:`s`, a memory of ``memory_size`` images is drawn without replacement from
the images given (a test split for the tables), every stored image is corrupted into a query,
the method retrieves, and the rates are the share of the N queries that meet the criteria of
:mod:`pyromem.retrieval.criteria`. Seed :math:`s` fixes both the memory and the corruption
(a ``torch.Generator`` seeded with :math:`s`), so two methods see the same memories and queries.
"""

from dataclasses import dataclass, field

import pyro
import torch

from pyromem.retrieval.corruptions import corrupt
from pyromem.retrieval.criteria import retrieval_success


def sample_memory(num_images, memory_size, generator=None):
    """Indices of a memory: ``memory_size`` distinct images out of ``num_images``.

    :returns: a long tensor ``(memory_size,)`` on the CPU.
    """
    if isinstance(memory_size, bool) or not isinstance(memory_size, int) or memory_size < 1:
        raise ValueError(f"memory_size must be a positive int, got {memory_size!r}")
    if memory_size > num_images:
        raise ValueError(f"memory_size {memory_size} exceeds the {num_images} images available")
    return torch.randperm(num_images, generator=generator)[:memory_size]


@dataclass
class Rates:
    """Per-seed rates (in %) of one method on one corruption.

    :ivar list success: both criteria.
    :ivar list nearest: nearest-pattern rate.
    :ivar list within: threshold rate.
    """

    success: list = field(default_factory=list)
    nearest: list = field(default_factory=list)
    within: list = field(default_factory=list)

    def summary(self):
        """``{"mean", "std"}`` of the success rate, with ``"nearest"`` and ``"threshold"`` dicts
        of their own and the per-seed ``"per_seed"`` success rates."""
        return {
            **_mean_std(self.success),
            "nearest": _mean_std(self.nearest),
            "threshold": _mean_std(self.within),
            "per_seed": list(self.success),
        }


def evaluate(method, images, corruption, memory_size=100, seeds=10, threshold=None, seed_offset=0):
    """Rates of ``method`` on memories drawn from ``images`` with queries corrupted by name.

    :param method: a :class:`~pyromem.retrieval.methods.Method` (fit beforehand if it learns).
    :param torch.Tensor images: the images to draw memories from ``(M, C, H, W)``.
    :param str corruption: a name of :mod:`pyromem.retrieval.corruptions`.
    :param int memory_size: N.
    :param int seeds: number of memories; seed ``seed_offset + s`` for ``s < seeds``.
    :param float threshold: the threshold of the criterion in the method's space (RMS distance).
    :rtype: Rates
    """
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be a positive int, got {seeds!r}")
    if threshold is None:
        raise ValueError("threshold is required: choose it on a training split (select_threshold)")
    rates = Rates()
    for seed in range(seed_offset, seed_offset + seeds):
        generator = torch.Generator().manual_seed(seed)
        stored = images[sample_memory(len(images), memory_size, generator).to(images.device)]
        queries = corrupt(stored, corruption, generator=generator)
        # The arguments are checked above and the images are the caller's own: the
        # distributions' value checks would re-check every iterate (about a third of the
        # cost of VAE-BP-GMM), as the training engine also skips them after one check.
        with pyro.validation_enabled(False):
            retrieved, memory = method.retrieve(queries, stored)
        target = torch.arange(len(stored), device=memory.device)
        outcome = retrieval_success(retrieved, memory, target, threshold)
        for name, hits in (
            ("success", outcome.success),
            ("nearest", outcome.nearest),
            ("within", outcome.within),
        ):
            getattr(rates, name).append(100.0 * hits.float().mean().item())
    return rates


def _mean_std(values):
    values = torch.tensor(values, dtype=torch.float64)
    std = values.std().item() if len(values) > 1 else 0.0
    return {"mean": values.mean().item(), "std": std}
