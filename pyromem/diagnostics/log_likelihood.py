"""Importance-sampled log-likelihood (the IWAE-K bound) with its effective sample size.

With K draws z_k ~ q(z | x) and weights w_k = p(x, z_k) / q(z_k | x),

    L_K = log (1/K) Σ_k w_k,   E[L_K] ≤ log p(x),

whose expectation increases with K and tends to log p(x) (Burda et al. 2016). The
effective sample size ESS = (Σ_k w_k)² / Σ_k w_k² (Kong 1992) says how many
draws carry the estimate: near K when the guide matches the posterior, near 1
when one weight dominates.

The K draws are taken in chunks of vectorised particles, so that K = 1000 fits
in memory, and combined with log-sum-exp.
"""

import math
from dataclasses import dataclass

import torch

from pyromem.checks import as_int
from pyromem.diagnostics.particles import (
    is_point_guide,
    log_ratio,
    max_plate_nesting,
    observed_scalars,
    particle_traces,
    particle_validation,
    trial_traces,
)
from pyromem.diagnostics.units import bits_per_dim
from pyromem.infer.traces import plate_nesting


@dataclass
class ImportanceLogLikelihood:
    """Per-datapoint importance-sampled bound.

    :ivar log_likelihood: L_K per datapoint in nats, a tensor ``(B,)``.
    :ivar ess: the effective sample size per datapoint, a tensor ``(B,)``.
    :ivar num_samples: K, an int.
    :ivar num_dims: observed scalars per datapoint (for bits/dim), an int.
    """

    log_likelihood: torch.Tensor
    ess: torch.Tensor
    num_samples: int
    num_dims: int

    @property
    def bits_per_dim(self):
        """−L_K in bits per observed dim, shape ``(B,)``."""
        return bits_per_dim(self.log_likelihood, self.num_dims)

    def summary(self):
        """Means over the datapoints as plain floats."""
        return {
            "log_likelihood_nats": self.log_likelihood.mean().item(),
            "bits_per_dim": self.bits_per_dim.mean().item(),
            "ess": self.ess.mean().item(),
            "num_samples": self.num_samples,
        }


def log_importance_weights(model, guide, x, num_particles, plate_nesting=None, **kwargs):
    """log p(x, z_k) − log q(z_k | x) for ``num_particles`` guide draws.

    :param callable model: a Pyro model called as ``model(x, **kwargs)``, whose sites lie in
        ``pyro.plate("data", ...)``.
    :param callable guide: the proposal q(z | x), a guide for ``model``.
    :param torch.Tensor x: a batch of B datapoints.
    :param int num_particles: K ≥ 1, the guide draws, in one vectorised pass.
    :param int plate_nesting: the model's plate nesting (≥ 1: the data plate), or ``None`` to
        find it (and check the model and guide) by a trial run.
    :returns: a tensor of shape ``(num_particles, B)`` and the number of
        observed scalars per datapoint.
    """
    as_int(num_particles, "num_particles", 1)
    as_int(plate_nesting, "plate_nesting", 1, allow_none=True)
    validated = plate_nesting is None
    if validated:
        plate_nesting = max_plate_nesting(model, guide, (x,), kwargs)
    return _draw(model, guide, x, num_particles, plate_nesting, kwargs, validated=validated)


def _draw(model, guide, x, num_particles, plate_nesting, kwargs, keep_dims=False, validated=True):
    with particle_validation(validated):
        traces = particle_traces(model, guide, (x,), kwargs, num_particles, plate_nesting)
        return _log_weights(*traces, plate_nesting, len(x), keep_dims)


def _log_weights(model_trace, guide_trace, plate_nesting, batch, keep_dims):
    log_weight = log_ratio(model_trace, guide_trace, plate_nesting, keep_dims=keep_dims)
    num_dims = observed_scalars(model_trace, batch)
    if keep_dims:
        # a trial trace has no particle dim: it is one draw
        rank = plate_nesting + 1
        log_weight = log_weight.reshape((1,) * (rank - log_weight.dim()) + log_weight.shape)
    else:
        # per datapoint already (log_ratio): (draws or 1, B or 1), whatever the plate nesting
        log_weight = log_weight.expand(log_weight.shape[0], batch)
    return log_weight, num_dims


# Observed scalars per vectorised pass when no chunk size is given, by device type. On a CPU a
# pass of about 2**20 stays in cache and in malloc's heap, where larger tensors get fresh
# zeroed pages from the kernel each time: IWAE ran 1.6x faster than at 100 draws a pass, on
# MNIST-sized and on 32x32 colour images (`patches`), with system time falling from over half
# of it to a fifth. Elsewhere 2**24, about 100 draws of 256 MNIST images.
PASS_SCALARS = {"cpu": 2**20}


