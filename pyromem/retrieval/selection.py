r"""Hyper-parameters chosen on a training split, never on the test queries (App. D).

App. D chooses "σ for GMM models, β for MCHN models, γ for the BP-GMM model ... to achieve the
highest successful retrieval percentage on the training set"; we choose the rate λ of the BP
models' gradient steps the same way. :func:`select_hyperparameters` does that: it runs the
protocol of :mod:`pyromem.retrieval.protocol` on memories drawn from
the *training* images, for every candidate of :data:`GRIDS`, and keeps the candidate with the
highest success rate averaged over the corruptions of the table (one value per method and
table). The threshold of the success criterion is chosen on the same training images by
:func:`~pyromem.retrieval.criteria.select_threshold`.

Grids are relative to the data: :math:`\sigma` candidates are multiples of the *unit*, the
median Euclidean distance from a training pattern to its nearest neighbour in a memory of N
(:func:`scale_unit`), and :math:`\beta = 1/\sigma^2` candidates likewise, so one grid serves
pixels (``D = 3072``) and codes (``D = 16``). The learning rates of MemN2N, VAE-NTM and
VAE-MemN2N are chosen as App. D says, by the lowest training loss (:data:`TRAINING_GRIDS`: a
run that diverges ends with a high loss and is not chosen); the other training settings are
fixed in :data:`~pyromem.retrieval.methods.DEFAULTS`. Ties in the success rate go to the candidate
whose reads land nearest the correct patterns.
"""

import itertools

import torch

from pyromem.checks import as_float_tensor, as_int, as_real
from pyromem.retrieval.criteria import median_nearest_distance
from pyromem.retrieval.methods import DEFAULTS, METHODS, build_method, check_method
from pyromem.retrieval.protocol import check_image_batch, evaluate_corruptions

_SIGMAS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0)
_BETAS = tuple(s**-2 for s in (1 / 64, 1 / 16, 1 / 4, 1.0, 4.0))
#: Candidate hyper-parameters, as multiples of the unit (σ) or of 1/unit² (β).
GRIDS = {
    "GMM": {"sigma": _SIGMAS},
    "Hopfield": {"beta": _BETAS},
    "VAE-GMM": {"sigma": _SIGMAS},
    "VAE-Hopfield": {"beta": _BETAS},
    "VAE-BP-GMM": {"sigma": (1 / 8, 1 / 2), "gamma": (1.0, 10.0, 100.0), "lr": (0.01, 0.1)},
    "VAE-BP-Hopfield": {"beta": (1.0, 16.0), "gamma": (1.0, 10.0, 100.0), "lr": (0.01, 0.1)},
}
#: Learning rates of the learned readers, chosen by the lowest final training loss (App. D).
TRAINING_GRIDS = {
    "MemN2N": (1e-4, 3e-4),
    "VAE-NTM": (3e-3, 1e-2, 5e-2),
    "VAE-MemN2N": (1e-4, 1e-3, 1e-2),
}
#: Relative σ of the methods with a σ but no grid (their precision is learned or iterated).
RELATIVE_SIGMA = 1 / 4
#: Seeds of the training memories are offset so that they never coincide with test seeds.
TRAIN_SEED_OFFSET = 10_000


def scale_unit(vectors, memory_size=100, generator=None):
    """The median Euclidean distance from a pattern to its nearest neighbour, in a memory of
    ``memory_size`` (clipped, ``>= 2``) of the given training vectors ``(M, D)``.

    :raises ValueError: when that median is 0 (see
        :func:`~pyromem.retrieval.criteria.median_nearest_distance`): every candidate σ would
        be 0.
    """
    as_float_tensor(vectors, "vectors", " (M, D)")
    as_int(memory_size, "memory_size", 2, form="split")
    size = min(memory_size, len(vectors))
    return median_nearest_distance(vectors, size, generator, "vectors") * vectors.shape[-1] ** 0.5


