"""Conv nets conditioned on a memory slot: VMA's Omniglot nets (Bornschein et al. 2017, §4.2).

One downscaling stack D embeds images: six 3×3 convolutions of ``channels``
feature maps, stride 2 on every second layer, so D(m) holds feature maps at
three resolutions (H/2, H/4 and H/8, rounding up). D is *tied*: one module
(one set of parameters) embeds the slot m_a in q(z | x, m_a), in p(z | m_a),
in the addressing embedding and in the skip connections of p(x | z, m_a),
and embeds x in q(z | x, m_a) and in h^q(x), as §4.2 ties the downscaling
layers "to reduce overfitting"::

    down = DownscalingStack((1, 28, 28), channels=64)
    encoder = ConvMemoryEncoder(down, latent_dim=64)             # q(z | x, m_a)
    prior = nn.Sequential(TopFeatures(down), MLPEncoder((down.top_features,), 64))
    decoder = ConvMemoryDecoder(down, 64, likelihood.param_shape)  # p(x | z, m_a)

Every net broadcasts over leading batch dims: the enumerated address puts a
dim of size |M| in front of the slots, the data plate's dim of size B in
front of x, and the nets combine the two only after the convolutions of D,
so D runs on |M| slots and B images, not on |M| × B pairs.
"""

import math

import torch
from torch import nn

from pyromem.checks import (
    as_positive_int,
    as_shape,
    as_sizes,
    batch_shape_of,
    broadcast_batch,
    check_net_input,
    flatten_batch,
)

from .encoders import MLPEncoder

LEVELS = 3  # three stride-2 stages: 6 layers, stride 2 on every second (§4.2)


