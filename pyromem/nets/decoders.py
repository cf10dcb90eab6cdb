"""Decoders: from ``z`` to the parameters of a likelihood head.

A decoder is sized by the head it feeds, so that its outputs always fit::

    likelihood = make_likelihood("bernoulli", (1, 28, 28))
    decoder = ConvDecoder(latent_dim, likelihood.param_shape)
    pyro.sample("x", likelihood(decoder(z)), obs=x)      # z: batch_shape + (latent_dim,)
"""

import math

from torch import nn

from pyromem.checks import (
    as_positive_int,
    as_shape,
    as_sizes,
    check_net_input,
    flatten_batch,
)

from .mlp import MLP


class MLPDecoder(MLP):
    """A fully connected decoder: the :class:`~pyromem.nets.MLP` from ``z`` to a likelihood
    head's parameters.

    :param int latent_dim: the width of ``z``.
    :param tuple param_shape: the shape of the parameters per datapoint, e.g.
        ``likelihood.param_shape``.
    :param tuple hidden: the widths of the hidden layers (ReLU).

    ``forward(z)`` maps ``z`` of shape ``batch_shape + (latent_dim,)`` to parameters
    of shape ``batch_shape + param_shape`` (unconstrained: logits, means, ...).
    """

    input_name = "z"

    def __init__(self, latent_dim, param_shape, hidden=(400,)):
        super().__init__(
            as_positive_int(latent_dim, "latent_dim"), as_shape(param_shape, "param_shape"), hidden
        )
        self.latent_dim, self.param_shape = self.in_features, self.out_shape


class ConvDecoder(nn.Module):
    """A convolutional decoder: a linear map to a small feature map, then stride-2
    transposed convolutions up to the height and width of ``param_shape``.

    Each transposed convolution (kernel 4, stride 2, padding 1) doubles the height
    and width; a kernel divisible by the stride avoids checkerboard artefacts
    (Odena et al., "Deconvolution and Checkerboard Artifacts", Distill 2016). The
    feature map starts at ``ceil(H / 2 ** L)`` by ``ceil(W / 2 ** L)`` for ``L``
    layers and the output is cropped to exactly ``H`` by ``W``, so any size works,
    e.g. 8×8, 16×16, 28×28, 32×32 and 64×64.

    :param int latent_dim: the width of ``z``.
    :param tuple param_shape: the shape ``(P, H, W)`` of the parameters per image,
        e.g. ``likelihood.param_shape``.
    :param tuple channels: the channels of the feature map and of each transposed
        convolution's output but the last, which has ``P`` (ReLU between layers).
    :param int hidden: the width of the hidden linear layer (ReLU).

    ``forward(z)`` maps ``z`` of shape ``batch_shape + (latent_dim,)`` to parameters
    of shape ``batch_shape + param_shape`` (unconstrained: logits, means, ...).
    """

    def __init__(self, latent_dim, param_shape, channels=(64, 32), hidden=256):
        super().__init__()
        self.latent_dim = as_positive_int(latent_dim, "latent_dim")
        self.param_shape = as_shape(param_shape, "param_shape", ndim=3)
        channels = as_sizes(channels, "channels")
        if not channels:
            raise ValueError("channels must name at least one feature map, got ()")
        hidden = as_positive_int(hidden, "hidden")
        p, h, w = self.param_shape
        scale = 2 ** len(channels)
        start = (channels[0], -(-h // scale), -(-w // scale))
        layers = [
            nn.Linear(self.latent_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, math.prod(start)),
            nn.ReLU(),
            nn.Unflatten(1, start),
        ]
        for c_in, c_out in zip(channels[:-1], channels[1:], strict=True):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1), nn.ReLU()]
        # No non-linearity after the last layer: the parameters are unconstrained.
        layers.append(nn.ConvTranspose2d(channels[-1], p, 4, stride=2, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, z):
        """
        :param torch.Tensor z: ``batch_shape + (latent_dim,)``.
        :returns: parameters of shape ``batch_shape + param_shape``.
        """
        h, batch_shape = flatten_batch(z, (self.latent_dim,), "z")
        check_net_input(self, h, "z")
        _, height, width = self.param_shape
        params = self.body(h)[..., :height, :width]
        return params.reshape(batch_shape + self.param_shape)
