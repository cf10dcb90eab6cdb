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

from pyromem.checks import as_float_tensor, as_int
from pyromem.data.validation import check_generator
from pyromem.retrieval.corruptions import check_corruptions, corrupt, parse_corruption
from pyromem.retrieval.criteria import check_threshold, retrieval_success
from pyromem.retrieval.methods import Method, check_vae_images

#: About how many numbers one batched read may hold (memories and queries of S seeds, and
#: their S × N × N responsibilities); more seeds than fit are read in several batches.
BATCH_ELEMENTS = 2**24


def check_image_batch(images, name, image_shape=None, why=""):
    """Raise a one-line error naming ``name`` unless ``images`` is a floating-point batch of
    images ``(M, C, H, W)``, of ``image_shape`` ``(C, H, W)`` when given: the check of the
    entry points, before the readers flatten the images and fail on a shape several calls
    deep, or, worse, read images of another size without a word.

    :param images: the argument.
    :param str name: its name in the message.
    :param tuple image_shape: the ``(C, H, W)`` required, or ``None`` for any.
    :param str why: appended to the expected shape, e.g. which method requires it.
    :raises TypeError: if ``images`` is not a floating-point tensor.
    :raises ValueError: if it has the wrong shape.
    """
    as_float_tensor(images, name, " of images (M, C, H, W)")
    if image_shape is None:
        expected, fits = "(M, C, H, W)", images.dim() == 4
    else:
        expected = f"(M, {', '.join(map(str, image_shape))})"
        fits = images.dim() == 4 and tuple(images.shape[1:]) == tuple(image_shape)
    if not fits:
        raise ValueError(f"{name} must have shape {expected}{why}, got {tuple(images.shape)}")


def check_names(names, name, what):
    """Raise a one-line error naming ``name`` unless ``names`` is a non-empty list (or tuple)
    of distinct strings; returns it as a list. A lone string would be read letter by letter,
    and a name given twice would run twice and keep one result (or, in
    :func:`evaluate_corruptions`, mix two cells' seeds).

    :param str what: what the names are, e.g. ``"corruption names"``.
    """
    if isinstance(names, str) or not isinstance(names, (list, tuple)):
        raise TypeError(f"{name} must be a list of {what}, got {type(names).__name__} {names!r}")
    if not names:
        raise ValueError(f"{name} must not be empty: give at least one of the {what}")
    for item in names:
        if not isinstance(item, str):
            raise TypeError(f"{name} must hold {what} (str), got {type(item).__name__} {item!r}")
    twice = sorted({item for item in names if names.count(item) > 1})
    if twice:
        raise ValueError(f"{name}: each may be given once, got {', '.join(twice)} more than once")
    return list(names)


def check_query_images(images, name, corruptions):
    """Raise a one-line ``ValueError`` naming ``name`` unless ``images`` are finite and, when a
    corruption other than ``clean`` makes the queries, in [0, 1] as the corruptions require
    (checked here, before any read, rather than by the first corruption or distance after
    work).

    :param torch.Tensor images: a floating-point batch (see :func:`check_image_batch`).
    :param list corruptions: the corruption names the images will be queried with.
    """
    if not torch.isfinite(images).all():
        raise ValueError(f"{name} must be finite, got NaN or infinite values")
    if any(c != "clean" for c in corruptions) and len(images):
        low, high = images.min().item(), images.max().item()
        if low < 0 or high > 1:
            raise ValueError(
                f"{name} must take values in [0, 1] to be corrupted by "
                f"{[c for c in corruptions if c != 'clean']}, got values in [{low:.4g}, "
                f"{high:.4g}] (e.g. images / 255.)"
            )


def sample_memory(num_images, memory_size, generator=None):
    """Indices of a memory: ``memory_size`` distinct images out of ``num_images``.

    :returns: a long tensor ``(memory_size,)`` on the CPU.
    """
    check_generator(generator)
    _check_memory_size(num_images, memory_size)
    return torch.randperm(num_images, generator=generator)[:memory_size]


