"""Likelihood heads: from decoder outputs to the distribution of the observation ``"x"``.

A model samples its observation as::

    params = decoder(z)                                  # batch_shape + likelihood.param_shape
    pyro.sample("x", likelihood(params), obs=x)          # batch_shape + likelihood.event_shape

so the decoder's output shape and the data's support are read off the head, and
swapping a Bernoulli for a discretized logistic mixture touches one argument.
"""

import math
import numbers

import pyro.distributions as dist
import torch
from torch import nn

from pyromem.checks import as_positive_int, as_shape, batch_shape_of, check_device

from .discretized_logistic import DiscretizedLogisticMixture, num_params


class Likelihood(nn.Module):
    """Maps decoder outputs of shape ``batch_shape + param_shape`` to a Pyro
    distribution with ``batch_shape`` batch dims and ``event_shape == self.event_shape``.

    ``batch_shape`` may have any number of dims (data, vectorised particles,
    parallel enumeration).

    :ivar event_shape: the shape of one observation, e.g. ``(1, 28, 28)``, a ``torch.Size``.
    :ivar param_shape: what the decoder must output per datapoint, a ``torch.Size``.
    :ivar support: the data the head can score, a str in the vocabulary of
        :func:`pyromem.data.validation.check_images`: ``"binary"``, ``"real"``, ``"8bit"`` or
        ``"N-level"``.
    """

    support = None

    def __init__(self, event_shape, param_shape):
        super().__init__()
        self.event_shape = event_shape
        self.param_shape = param_shape

    def forward(self, params):
        """
        :param torch.Tensor params: decoder outputs of shape ``batch_shape + param_shape``.
        :rtype: pyro.distributions.TorchDistribution
        :raises ValueError: if the trailing dims of ``params`` are not ``param_shape``.
        """
        batch_shape_of(params, self.param_shape, "params")
        return self._distribution(params)

    def _distribution(self, params):
        raise NotImplementedError

    def extra_repr(self):
        return f"event_shape={tuple(self.event_shape)}"


class BernoulliLikelihood(Likelihood):
    """Independent Bernoulli pixels with logits ``params``, for binary data.

    :param tuple event_shape: the shape of one observation; ``param_shape == event_shape``.
    """

    support = "binary"

    def __init__(self, event_shape):
        event_shape = as_shape(event_shape, "event_shape")
        super().__init__(event_shape, event_shape)

    def _distribution(self, params):
        return dist.Bernoulli(logits=params).to_event(len(self.event_shape))


class GaussianLikelihood(Likelihood):
    """Independent Gaussian pixels with mean ``params``, for real-valued data.

    :param tuple event_shape: the shape ``(C, ...)`` of one observation;
        ``param_shape == event_shape``.
    :param float scale: a fixed standard deviation, or ``None`` to learn one
        log-scale per channel (the parameter ``log_scale`` of shape ``(C, 1, ...)``,
        initialised at scale 1).
    """

    support = "real"

    def __init__(self, event_shape, scale=None):
        event_shape = as_shape(event_shape, "event_shape")
        super().__init__(event_shape, event_shape)
        if scale is None:
            # Broadcasts against the trailing dims of each channel.
            shape = (event_shape[0],) + (1,) * (len(event_shape) - 1)
            self.log_scale = nn.Parameter(torch.zeros(shape))
        else:
            if not isinstance(scale, numbers.Real) or isinstance(scale, bool):
                raise TypeError(f"scale must be a float or None, got {type(scale).__name__}")
            if not (math.isfinite(scale) and scale > 0):
                raise ValueError(f"scale must be a positive finite float or None, got {scale}")
            self.log_scale = None
            self.fixed_scale = float(scale)

    @property
    def scale(self):
        """The standard deviation: a float if fixed, else a tensor of shape ``(C, 1, ...)``."""
        return self.fixed_scale if self.log_scale is None else self.log_scale.exp()

    def _distribution(self, params):
        if self.log_scale is not None:
            check_device(params, "params", self.log_scale.device, "the learned scale is")
        return dist.Normal(params, self.scale).to_event(len(self.event_shape))

    def extra_repr(self):
        learned = "learned" if self.log_scale is not None else self.fixed_scale
        return f"{super().extra_repr()}, scale={learned}"


class DiscretizedLogisticMixtureLikelihood(Likelihood):
    """The discretized logistic mixture of PixelCNN++, for 8-bit images.

    See :class:`~pyromem.nets.discretized_logistic.DiscretizedLogisticMixture` for
    the density and the layout of the ``P = K + 2KC + KC(C-1)/2`` parameter channels.

    :param tuple event_shape: the shape ``(C, H, W)`` of one image (or ``(C,) + spatial``).
    :param int num_mixtures: the number ``K`` of logistic components per pixel.
    :param int num_bins: the number of levels per channel (256 for 8-bit data): its data are
        k/(num_bins - 1), support ``"8bit"`` for 256 and ``"N-level"`` for N bins otherwise.
    """

    support = "8bit"

    def __init__(self, event_shape, num_mixtures=5, num_bins=256):
        event_shape = as_shape(event_shape, "event_shape")
        num_mixtures = as_positive_int(num_mixtures, "num_mixtures")
        num_bins = as_positive_int(num_bins, "num_bins")
        if num_bins < 2:
            raise ValueError(f"num_bins must be at least 2, got {num_bins}")
        param_shape = torch.Size((num_params(event_shape[0], num_mixtures),)) + event_shape[1:]
        super().__init__(event_shape, param_shape)
        self.num_mixtures = num_mixtures
        self.num_bins = num_bins
        if num_bins != 256:
            self.support = f"{num_bins}-level"

    def _distribution(self, params):
        return DiscretizedLogisticMixture(params, self.event_shape, self.num_bins)

    def extra_repr(self):
        return f"{super().extra_repr()}, num_mixtures={self.num_mixtures}, num_bins={self.num_bins}"


LIKELIHOODS = {
    "bernoulli": BernoulliLikelihood,
    "gaussian": GaussianLikelihood,
    "discretized_logistic_mixture": DiscretizedLogisticMixtureLikelihood,
    "dlm": DiscretizedLogisticMixtureLikelihood,
}


def make_likelihood(name, event_shape, **kwargs):
    """Build a likelihood head by name.

    :param str name: one of ``"bernoulli"``, ``"gaussian"``,
        ``"discretized_logistic_mixture"`` (alias ``"dlm"``).
    :param tuple event_shape: the shape of one observation, e.g. ``(1, 28, 28)``.
    :param kwargs: passed to the head's constructor, e.g. ``scale=0.1`` or ``num_mixtures=10``.
    :rtype: Likelihood
    :raises ValueError: if ``name`` is unknown.
    """
    if not isinstance(name, str) or name not in LIKELIHOODS:
        raise ValueError(f"likelihood name must be one of {sorted(LIKELIHOODS)}, got {name!r}")
    return LIKELIHOODS[name](event_shape, **kwargs)


def typical_image(distribution):
    """An image to show for a likelihood: its mean, or a draw where it has no closed-form mean.

    The discretized logistic mixture has no closed-form mean (its channels depend on each
    other through the PixelCNN++ coefficients), so figures show a draw of it instead.

    :param distribution: a distribution returned by a :class:`Likelihood`.
    :returns: a tensor of shape ``batch_shape + event_shape``.
    """
    try:
        return distribution.mean
    except NotImplementedError:
        return distribution.sample()
