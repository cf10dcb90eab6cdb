"""Units of reported bounds: nats per datapoint, and bits per observed dim."""

import math


def bits_per_dim(nats, num_dims):
    """Convert a log-likelihood bound in nats per datapoint to −bits per observed dim.

    :param nats: a bound (ELBO, IWAE-K) per datapoint, a float or a tensor.
    :param int num_dims: observed scalars per datapoint, e.g. C·H·W of an image.
    """
    return -nats / (num_dims * math.log(2))