def draws_per_pass(x, num_dims):
    """The draws of one vectorised pass over the batch ``x`` that keep it near
    :data:`PASS_SCALARS` observed scalars on ``x``'s device (at least one).

    :param torch.Tensor x: the batch, B datapoints.
    :param int num_dims: observed scalars per datapoint.
    """
    budget = PASS_SCALARS.get(x.device.type, 2**24)
    return max(1, budget // (len(x) * num_dims))


def check_on_pass(on_pass):
    """A :class:`TypeError` naming ``on_pass`` unless it is ``None`` or callable."""
    if on_pass is not None and not callable(on_pass):
        raise TypeError(
            f"on_pass must be callable as on_pass(done, num_samples) or None, "
            f"got {type(on_pass).__name__} {on_pass!r:.40}"
        )


def chunked_log_weights(
    model, guide, x, num_samples, chunk_size=None, keep_dims=False, on_pass=None, **kwargs
):
    """:func:`log_importance_weights` of ``num_samples`` draws, ``chunk_size`` per vectorised
    pass, without gradients: the one loop of every IWAE-K estimate here.

    The first draw is the trial run that finds the plate nesting (and checks the arguments,
    :func:`~pyromem.diagnostics.particles.trial_traces`); the other K − 1 are drawn in chunks
    and joined along the draws' dim.

    :param chunk_size: draws per pass; memory grows with ``chunk_size × B``. ``None``:
        :func:`draws_per_pass`.
    :param bool keep_dims: keep the dims of every plate (as :func:`~pyromem.diagnostics.
        particles.log_ratio` does), for bounds on finer units than the datapoint, such as the
        images of a Kanerva++ episode.
    :param on_pass: optional ``on_pass(done, num_samples)``, called after every pass with the
        draws taken so far (the trial draw is the first pass): progress for long estimates.
    :returns: the log-weights, shape ``(num_samples, B)`` (with ``keep_dims``, the draws
        followed by the plates' dims), and the number of observed scalars per datapoint.
    :raises TypeError: if ``on_pass`` is not callable (before any draw).
    :raises ValueError: if the model has no observed site or the guide lacks one of its
        latent sites (:func:`~pyromem.diagnostics.particles.check_sites`), or if the guide is
        a point mass at one of them (its weight would be log p(x, ẑ), no bound on log p(x)).
    """
    check_on_pass(on_pass)
    with torch.no_grad():
        trial = trial_traces(model, guide, (x,), kwargs)
        if is_point_guide(*trial):
            raise ValueError(
                "guide: a point mass (e.g. a MAP refinement) has no density to weight by: its "
                "IWAE would be log p(x, ẑ), no bound on log p(x); use a guide with a density"
            )
        nesting = plate_nesting(*trial)
        log_weight, num_dims = _log_weights(*trial, nesting, len(x), keep_dims)
        if chunk_size is None:
            chunk_size = draws_per_pass(x, num_dims)
        chunks, remaining = [log_weight], num_samples - 1
        while True:
            if on_pass is not None:
                on_pass(num_samples - remaining, num_samples)
            if remaining == 0:
                break
            k = min(chunk_size, remaining)
            chunks.append(_draw(model, guide, x, k, nesting, kwargs, keep_dims)[0])
            remaining -= k
        return torch.cat(chunks), num_dims


def importance_bound(log_weight):
    """The IWAE-K bound and the effective sample size of K log-weights (draws at dim 0).

    :returns: ``(log (1/K) Σ_k w_k, (Σ_k w_k)² / Σ_k w_k²)``, each of the shape of one draw.
    """
    lse = torch.logsumexp(log_weight, 0)
    ess = torch.exp(2 * lse - torch.logsumexp(2 * log_weight, 0))
    return lse - math.log(log_weight.shape[0]), ess


def log_likelihood(model, guide, x, num_samples=1000, chunk_size=None, on_pass=None, **kwargs):
    """The IWAE-K estimate of log p(x) per datapoint, K = ``num_samples``.

    :param callable model: a Pyro model called as ``model(x, **kwargs)``, whose
        sites lie in ``pyro.plate("data", ...)``.
    :param callable guide: the proposal q(z | x), a guide for ``model``.
    :param torch.Tensor x: a batch of B datapoints.
    :param int num_samples: K, the number of importance samples per datapoint.
    :param chunk_size: how many samples are drawn in one vectorised pass;
        memory grows with ``chunk_size × B``. ``None``: as many as keep a pass near
        :data:`PASS_SCALARS` observed scalars (:func:`draws_per_pass`).
    :param on_pass: optional ``on_pass(done, num_samples)``, called after every pass with the
        draws taken so far (:func:`chunked_log_weights`).
    :param kwargs: the model's and guide's other keyword arguments.
    :rtype: ImportanceLogLikelihood
    """
    as_int(num_samples, "num_samples", 1)
    as_int(chunk_size, "chunk_size", 1, allow_none=True)
    log_weight, num_dims = chunked_log_weights(
        model, guide, x, num_samples, chunk_size, on_pass=on_pass, **kwargs
    )
    bound, ess = importance_bound(log_weight)
    return ImportanceLogLikelihood(
        log_likelihood=bound,
        ess=ess,
        num_samples=num_samples,
        num_dims=num_dims,
    )
