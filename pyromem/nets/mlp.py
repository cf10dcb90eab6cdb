"""A fully connected net from vectors to a tensor of any shape.

The generic piece behind :class:`~pyromem.nets.MLPDecoder` (from ``z`` to a likelihood's
parameters), VMA's key and query nets (to the matching space) and Kanerva++'s dense writer
(to the memory).
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


class MLP(nn.Module):
    """Linear layers with ReLUs between them, from ``in_features`` to ``out_shape``.

    :param int in_features: the width of the input vectors.
    :param tuple out_shape: the shape of the output per input vector.
    :param tuple hidden: the widths of the hidden layers (ReLU).

    ``forward(v)`` maps ``v`` of shape ``batch_shape + (in_features,)`` to
    ``batch_shape + out_shape``, with no non-linearity after the last layer.
    """

    input_name = "v"  # the input's name in error messages

    def __init__(self, in_features, out_shape, hidden=(400,)):
        super().__init__()
        self.in_features = as_positive_int(in_features, "in_features")
        self.out_shape = as_shape(out_shape, "out_shape")
        sizes = (self.in_features,) + as_sizes(hidden, "hidden")
        layers = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(n_in, n_out), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], math.prod(self.out_shape)))
        self.body = nn.Sequential(*layers)

    def forward(self, v):
        """
        :param torch.Tensor v: ``batch_shape + (in_features,)``.
        :returns: ``batch_shape + out_shape``.
        """
        h, batch_shape = flatten_batch(v, (self.in_features,), self.input_name)
        check_net_input(self, h, self.input_name)
        return self.body(h).reshape(batch_shape + self.out_shape)