def _halve(size):
    # a 3×3 convolution with stride 2 and padding 1 maps n pixels to ceil(n / 2)
    return -(-size // 2)


def _check_down(down):
    # the image shape, the input shape or a plain conv net given for D would fail only at the
    # first call (or at once with "'tuple' object has no attribute 'top_features'")
    if not isinstance(down, DownscalingStack):
        raise TypeError(
            f"down must be a DownscalingStack, e.g. DownscalingStack((1, 28, 28)), "
            f"got {type(down).__name__}"
        )
    return down


class DownscalingStack(nn.Module):
    """D: six 3×3 convolutions (padding 1, ELU), stride 2 on layers 2, 4 and 6 (§4.2).

    :param tuple input_shape: the shape ``(C, H, W)`` of one image (or slot).
    :param int channels: the feature maps of every layer (§4.2: 48 or 64).
    :raises TypeError: if ``input_shape`` is not a tuple of ints or ``channels`` not an int.
    :raises ValueError: if ``input_shape`` is not 3 positive dims or ``channels`` not positive.

    ``forward(m)`` maps ``m`` of shape ``batch_shape + input_shape`` to a list of
    three feature maps, ``batch_shape + shapes[l]``, at heights and widths
    ``ceil(H / 2)``, ``ceil(H / 4)`` and ``ceil(H / 8)`` (e.g. 14, 7, 4 for 28).
    """

    def __init__(self, input_shape, channels=64):
        super().__init__()
        self.input_shape = as_shape(input_shape, "input_shape", ndim=3)
        self.channels = as_positive_int(channels, "channels")
        c, h, w = self.input_shape
        self.stages, self.shapes = nn.ModuleList(), []
        for level in range(LEVELS):
            self.stages.append(
                nn.Sequential(
                    nn.Conv2d(c if level == 0 else self.channels, self.channels, 3, padding=1),
                    nn.ELU(),
                    nn.Conv2d(self.channels, self.channels, 3, stride=2, padding=1),
                    nn.ELU(),
                )
            )
            h, w = _halve(h), _halve(w)
            self.shapes.append(torch.Size((self.channels, h, w)))
        self.top_features = math.prod(self.shapes[-1])

    def forward(self, m):
        """
        :param torch.Tensor m: ``batch_shape + input_shape``.
        :returns: a list of three feature maps ``batch_shape + shapes[l]``, finest first.
        :raises TypeError: if ``m`` is not a floating-point tensor of the parameters' dtype.
        :raises ValueError: if ``m`` is not ``batch_shape + input_shape`` or is on another
            device than the parameters.
        """
        h, batch_shape = flatten_batch(m, self.input_shape, "m")
        check_net_input(self, h, "m")
        features = []
        for stage in self.stages:
            h = stage(h)
            features.append(h.reshape(batch_shape + h.shape[1:]))
        return features


class TopFeatures(nn.Module):
    """The top (coarsest) feature map of a tied :class:`DownscalingStack`, flattened.

    :param DownscalingStack down: the tied stack D.
    :raises TypeError: if ``down`` is not a :class:`DownscalingStack`.

    ``forward(m)`` maps ``batch_shape + input_shape`` to ``batch_shape + (down.top_features,)``,
    with the checks of :meth:`DownscalingStack.forward`.
    """

    def __init__(self, down):
        super().__init__()
        self.down = _check_down(down)

    def forward(self, m):
        """
        :param torch.Tensor m: ``batch_shape + input_shape``.
        :returns: ``batch_shape + (top_features,)``.
        """
        return self.down(m)[-1].flatten(-3)


class ConvMemoryEncoder(nn.Module):
    """q(z | x, m_a): D(x)'s and D(m_a)'s top features, concatenated, through an MLP (§4.2).

    The paper feeds the concatenation [x, m_a] to the convolutions; applying the
    tied D to each and concatenating the top features keeps the convolutions off
    the |M| × B pairs of an enumerated address.

    :param DownscalingStack down: the tied stack D.
    :param int latent_dim: the width of z.
    :param tuple hidden: the hidden widths of the MLP (§4.2: one hidden layer).
    :raises TypeError: if ``down`` is not a :class:`DownscalingStack`, ``latent_dim`` not an
        int or ``hidden`` not a tuple of ints.
    :raises ValueError: if ``latent_dim`` or a width of ``hidden`` is not positive.

    ``forward(x, m)`` maps images ``batch_shape_x + input_shape`` and slots
    ``batch_shape_m + input_shape`` (broadcasting batch shapes) to ``(loc, scale)``,
    each ``broadcast(batch_shape_x, batch_shape_m) + (latent_dim,)``.
    """

    def __init__(self, down, latent_dim, hidden=(256,)):
        super().__init__()
        self.down = _check_down(down)
        self.latent_dim = as_positive_int(latent_dim, "latent_dim")
        hidden = as_sizes(hidden, "hidden")
        self.head = MLPEncoder((2 * down.top_features,), self.latent_dim, hidden)

    def forward(self, x, m):
        """
        :param torch.Tensor x: images ``batch_shape_x + input_shape``.
        :param torch.Tensor m: slots ``batch_shape_m + input_shape``.
        :returns: ``(loc, scale)``, each ``broadcast(batch_shape_x, batch_shape_m)
            + (latent_dim,)``.
        :raises TypeError: if ``x`` or ``m`` is not a floating-point tensor of the parameters'
            dtype.
        :raises ValueError: if ``x`` or ``m`` is not ``batch_shape + input_shape``, their batch
            shapes do not broadcast, or either is on another device than the parameters.
        """
        # both named and checked before D runs on either (D itself would call x "m")
        shape = self.down.input_shape
        batch_shapes = (batch_shape_of(x, shape, "x"), batch_shape_of(m, shape, "m"))
        check_net_input(self, x, "x")
        check_net_input(self, m, "m")
        batch = broadcast_batch(("x", "m"), (x, m), batch_shapes)
        hx, hm = self.down(x)[-1].flatten(-3), self.down(m)[-1].flatten(-3)
        return self.head(
            torch.cat([hx.expand(batch + hx.shape[-1:]), hm.expand(batch + hm.shape[-1:])], -1)
        )


class ConvMemoryDecoder(nn.Module):
    """p(x | z, m_a)'s parameters: an upscaling stack from z with U-Net skips from D(m_a) (§4.2).

    z is mapped linearly to a feature map at D's top resolution; at each of the
    three resolutions, coarsest first, a 3×3 convolution reads the feature map
    concatenated with D(m_a)'s map of that resolution (the skip connections "from
    the downscaling layers of m to the corresponding upscaling layers"), and a
    transposed convolution (kernel 4, stride 2, padding 1: no checkerboard
    artefacts) doubles the height and width, cropped to the next finer resolution,
    the last one to the image's with ``param_shape[0]`` maps. ELU between layers,
    none after the last: the parameters are unconstrained.

    :param DownscalingStack down: the tied stack D, which embeds m_a.
    :param int latent_dim: the width of z.
    :param tuple param_shape: ``(P, H, W)``, e.g. ``likelihood.param_shape``, with
        the height and width of D's input.
    :raises TypeError: if ``down`` is not a :class:`DownscalingStack`, ``latent_dim`` not an
        int or ``param_shape`` not a tuple of ints.
    :raises ValueError: if ``latent_dim`` is not positive, or ``param_shape`` not 3 positive
        dims with D's height and width.

    ``forward(z, m)`` maps ``z`` of shape ``batch_shape_z + (latent_dim,)`` and slots
    ``batch_shape_m + input_shape`` (broadcasting batch shapes) to parameters
    ``broadcast(batch_shape_z, batch_shape_m) + param_shape``.
    """

    def __init__(self, down, latent_dim, param_shape):
        super().__init__()
        self.down = _check_down(down)
        self.latent_dim = as_positive_int(latent_dim, "latent_dim")
        self.param_shape = as_shape(param_shape, "param_shape", ndim=3)
        if self.param_shape[1:] != down.input_shape[1:]:
            raise ValueError(
                f"param_shape: expected height and width {tuple(down.input_shape[1:])}, "
                f"got {tuple(self.param_shape)}"
            )
        c = down.channels
        self.top = nn.Sequential(nn.Linear(self.latent_dim, down.top_features), nn.ELU())
        self.merges, self.ups = nn.ModuleList(), nn.ModuleList()
        for level in reversed(range(LEVELS)):
            self.merges.append(nn.Sequential(nn.Conv2d(2 * c, c, 3, padding=1), nn.ELU()))
            up = nn.ConvTranspose2d(c, self.param_shape[0] if level == 0 else c, 4, 2, 1)
            self.ups.append(nn.Sequential(up, nn.ELU()) if level else up)
        # the height and width after each upscaling: D's next finer map, then the image
        self.sizes = [s[1:] for s in reversed(down.shapes[:-1])] + [self.param_shape[1:]]

    def forward(self, z, m):
        """
        :param torch.Tensor z: ``batch_shape_z + (latent_dim,)``.
        :param torch.Tensor m: slots ``batch_shape_m + input_shape``.
        :returns: parameters ``broadcast(batch_shape_z, batch_shape_m) + param_shape``.
        :raises TypeError: if ``z`` or ``m`` is not a floating-point tensor of the parameters'
            dtype.
        :raises ValueError: if ``z`` is not ``batch_shape_z + (latent_dim,)``, ``m`` not
            ``batch_shape_m + input_shape``, their batch shapes do not broadcast, or either is
            on another device than the parameters.
        """
        # both checked before D runs on m
        batch_shapes = (
            batch_shape_of(z, (self.latent_dim,), "z"),
            batch_shape_of(m, self.down.input_shape, "m"),
        )
        check_net_input(self, z, "z")
        check_net_input(self, m, "m")
        batch = broadcast_batch(("z", "m"), (z, m), batch_shapes)
        skips = self.down(m)[::-1]  # coarsest first
        h = self.top(z.expand(batch + z.shape[-1:])).unflatten(-1, self.down.shapes[-1])
        h = h.reshape((-1,) + h.shape[-3:])
        for merge, up, skip, (height, width) in zip(
            self.merges, self.ups, skips, self.sizes, strict=True
        ):
            skip = skip.expand(batch + skip.shape[-3:]).reshape((-1,) + skip.shape[-3:])
            h = up(merge(torch.cat([h, skip], 1)))[..., :height, :width]
        return h.reshape(batch + self.param_shape)
