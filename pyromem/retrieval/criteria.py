r"""When is a pattern retrieved? The success criteria of §5.

A query made from the stored pattern :math:`M_{k^*}` is answered by a vector :math:`\hat z` in
the space where the method works (pixels, or the VAE's latent codes). Two criteria are reported:

* **nearest pattern**: :math:`\hat z` is nearer :math:`M_{k^*}` than any other stored pattern;
* **threshold** (§5): the distance from :math:`\hat z` to :math:`M_{k^*}` is below a threshold.

A retrieval *succeeds* when both hold. Distances are root-mean-square over the ``D``
coordinates, :math:`\|\hat z - M_k\| / \sqrt{D}`, so that thresholds read the same in pixel
space (``D = C H W``) and latent space (``D = d``).
"""

import numbers
from dataclasses import dataclass

import torch

from pyromem.checks import as_int, as_real, check_device, check_dtype
from pyromem.data.validation import check_generator


def rms_distance(x, memory):
    r"""Root-mean-square distances :math:`\|x_b - M_k\| / \sqrt{D}` of every row to every pattern.

    :param torch.Tensor x: shape ``(B, D)``.
    :param torch.Tensor memory: shape ``(N, D)``.
    :returns: shape ``(B, N)``.
    """
    _check_vectors(x, "x")
    _check_vectors(memory, "memory")
    if x.shape[-1] != memory.shape[-1]:
        raise ValueError(
            f"x and memory must have the same width, got {tuple(x.shape)} and {tuple(memory.shape)}"
        )
    # torch.cdist would stop with "expected m1 and m2 to have the same dtype"
    check_dtype(x, "x", memory.dtype, "memory is")
    check_device(x, "x", memory.device, "memory is")
    return torch.cdist(x, memory) / x.shape[-1] ** 0.5


@dataclass
class Outcome:
    """Per-query results of :func:`retrieval_success`, each a bool tensor of shape ``(B,)``.

    :ivar nearest: the correct pattern is the nearest stored pattern.
    :ivar within: the distance to the correct pattern is below the threshold.
    :ivar success: both.
    :ivar distance: the RMS distance to the correct pattern, a float tensor ``(B,)``.
    """

    nearest: torch.Tensor
    within: torch.Tensor
    distance: torch.Tensor

    @property
    def success(self):
        return self.nearest & self.within


def retrieval_success(retrieved, memory, target, threshold):
    r"""The criteria of §5 for retrieved vectors.

    Ties count as failures: a retrieved vector equidistant from two patterns is not "nearer the
    correct pattern than any other".

    :param torch.Tensor retrieved: :math:`\hat z`, shape ``(B, D)``.
    :param torch.Tensor memory: the stored patterns, shape ``(N, D)``.
    :param torch.Tensor target: the index :math:`k^*` of each query's pattern, long ``(B,)``.
    :param float threshold: the largest RMS distance to :math:`M_{k^*}` that counts, ``> 0``.
    :rtype: Outcome
    """
    distance = rms_distance(retrieved, memory)
    _check_not_empty(memory, "memory")
    if not isinstance(target, torch.Tensor) or target.dtype != torch.long:
        raise TypeError(f"target must be a long tensor, got {getattr(target, 'dtype', target)}")
    if target.shape != retrieved.shape[:1]:
        raise ValueError(f"target must have shape ({len(retrieved)},), got {tuple(target.shape)}")
    if len(target) and not (0 <= target.min() and target.max() < len(memory)):
        raise ValueError(f"target must index the {len(memory)} stored patterns")
    threshold = check_threshold(threshold)
    correct = distance.gather(-1, target.to(distance.device)[:, None]).squeeze(-1)
    others = distance.scatter(-1, target.to(distance.device)[:, None], float("inf"))
    return Outcome(
        nearest=correct < others.min(-1).values, within=correct < threshold, distance=correct
    )


def check_threshold(threshold):
    """The threshold as a float; a one-line ``ValueError`` unless it is a finite real number
    ``> 0`` (a Python or NumPy float or int, not a bool or a tensor)."""
    return as_real(threshold, "threshold", positive=True)