def candidates(name, unit):
    """The candidate hyper-parameter dicts of ``name`` in absolute units (a list, maybe ``[{}]``).

    :param str name: a method name.
    :param float unit: the output of :func:`scale_unit` in the method's space.
    """
    if not isinstance(name, str) or name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known methods are {list(METHODS)}")
    # the grids are multiples of the unit (β of 1/unit²): 0 or NaN would give candidates of 0,
    # inf or NaN, refused one by one as σ or β out of range
    unit = as_real(unit, "unit", positive=True)
    grid = GRIDS.get(name, {})
    if not grid and "sigma" in DEFAULTS[name]:
        return [{"sigma": RELATIVE_SIGMA * unit}]
    keys = list(grid)
    out = []
    for values in itertools.product(*(grid[k] for k in keys)):
        candidate = {}
        for key, value in zip(keys, values, strict=True):
            if key == "sigma":
                value = value * unit
            elif key == "beta":
                value = value / unit**2
            candidate[key] = value
        out.append(candidate)
    return out or [{}]


def select_hyperparameters(
    name,
    train_images,
    corruptions,
    *,
    threshold,
    unit,
    vae=None,
    memory_size=100,
    seeds=2,
    on_candidate=None,
):
    """Choose ``name``'s hyper-parameters on training images (never test queries).

    :param str name: a method name.
    :param torch.Tensor train_images: images of a training split ``(M, C, H, W)``.
    :param list corruptions: the corruption names the score averages over.
    :param float threshold: the criterion's threshold in the method's space.
    :param float unit: :func:`scale_unit` of the training vectors in the method's space.
    :param vae: the trained VAE of the ``VAE-*`` methods.
    :param int memory_size: N of the training memories (clipped to ``M``).
    :param int seeds: training memories per candidate and corruption.
    :param on_candidate: optional ``on_candidate(done, total, score)``, called after each
        candidate with its entry of ``scores``.
    :returns: ``(chosen, scores)``: the chosen dict and a list of
        ``{"hyperparameters", "train_success", "train_distance"}`` for every candidate; the
        highest success rate is chosen, and among equals the lowest mean RMS distance of the
        reads to the correct patterns. A lone candidate is returned unscored, with ``[]``.
    """
    check_image_batch(train_images, "train_images")
    check_method(name, tuple(train_images.shape[1:]), vae)
    if on_candidate is not None and not callable(on_candidate):
        # it is first called after a candidate's evaluation
        raise TypeError(
            f"on_candidate: expected a callable or None, got {type(on_candidate).__name__}"
        )
    options = candidates(name, unit)
    if len(options) == 1:
        return options[0], []
    memory_size = min(memory_size, len(train_images))
    image_shape = tuple(train_images.shape[1:])
    scores = []
    for candidate in options:
        method = build_method(name, image_shape, vae, **candidate)
        rates = evaluate_corruptions(
            method,
            train_images,
            corruptions,
            memory_size,
            seeds,
            threshold,
            seed_offset=TRAIN_SEED_OFFSET,
        )
        scores.append(
            {
                "hyperparameters": candidate,
                "train_success": _mean_over_corruptions(rates, "success"),
                "train_distance": _mean_over_corruptions(rates, "distance"),
            }
        )
        if on_candidate is not None:
            on_candidate(len(scores), len(options), scores[-1])
    # Ties in the success rate (every candidate of VAE-BP-GMM retrieves all clean training
    # queries) go to the candidate whose reads land nearest the correct patterns.
    best = max(
        range(len(scores)),
        key=lambda i: (scores[i]["train_success"], -scores[i]["train_distance"]),
    )
    return scores[best]["hyperparameters"], scores


def _mean_over_corruptions(rates, key):
    # the mean over corruptions of each corruption's mean over seeds
    per_corruption = [torch.tensor(getattr(rate, key)).mean() for rate in rates.values()]
    return torch.stack(per_corruption).mean().item()