@dataclass
class Rates:
    """Per-seed rates (in %) of one method on one corruption.

    :ivar success: both criteria, a list with one rate per seed.
    :ivar nearest: the nearest-pattern rate, a list with one rate per seed.
    :ivar within: the threshold rate, a list with one rate per seed.
    :ivar distance: the mean RMS distance of the retrieved vectors to the correct patterns, a
        list with one value per seed.
    """

    success: list = field(default_factory=list)
    nearest: list = field(default_factory=list)
    within: list = field(default_factory=list)
    distance: list = field(default_factory=list)

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
    :param torch.Tensor images: the images to draw memories from ``(M, C, H, W)``, with
        ``(C, H, W)`` the ``image_shape`` the method was built for.
    :param str corruption: a name of :mod:`pyromem.retrieval.corruptions`.
    :param int memory_size: N, ``>= 2`` and at most ``len(images)``.
    :param int seeds: number of memories; seed ``seed_offset + s`` for ``s < seeds``.
    :param float threshold: the threshold of the criterion in the method's space (RMS distance),
        ``> 0``.
    :param int seed_offset: the first seed, ``>= 0``.
    :rtype: Rates
    :raises ValueError: before any read, on an argument that cannot run (see
        :func:`evaluate_corruptions`).
    """
    return evaluate_corruptions(
        method, images, [corruption], memory_size, seeds, threshold, seed_offset
    )[corruption]


def evaluate_corruptions(
    method, images, corruptions, memory_size=100, seeds=10, threshold=None, seed_offset=0
):
    """:func:`evaluate` on several corruptions, the memories of all read together.

    The memories and queries of every (corruption, seed) are those :func:`evaluate` draws, and
    the method reads as many of them at once as :data:`BATCH_ELEMENTS` allows
    (:meth:`~pyromem.retrieval.methods.Method.retrieve_many`).

    :param list corruptions: corruption names, each once.
    :returns: ``{corruption: Rates}``.
    :raises ValueError: before any read: images of another shape than the method's, or
        non-finite, or outside [0, 1] for a corruption other than ``clean``; a corruption the
        images do not allow; a threshold that is not a positive number; seeds, seed_offset or
        memory_size out of range (N >= 2); images a ``VAE-*`` method's VAE cannot read (see
        :func:`~pyromem.retrieval.methods.check_vae_images`).
    :raises TypeError: a ``method`` that is not a :class:`~pyromem.retrieval.methods.Method`.
    """
    if not isinstance(method, Method):
        raise TypeError(
            "method must be a Method, e.g. build_method(name, image_shape), got "
            f"{type(method).__name__}"
        )
    check_image_batch(
        images, "images", method.image_shape, f", the image_shape {method.name} was built for"
    )
    as_int(seeds, "seeds", 1)
    as_int(seed_offset, "seed_offset", 0, form="split")
    if threshold is None:
        raise ValueError("threshold is required: choose it on a training split (select_threshold)")
    threshold = check_threshold(threshold)
    corruptions = check_names(corruptions, "corruptions", "corruption names")
    for name in corruptions:
        parse_corruption(name)
    check_corruptions(corruptions, method.image_shape)
    # N = 1 would count every read as nearest its pattern, the only one stored
    as_int(memory_size, "memory_size", 2, form="split")
    _check_memory_size(len(images), memory_size)
    check_query_images(images, "images", corruptions)
    check_vae_images([method.name], getattr(method, "vae", None), images, "images")
    seed_range = range(seed_offset, seed_offset + seeds)
    cells = [(name, seed) for name in corruptions for seed in seed_range]
    per_read = max(1, BATCH_ELEMENTS // (memory_size * (images[0].numel() + memory_size)))
    rates = {name: Rates() for name in corruptions}
    target = None
    for first in range(0, len(cells), per_read):
        chunk = cells[first : first + per_read]
        stored, queries = [], []
        for name, seed in chunk:
            generator = torch.Generator().manual_seed(seed)
            index = sample_memory(len(images), memory_size, generator).to(images.device)
            stored.append(images[index])
            queries.append(corrupt(stored[-1], name, generator=generator))
        # The arguments are checked above and the images are the caller's own: the
        # distributions' value checks would re-check every iterate (about a third of the
        # cost of VAE-BP-GMM), as the training engine also skips them after one check.
        with pyro.validation_enabled(False):
            retrieved, memory = method.retrieve_many(torch.stack(queries), torch.stack(stored))
        if target is None:
            target = torch.arange(memory_size, device=memory.device)
        for (name, _), found, patterns in zip(chunk, retrieved, memory, strict=True):
            outcome = retrieval_success(found, patterns, target, threshold)
            for rate, hits in (
                ("success", outcome.success),
                ("nearest", outcome.nearest),
                ("within", outcome.within),
            ):
                # exact shares of the N queries (a float32 mean gives 69.9999988 for 70 %)
                getattr(rates[name], rate).append(100.0 * hits.sum().item() / hits.numel())
            rates[name].distance.append(outcome.distance.mean().item())
    return rates


def _check_memory_size(num_images, memory_size):
    as_int(memory_size, "memory_size", 1)
    if memory_size > num_images:
        raise ValueError(f"memory_size {memory_size} exceeds the {num_images} images available")


def _mean_std(values):
    # the sample std (ddof = 1) over seeds, 0 for one seed
    values = torch.tensor(values, dtype=torch.float64)
    std = values.std().item() if len(values) > 1 else 0.0
    return {"mean": values.mean().item(), "std": std}
