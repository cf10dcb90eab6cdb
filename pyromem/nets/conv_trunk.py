"""A convolutional trunk from images to feature vectors.

The generic piece behind :class:`~pyromem.nets.ConvEncoder` (which puts a Gaussian head on
it) and Kanerva++'s image encoder f_enc (which normalises its features).
"""

from torch import nn

from pyromem.checks import (
    as_positive_int,
    as_shape,
    as_sizes,
    batch_shape_of,
    check_net_input,
)


class ConvTrunk(nn.Sequential):
    """Stride-2 convolutions, then a linear layer to ``features`` (ReLU after each).

    Each convolution (kernel 4, stride 2, padding 1) halves the height and width,
    rounding down, so any image at least ``2 ** len(channels)`` pixels on a side
    works, e.g. 8×8, 16×16, 28×28, 32×32 and 64×64.

    :param tuple input_shape: the shape ``(C, H, W)`` of one image.
    :param tuple channels: the output channels of the convolutions.
    :param int features: the width of the output features.

    A :class:`torch.nn.Sequential`: it maps images ``(N, C, H, W)`` to ``(N, features)``;
    flatten leading batch dims around it (:func:`pyromem.checks.flatten_batch`).
    """

    def __init__(self, input_shape, channels=(32, 64), features=256):
        input_shape = as_shape(input_shape, "input_shape", ndim=3)
        channels = as_sizes(channels, "channels")
        features = as_positive_int(features, "features")
        c, h, w = input_shape
        if min(h, w) < 2 ** len(channels):
            raise ValueError(
                f"input_shape must be at least {2 ** len(channels)} pixels on a side for "
                f"{len(channels)} stride-2 convolutions, got {tuple(input_shape)}"
            )
        layers = []
        for c_in, c_out in zip(((c,) + channels)[:-1], channels, strict=True):
            layers += [nn.Conv2d(c_in, c_out, kernel_size=4, stride=2, padding=1), nn.ReLU()]
            h, w = h // 2, w // 2
        c_last = channels[-1] if channels else c
        super().__init__(*layers, nn.Flatten(), nn.Linear(c_last * h * w, features), nn.ReLU())
        self.input_shape = input_shape
        self.features = features

    def forward(self, x):
        """
        :param torch.Tensor x: images ``(N, C, H, W)``.
        :returns: features ``(N, features)``.
        """
        if len(batch_shape_of(x, self.input_shape, "x")) != 1:
            expected = ", ".join(map(str, self.input_shape))
            raise ValueError(f"x must have shape (N, {expected}), got {tuple(x.shape)}")
        check_net_input(self, x, "x")
        return super().forward(x)
