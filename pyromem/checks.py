"""Argument checks shared by every layer: integers, shapes, batch dims, dtypes.

The lowest layer of pyromem: it imports only torch and the standard library, so that data,
nets, memory primitives, models, objectives, diagnostics and recipes check their arguments
the same way and in the same words. Every net takes its per-datapoint shapes as constructor
arguments and accepts inputs with any number of leading batch dims (data, vectorised
particles, parallel enumeration); the checks here turn a wrong argument into a one-line
:class:`ValueError` or :class:`TypeError` that names it, instead of a torch stack trace.
"""

import math
import numbers

import torch


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _int_phrase(minimum):
    if minimum is None:
        return "an int"
    if minimum == 1:
        return "a positive int"
    if minimum == 0:
        return "a non-negative int"
    return f"an int >= {minimum}"


def _bound_phrase(minimum):
    return {1: "positive", 0: "non-negative"}.get(minimum, f">= {minimum}")


def as_int(value, name, minimum=None, *, error=ValueError, form="must", allow_none=False):
    """Check that ``value`` is an int (any :class:`numbers.Integral` but a bool) of at least
    ``minimum`` and return it as an int: the one integer check of the library.

    The callers differ in the error they raise for a value that is not an int and in the
    wording of the message, which their users and tests rely on; ``error`` and ``form`` keep
    both:

    - ``form="must"``: ``"{name} must be a positive int, got 0"`` for both failures;
    - ``form="expected"``: ``"{name}: expected an int >= 1, got 0"`` for both failures;
    - ``form="split"``: ``"{name} must be an int, got float 2.5"`` for a value that is not an
      int, ``"{name} must be positive, got 0"`` for one that is too small.

    :param value: the argument.
    :param str name: the argument's name in the message.
    :param int minimum: the least value allowed, or ``None`` for any int.
    :param type error: the exception raised for a value that is not an int
        (:class:`ValueError` or :class:`TypeError`); a value below ``minimum`` always raises
        :class:`ValueError`.
    :param str form: ``"must"``, ``"expected"`` or ``"split"``.
    :param bool allow_none: accept ``None`` (and return it).
    :rtype: int
    """
    if value is None and allow_none:
        return None
    is_int = _is_int(value)
    if is_int and (minimum is None or value >= minimum):
        return int(value)
    if form == "split":
        if not is_int:
            raise error(f"{name} must be an int, got {type(value).__name__} {value!r}")
        raise ValueError(f"{name} must be {_bound_phrase(minimum)}, got {value!r}")
    if form == "expected":
        expected = "an int" if minimum is None else f"an int >= {minimum}"
        message = f"{name}: expected {expected}{' or None' if allow_none else ''}, got {value!r}"
    else:
        expected = _int_phrase(minimum)
        message = f"{name} must be {expected}{' or None' if allow_none else ''}, got {value!r}"
    raise (ValueError if is_int else error)(message)


def as_real(value, name, *, positive=False, allow_none=False):
    """``value`` as a finite float, non-negative (positive with ``positive``), or ``None`` where
    allowed; else a one-line ``ValueError`` naming it. Python and NumPy reals pass; a bool, a
    tensor or a string does not. Hyper-parameters are checked so where they are given: a NaN or
    infinite one would fail only deep in a later step, or read nonsense silently."""
    if value is None and allow_none:
        return None
    bound = "positive" if positive else "non-negative"
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or not (value > 0 if positive else value >= 0)
    ):
        expected = f"a {bound} finite float{' or None' if allow_none else ''}"
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return float(value)


def as_shape(value, name, ndim=None):
    """Convert a shape argument to a :class:`torch.Size` of positive ints.

    :param value: an int or a sequence of ints, e.g. ``(1, 28, 28)``.
    :param str name: the argument's name in error messages.
    :param int ndim: the required number of dims, or ``None`` for any (at least one).
    :rtype: torch.Size
    :raises TypeError: if ``value`` is not an int or a sequence of ints.
    :raises ValueError: if a dim is not positive or the number of dims is wrong.
    """
    if _is_int(value):
        value = (value,)
    if not isinstance(value, (tuple, list, torch.Size)) or not all(_is_int(d) for d in value):
        raise TypeError(f"{name} must be a tuple of ints, got {value!r}")
    shape = torch.Size(int(d) for d in value)
    if len(shape) == 0 or any(d <= 0 for d in shape):
        raise ValueError(f"{name} must be a non-empty tuple of positive ints, got {tuple(shape)}")
    if ndim is not None and len(shape) != ndim:
        raise ValueError(f"{name} must have {ndim} dims, got {tuple(shape)}")
    return shape


