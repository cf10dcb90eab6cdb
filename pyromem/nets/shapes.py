"""Deprecated: the argument checks moved to :mod:`pyromem.checks`; this re-export is kept for
one release."""

from pyromem.checks import (  # noqa: F401
    as_positive_int,
    as_shape,
    as_sizes,
    batch_shape_of,
    flatten_batch,
    parameter_dtype,
)