def dot_product_winners(patterns):
    r"""Which stored patterns win their own dot-product read.

    Dot-product attention, :math:`\mathrm{softmax}(\beta\, M x)` (the MCHN of eq. 8, MemN2N
    with identity embeddings), reads at a large :math:`\beta` the pattern of the largest dot
    product with the query. Queried with :math:`x = M_k`, it returns :math:`M_k` only if
    :math:`M_k^\top M_k > M_k^\top M_j` for every :math:`j \ne k`; a pattern of small norm
    beside one of large norm in a similar direction loses. The fraction of winners is what
    such a read retrieves of clean queries in that limit, whatever the method's other settings.

    :param torch.Tensor patterns: the stored patterns ``(N, D)``.
    :returns: a bool tensor ``(N,)``; ties count as losses.
    """
    _check_vectors(patterns, "patterns")
    _check_not_empty(patterns, "patterns")
    scores = patterns @ patterns.mT
    own = scores.diagonal().clone()
    return own > scores.fill_diagonal_(float("-inf")).max(-1).values


def select_threshold(train_vectors, memory_size, fraction=0.5, generator=None):
    r"""A success threshold chosen on a training split: ``fraction`` of the median distance from
    a stored pattern to its nearest neighbour, in a memory of ``memory_size`` training patterns.

    With ``fraction = 0.5`` a retrieved vector within the threshold of one pattern is nearer it
    than any other pattern whose nearest-neighbour distance is typical.

    :param torch.Tensor train_vectors: training patterns in the method's space, ``(M, D)``.
    :param int memory_size: patterns per memory (clipped to ``M``), ``>= 2``.
    :param float fraction: in ``(0, 1]``.
    :param torch.Generator generator: draws the memory (CPU).
    :returns: the threshold, a float.
    """
    _check_vectors(train_vectors, "train_vectors")
    as_int(memory_size, "memory_size", 2, form="split")
    if len(train_vectors) < 2:
        raise ValueError(f"train_vectors must hold >= 2 patterns, got {len(train_vectors)}")
    if (
        isinstance(fraction, bool)
        or not isinstance(fraction, numbers.Real)
        or not 0 < float(fraction) <= 1
    ):
        raise ValueError(f"fraction must be a number in (0, 1], got {fraction!r}")
    size = min(memory_size, len(train_vectors))
    return fraction * median_nearest_distance(train_vectors, size, generator, "train_vectors")


def median_nearest_distance(vectors, size, generator=None, name="vectors"):
    """The median RMS distance from a pattern to its nearest other pattern, in a memory of
    ``size`` of the ``vectors`` ``(M, D)`` drawn by ``generator``: the unit of the thresholds and
    of the grids (:func:`select_threshold`, :func:`~pyromem.retrieval.selection.scale_unit`).

    :param int size: N, ``>= 2``, at most ``M``.
    :raises ValueError: naming ``name`` when the median is 0: more than half of
        the patterns of the memory have an exact copy in it (duplicated or constant images, an
        encoder that maps them to one code), which no threshold or σ can tell apart; a
        threshold or grid of 0 would be refused only when the first method reads, with a
        message about a threshold or σ the user did not give.
    """
    _check_vectors(vectors, name)
    check_generator(generator)
    as_int(size, "memory_size", 2, form="split")
    if not torch.isfinite(vectors).all():
        raise ValueError(f"{name} must be finite, got infinite values")
    index = torch.randperm(len(vectors), generator=generator)[:size]
    patterns = vectors[index.to(vectors.device)]
    distance = rms_distance(patterns, patterns).fill_diagonal_(float("inf"))
    median = distance.min(-1).values.median().item()
    if median == 0:
        raise ValueError(
            f"{name}: the median distance from a pattern to its nearest other pattern, in a "
            f"memory of {size}, is 0: more than half of the patterns have an exact copy in it "
            "(duplicated or constant images?), so no threshold or sigma can be chosen"
        )
    return median


def _check_not_empty(x, name):
    if len(x) == 0:
        raise ValueError(f"{name} must hold at least one pattern, got shape {tuple(x.shape)}")


def _check_vectors(x, name):
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"{name} must have shape (B, D), got {tuple(x.shape)}")
    if torch.isnan(x).any():
        raise ValueError(f"{name} must not contain NaN")