def as_positive_int(value, name):
    """``as_int(value, name, 1, error=TypeError, form="split")``: a width or a count.

    :raises TypeError: if ``value`` is not an int.
    :raises ValueError: if ``value`` is not positive.
    """
    return as_int(value, name, 1, error=TypeError, form="split")


def as_sizes(value, name):
    """Check a tuple of layer widths (possibly empty; an int means one layer).

    :rtype: tuple
    :raises TypeError: if ``value`` is not an int or a sequence of ints.
    :raises ValueError: if a width is not positive.
    """
    if _is_int(value):
        value = (value,)
    if not isinstance(value, (tuple, list)):
        raise TypeError(f"{name} must be a tuple of ints, got {value!r}")
    return tuple(as_positive_int(v, name) for v in value)


def batch_shape_of(x, shape, name):
    """Check that ``x`` has shape ``batch_shape + shape`` and return ``batch_shape``.

    :param torch.Tensor x: a tensor of shape ``batch_shape + shape``, where
        ``batch_shape`` may have any number of dims, including none.
    :param torch.Size shape: the trailing (per-datapoint) shape.
    :param str name: the argument's name in error messages.
    :rtype: torch.Size
    :raises TypeError: if ``x`` is not a floating-point tensor.
    :raises ValueError: if the trailing dims of ``x`` are not ``shape``.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() < len(shape) or x.shape[x.dim() - len(shape) :] != shape:
        raise ValueError(
            f"{name} must have shape (*batch, {', '.join(map(str, shape))}), got {tuple(x.shape)}"
        )
    return x.shape[: x.dim() - len(shape)]


def broadcasts_to(shape, target) -> bool:
    """Whether a tensor of ``shape`` broadcasts to ``target`` exactly: neither fails to
    broadcast nor adds dimensions or sizes that ``target`` lacks."""
    target = torch.Size(target)
    try:
        return torch.broadcast_shapes(torch.Size(shape), target) == target
    except RuntimeError:
        return False


def broadcast_batch(names, tensors, batch_shapes):
    """The broadcast of two tensors' batch shapes, or a one-line ``ValueError`` naming both
    (rather than torch's "Attempting to broadcast a dimension ..." after the work).

    :param tuple names: the two tensors' names in the message.
    :param tuple tensors: the two tensors, whose whole shapes the message gives too.
    :param tuple batch_shapes: their batch shapes.
    :returns: a ``torch.Size``.
    """
    try:
        return torch.broadcast_shapes(*batch_shapes)
    except RuntimeError:
        raise ValueError(
            f"{names[0]} and {names[1]}: expected batch shapes that broadcast, got "
            f"{tuple(batch_shapes[0])} and {tuple(batch_shapes[1])} (of shapes "
            f"{tuple(tensors[0].shape)} and {tuple(tensors[1].shape)})"
        ) from None


def flatten_batch(x, shape, name):
    """Reshape ``x`` of shape ``batch_shape + shape`` to ``(prod(batch_shape),) + shape``.

    Convolutions and linear maps over flattened features need a fixed rank, so
    nets flatten the leading dims around them and restore them with
    ``y.reshape(batch_shape + y.shape[1:])``.

    :returns: the flattened tensor and ``batch_shape``.
    :rtype: tuple
    """
    batch_shape = batch_shape_of(x, shape, name)
    # reshape rather than flatten(0, k): batch_shape may be empty or hold zeros.
    return x.reshape((math.prod(batch_shape),) + shape), batch_shape


def parameter_dtype(module):
    """The floating dtype of ``module``'s parameters (``None`` if it has none), which its
    inputs must share: a float32 net cannot multiply float64 data."""
    for parameter in module.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return None


def parameter_device(module):
    """The device of ``module``'s parameters (``None`` if it has none), which its inputs must
    share."""
    return next((parameter.device for parameter in module.parameters()), None)


def check_device(tensor, name, device, where="the model's parameters are"):
    """Raise a one-line ``ValueError`` unless ``tensor`` is on ``device`` (``None``: any),
    rather than torch's "Expected all tensors to be on the same device" from inside a net.

    :param device: where ``tensor`` must be: the model's (:func:`parameter_device`), or that of
        what ``where`` names.
    :param str where: the subject of the message's "... on ``device``", with its verb.
    """
    if device is not None and tensor.device != device:
        raise ValueError(
            f"{name}: on {tensor.device}, but {where} on {device}; move one to the other, "
            f"e.g. {name}.to({str(device)!r})"
        )


def check_dtype(tensor, name, dtype, where="the model's parameters are", verb="is"):
    """Raise a one-line ``TypeError`` unless ``tensor`` has ``dtype`` (``None``: any), rather
    than torch's "expected scalar type Float but found Double" from inside an operation, or a
    silent promotion of every result to the wider dtype.

    :param dtype: the dtype ``tensor`` must have: the model's, or that of what ``where`` names.
    :param str where: the subject of the message's "... ``dtype``", with its verb.
    :param str verb: the verb after ``name``: ``"is"``, or ``"are"`` for a plural name.
    """
    if dtype is not None and tensor.dtype != dtype:
        raise TypeError(
            f"{name} {verb} {tensor.dtype} but {where} {dtype}: convert one to the other with "
            ".to(dtype)"
        )


def as_float_tensor(value, name, what=""):
    """``value`` if it is a floating-point tensor, else a one-line ``TypeError`` naming it.

    :param str name: the argument's name in the message.
    :param str what: what the tensor holds, for the message, e.g. ``" of images (N, C, H, W)"``.
    """
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        got = getattr(value, "dtype", type(value).__name__)
        raise TypeError(f"{name} must be a floating-point torch.Tensor{what}, got {got}")
    return value


def check_net_input(net, value, name, where="the model's parameters are"):
    """Raise a one-line ``TypeError`` unless ``value`` has the dtype of ``net``'s parameters,
    and a ``ValueError`` (:func:`check_device`) unless it is on their device: torch would stop
    deep in a layer with "mat1 and mat2 must have the same dtype" or "Expected all tensors to
    be on the same device".

    :param torch.nn.Module net: the net about to read ``value``.
    :param torch.Tensor value: its input, already checked to be a floating-point tensor.
    :param str name: the input's name in the message.
    :param str where: the subject of the device message's "... on ``device``", with its verb.
    :returns: ``value``.
    """
    dtype = parameter_dtype(net)
    if dtype is not None and value.dtype != dtype:
        raise TypeError(
            f"{name} is {value.dtype} but the parameters of {type(net).__name__} are {dtype}: "
            f"convert one to the other, e.g. net.to({value.dtype}) or {name}.to({dtype})"
        )
    check_device(value, name, parameter_device(net), where)
    return value


def check_program(fn, name):
    """Raise a one-line :class:`TypeError` unless ``fn`` is callable as a Pyro program: not a
    module without a ``forward`` (``vae`` where ``vae.model`` or ``vae.guide`` was meant, which
    torch would answer with "missing the required forward function" on the first call).

    :param fn: the model or guide given.
    :param str name: ``"model"`` or ``"guide"``, the argument's name.
    """
    # a module is called through forward unless its class calls otherwise (a refinement guide)
    calls_forward = type(fn).__call__ in (torch.nn.Module.__call__, _pyro_module_call())
    if (
        isinstance(fn, torch.nn.Module)
        and calls_forward
        and type(fn).forward is torch.nn.Module.forward
    ):
        raise TypeError(
            f"{name}: expected a Pyro program such as vae.{name}, got the module "
            f"{type(fn).__name__} itself, which has no forward"
        )
    if not callable(fn):
        raise TypeError(f"{name} must be callable, got {type(fn).__name__}")


def _pyro_module_call():
    # PyroModule's own __call__, which calls forward as torch's does; Pyro is imported here, not
    # above, so that this lowest layer needs torch alone
    from pyro.nn import PyroModule

    return PyroModule.__call__
