"""Encoders: from an observation to the location and scale of a diagonal Gaussian over ``z``.

Both encoders accept inputs with any number of leading batch dims, so a guide
can encode a batch, a batch of particles or an enumerated batch alike::

    loc, scale = encoder(x)                              # x: batch_shape + input_shape
    pyro.sample("z", dist.Normal(loc, scale).to_event(1))
"""

import math

import torch.nn.functional as F
from torch import nn

from pyromem.checks import (
    as_positive_int,
    as_shape,
    as_sizes,
    check_net_input,
    flatten_batch,
)

from .conv_trunk import ConvTrunk

# A floor on the scale keeps log q(z|x) and its gradients bounded when the
# softplus saturates towards zero early in training.
MIN_SCALE = 1e-4


def _mlp(sizes):
    """Linear layers between consecutive ``sizes``, each followed by a ReLU."""
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
    return nn.Sequential(*layers)


class _GaussianHead(nn.Module):
    """A linear map from features to ``(loc, scale)``, with ``scale = softplus(.) + MIN_SCALE``."""

    def __init__(self, in_features, latent_dim):
        super().__init__()
        self.linear = nn.Linear(in_features, 2 * latent_dim)

    def forward(self, h):
        loc, raw_scale = self.linear(h).chunk(2, dim=-1)
        return loc, F.softplus(raw_scale) + MIN_SCALE


class MLPEncoder(nn.Module):
    """A fully connected encoder.

    :param tuple input_shape: the shape of one observation, e.g. ``(1, 28, 28)``.
    :param int latent_dim: the width of ``z``.
    :param tuple hidden: the widths of the hidden layers (ReLU).

    ``forward(x)`` maps ``x`` of shape ``batch_shape + input_shape`` to ``(loc, scale)``,
    each of shape ``batch_shape + (latent_dim,)``, with ``scale > 0``.
    """

    def __init__(self, input_shape, latent_dim, hidden=(400,)):
        super().__init__()
        self.input_shape = as_shape(input_shape, "input_shape")
        self.latent_dim = as_positive_int(latent_dim, "latent_dim")
        sizes = (math.prod(self.input_shape),) + as_sizes(hidden, "hidden")
        self.body = _mlp(sizes)
        self.head = _GaussianHead(sizes[-1], latent_dim)

    def forward(self, x):
        """
        :param torch.Tensor x: ``batch_shape + input_shape``.
        :returns: ``(loc, scale)``, each ``batch_shape + (latent_dim,)``.
        """
        h, batch_shape = flatten_batch(x, self.input_shape, "x")
        check_net_input(self, h, "x")
        loc, scale = self.head(self.body(h.flatten(1)))
        return loc.reshape(batch_shape + loc.shape[1:]), scale.reshape(batch_shape + loc.shape[1:])


class ConvEncoder(nn.Module):
    """A convolutional encoder: a Gaussian head on a :class:`~pyromem.nets.ConvTrunk`
    (stride-2 convolutions, then a hidden linear layer).

    Each convolution (kernel 4, stride 2, padding 1) halves the height and width,
    rounding down, so any image at least ``2 ** len(channels)`` pixels on a side
    works, e.g. 8×8, 16×16, 28×28, 32×32 and 64×64.

    :param tuple input_shape: the shape ``(C, H, W)`` of one image.
    :param int latent_dim: the width of ``z``.
    :param tuple channels: the output channels of the convolutions (ReLU).
    :param int hidden: the width of the linear layer after the convolutions (ReLU).

    ``forward(x)`` maps ``x`` of shape ``batch_shape + input_shape`` to ``(loc, scale)``,
    each of shape ``batch_shape + (latent_dim,)``, with ``scale > 0``.
    """

    def __init__(self, input_shape, latent_dim, channels=(32, 64), hidden=256):
        super().__init__()
        self.input_shape = as_shape(input_shape, "input_shape", ndim=3)
        self.latent_dim = as_positive_int(latent_dim, "latent_dim")
        channels = as_sizes(channels, "channels")
        hidden = as_positive_int(hidden, "hidden")
        self.body = ConvTrunk(self.input_shape, channels, features=hidden)
        self.head = _GaussianHead(hidden, latent_dim)

    def forward(self, x):
        """
        :param torch.Tensor x: ``batch_shape + input_shape``.
        :returns: ``(loc, scale)``, each ``batch_shape + (latent_dim,)``.
        """
        h, batch_shape = flatten_batch(x, self.input_shape, "x")
        check_net_input(self, h, "x")
        loc, scale = self.head(self.body(h))
        return loc.reshape(batch_shape + loc.shape[1:]), scale.reshape(batch_shape + loc.shape[1:])
