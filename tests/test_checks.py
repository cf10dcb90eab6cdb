import numpy as np
import pytest
import torch

from pyromem.checks import as_int, as_positive_int, check_dtype


def test_as_int_accepts_integrals_and_returns_an_int():
    assert as_int(np.int64(3), "n", 1) == 3 and type(as_int(np.int64(3), "n", 1)) is int
    assert as_int(0, "n", 0) == 0
    assert as_int(None, "n", 1, allow_none=True) is None


@pytest.mark.parametrize(
    "value, kwargs, error, message",
    [
        (0, {"minimum": 1}, ValueError, "n must be a positive int, got 0"),
        (True, {"minimum": 1}, ValueError, "n must be a positive int, got True"),
        (2.0, {"minimum": 0}, ValueError, "n must be a non-negative int, got 2.0"),
        (1, {"minimum": 3}, ValueError, "n must be an int >= 3, got 1"),
        (None, {"minimum": 1}, ValueError, "n must be a positive int, got None"),
        ("1", {"minimum": 2, "form": "expected"}, ValueError, "n: expected an int >= 2, got '1'"),
        (
            0,
            {"minimum": 1, "form": "expected", "allow_none": True},
            ValueError,
            "n: expected an int >= 1 or None, got 0",
        ),
        (
            2.5,
            {"minimum": 1, "error": TypeError, "form": "split"},
            TypeError,
            "n must be an int, got float 2.5",
        ),
        (
            -1,
            {"minimum": 0, "error": TypeError, "form": "split"},
            ValueError,
            "n must be non-negative, got -1",
        ),
    ],
)
def test_as_int_messages(value, kwargs, error, message):
    with pytest.raises(error) as info:
        as_int(value, "n", **kwargs)
    assert str(info.value) == message


def test_as_positive_int_is_the_split_form():
    with pytest.raises(TypeError, match="width must be an int, got bool True"):
        as_positive_int(True, "width")
    with pytest.raises(ValueError, match="width must be positive, got 0"):
        as_positive_int(0, "width")


def test_check_dtype_names_both_dtypes_in_one_line():
    x = torch.zeros(2, dtype=torch.float64)
    check_dtype(x, "x", torch.float64)  # the dtype asked for
    check_dtype(x, "x", None)  # any dtype
    with pytest.raises(TypeError) as raised:
        check_dtype(x, "keys", torch.float32, "the memory is", verb="are")
    assert str(raised.value) == (
        "keys are torch.float64 but the memory is torch.float32: convert one to the other "
        "with .to(dtype)"
    )
