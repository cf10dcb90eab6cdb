"""The floating dtype a net's input must share with its parameters.

A float32 net cannot multiply float64 data: torch would stop deep in a layer with
"mat1 and mat2 must have the same dtype". Every net checks its input first and names it.
"""

from pyromem.checks import parameter_dtype


def check_input_dtype(net, value, name):
    """Raise a one-line ``TypeError`` unless ``value`` has the dtype of ``net``'s parameters.

    :param torch.nn.Module net: the net about to read ``value``.
    :param torch.Tensor value: its input, already checked to be a floating-point tensor.
    :param str name: the input's name in the message.
    :returns: ``value``.
    """
    dtype = parameter_dtype(net)
    if dtype is not None and value.dtype != dtype:
        raise TypeError(
            f"{name} is {value.dtype} but the parameters of {type(net).__name__} are {dtype}: "
            f"convert one to the other, e.g. net.to({value.dtype}) or {name}.to({dtype})"
        )
    return value
