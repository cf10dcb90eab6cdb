"""Bad inputs to VMA's conv memory nets and the ResNet-18 with temporal shift: each is named in
one line, before any work, instead of an AttributeError or a torch error from inside the net."""

import pytest
import torch
from torch import nn

from pyromem.nets import (
    ConvMemoryDecoder,
    ConvMemoryEncoder,
    DownscalingStack,
    ResNet18TSM,
    TopFeatures,
    temporal_shift,
)

IMAGE = (1, 8, 8)


def _down():
    return DownscalingStack(IMAGE, 4)


def _forbid_running(down):
    """Make ``down`` fail if it runs, to check that an error comes before any work."""

    def hook(module, args):
        raise AssertionError("D ran before the inputs were checked")

    down.register_forward_pre_hook(hook)
    return down


# --- conv memory nets: constructors ---


@pytest.mark.parametrize(
    "make, inputs, out_shape",
    [
        (lambda down: TopFeatures(down), (torch.rand(3, *IMAGE),), (3, 4)),
        (
            lambda down: ConvMemoryEncoder(down, 2),
            (torch.rand(3, *IMAGE), torch.rand(3, *IMAGE)),
            (3, 2),
        ),
        (
            lambda down: ConvMemoryDecoder(down, 2, IMAGE),
            (torch.rand(3, 2), torch.rand(3, *IMAGE)),
            (3, *IMAGE),
        ),
    ],
    ids=["TopFeatures", "ConvMemoryEncoder", "ConvMemoryDecoder"],
)
@pytest.mark.parametrize(
    "down, got", [(IMAGE, "tuple"), (nn.Conv2d(1, 4, 3), "Conv2d"), (None, "NoneType")]
)
def test_conv_memory_nets_name_a_down_that_is_not_a_downscaling_stack(
    make, inputs, out_shape, down, got
):
    # before: "'tuple' object has no attribute 'top_features'" (encoder, decoder), and
    # TopFeatures took it and failed only at its first call with "'tuple' object is not callable"
    with pytest.raises(TypeError, match=f"^down must be a DownscalingStack, .*got {got}$"):
        make(down)
    out = make(_down())(*inputs)
    assert (out[0] if isinstance(out, tuple) else out).shape == out_shape


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"channels": 0}, ValueError, "channels must be positive, got 0"),
        ({"channels": 4.0}, TypeError, "channels must be an int, got float 4.0"),
        ({"channels": True}, TypeError, "channels must be an int, got bool True"),
        ({"input_shape": "1,8,8"}, TypeError, "input_shape must be a tuple of ints, got '1,8,8'"),
        ({"input_shape": (8, 8)}, ValueError, r"input_shape must have 3 dims, got \(8, 8\)"),
        ({"input_shape": (1, 0, 8)}, ValueError, r"positive ints, got \(1, 0, 8\)"),
    ],
)
def test_downscaling_stack_names_bad_constructor_arguments(kwargs, error, match):
    args = {"input_shape": IMAGE, "channels": 4, **kwargs}
    with pytest.raises(error, match=match):
        DownscalingStack(**args)
    features = DownscalingStack(IMAGE, 4)(torch.rand(2, *IMAGE))
    assert [f.shape for f in features] == [(2, 4, 4, 4), (2, 4, 2, 2), (2, 4, 1, 1)]


@pytest.mark.parametrize(
    "args, error, match",
    [
        ((0,), ValueError, "latent_dim must be positive, got 0"),
        ((2.0,), TypeError, "latent_dim must be an int, got float 2.0"),
        ((True,), TypeError, "latent_dim must be an int, got bool True"),
        ((2, (0,)), ValueError, "hidden must be positive, got 0"),
        ((2, (2.5,)), TypeError, "hidden must be an int, got float 2.5"),
        ((2, "256"), TypeError, "hidden must be a tuple of ints, got '256'"),
    ],
)
def test_conv_memory_encoder_names_bad_constructor_arguments(args, error, match):
    with pytest.raises(error, match=match):
        ConvMemoryEncoder(_down(), *args)
    encoder = ConvMemoryEncoder(_down(), 2, ())
    assert encoder.latent_dim == 2
    loc, scale = encoder(torch.rand(3, *IMAGE), torch.rand(3, *IMAGE))
    assert loc.shape == scale.shape == (3, 2)


@pytest.mark.parametrize(
    "args, error, match",
    [
        ((0, IMAGE), ValueError, "latent_dim must be positive, got 0"),
        ((True, IMAGE), TypeError, "latent_dim must be an int, got bool True"),
        ((2, (8, 8)), ValueError, r"param_shape must have 3 dims, got \(8, 8\)"),
        ((2, "1,8,8"), TypeError, "param_shape must be a tuple of ints, got '1,8,8'"),
        (
            (2, (3, 8, 9)),
            ValueError,
            r"param_shape: expected height and width \(8, 8\), got \(3, 8, 9\)",
        ),
    ],
)
def test_conv_memory_decoder_names_bad_constructor_arguments(args, error, match):
    with pytest.raises(error, match=match):
        ConvMemoryDecoder(_down(), *args)
    decoder = ConvMemoryDecoder(_down(), 2, (3, 8, 8))
    assert decoder(torch.rand(5, 2), torch.rand(5, *IMAGE)).shape == (5, 3, 8, 8)


# --- conv memory nets: inputs ---


@pytest.mark.parametrize(
    "x, error, match",
    [
        (torch.rand(3, 2, 8, 8), ValueError, r"^x must have shape \(\*batch, 1, 8, 8\), got"),
        (torch.rand(3, 1, 8, 7), ValueError, r"^x must have shape \(\*batch, 1, 8, 8\), got"),
        ([[0.0]], TypeError, "^x must be a torch.Tensor, got list$"),
        (torch.ones(3, *IMAGE, dtype=torch.long), TypeError, "^x must be a floating-point"),
        (torch.rand(3, *IMAGE, dtype=torch.float64), TypeError, "^x is torch.float64 but"),
        (torch.rand(3, *IMAGE, device="meta"), ValueError, "^x: on meta, but the model's"),
    ],
)
def test_conv_memory_encoder_names_a_bad_x_as_x_before_running_d(x, error, match):
    # before: the images were named "m" (D's argument), after D had run on nothing
    encoder = ConvMemoryEncoder(_down(), 2, (5,))
    _forbid_running(encoder.down)
    with pytest.raises(error, match=match):
        encoder(x, torch.rand(4, 1, *IMAGE))


@pytest.mark.parametrize(
    "m, error, match",
    [
        (torch.rand(3, 2, 8, 8), ValueError, r"^m must have shape \(\*batch, 1, 8, 8\), got"),
        ([[0.0]], TypeError, "^m must be a torch.Tensor, got list$"),
        (torch.rand(3, *IMAGE, dtype=torch.float64), TypeError, "^m is torch.float64 but"),
        (torch.rand(3, *IMAGE, device="meta"), ValueError, "^m: on meta, but the model's"),
    ],
)
def test_conv_memory_encoder_and_decoder_name_bad_slots_before_running_d(m, error, match):
    encoder = ConvMemoryEncoder(_down(), 2, (5,))
    decoder = ConvMemoryDecoder(_down(), 2, (3, 8, 8))
    for net, first in ((encoder, torch.rand(3, *IMAGE)), (decoder, torch.rand(3, 2))):
        _forbid_running(net.down)
        with pytest.raises(error, match=match):
            net(first, m)


@pytest.mark.parametrize(
    "z, error, match",
    [
        (torch.rand(3, 5), ValueError, r"^z must have shape \(\*batch, 2\), got \(3, 5\)$"),
        (torch.rand(()), ValueError, r"^z must have shape \(\*batch, 2\), got \(\)$"),
        ([0.0, 0.0], TypeError, "^z must be a torch.Tensor, got list$"),
        (torch.ones(3, 2, dtype=torch.long), TypeError, "^z must be a floating-point tensor"),
        (torch.rand(3, 2, device="meta"), ValueError, "^z: on meta, but the model's"),
    ],
)
def test_conv_memory_decoder_checks_z_before_running_d(z, error, match):
    # before: D ran on the slots first, and only then was z looked at
    decoder = ConvMemoryDecoder(_down(), 2, (3, 8, 8))
    _forbid_running(decoder.down)
    with pytest.raises(error, match=match):
        decoder(z, torch.rand(3, *IMAGE))


def test_conv_memory_nets_name_batch_shapes_that_do_not_broadcast_before_running_d():
    # before: torch's "Attempting to broadcast a dimension of length 4 at -1!" (a
    # RuntimeError), raised after D had run on both inputs
    encoder = ConvMemoryEncoder(_forbid_running(_down()), 2, (5,))
    with pytest.raises(
        ValueError,
        match=(
            r"^x and m: expected batch shapes that broadcast, got \(3,\) and \(4,\) "
            r"\(of shapes \(3, 1, 8, 8\) and \(4, 1, 8, 8\)\)$"
        ),
    ):
        encoder(torch.rand(3, *IMAGE), torch.rand(4, *IMAGE))
    decoder = ConvMemoryDecoder(_forbid_running(_down()), 2, (3, 8, 8))
    with pytest.raises(
        ValueError, match=r"^z and m: expected batch shapes that broadcast, got \(3,\) and \(4,\)"
    ):
        decoder(torch.rand(3, 2), torch.rand(4, *IMAGE))


@pytest.mark.parametrize(
    "batch_x, batch_m, batch",
    [
        ((3,), (4, 1), (4, 3)),  # an enumerated address in front of the data plate
        ((3,), (), (3,)),
        ((), (4,), (4,)),
        ((0,), (4, 1), (4, 0)),  # empty batches run and come back empty
        ((3,), (0, 1), (0, 3)),
        ((0, 3), (0, 1), (0, 3)),
    ],
)
def test_conv_memory_nets_broadcast_valid_batch_shapes(batch_x, batch_m, batch):
    down = _down()
    encoder = ConvMemoryEncoder(down, 2, (5,))
    decoder = ConvMemoryDecoder(down, 2, (3, 8, 8))
    x, m = torch.rand(batch_x + IMAGE), torch.rand(batch_m + IMAGE)
    loc, scale = encoder(x, m)
    assert loc.shape == scale.shape == batch + (2,)
    assert decoder(torch.rand(batch_x + (2,)), m).shape == batch + (3, 8, 8)
    assert TopFeatures(down)(m).shape == batch_m + (down.top_features,)


# --- ResNet-18 with temporal shift ---


@pytest.mark.parametrize(
    "x, got",
    [
        ([[0.0]], "list"),
        (torch.ones(2, 3, *IMAGE, dtype=torch.long), "torch.int64"),
        (torch.ones(2, 3, *IMAGE, dtype=torch.bool), "torch.bool"),
    ],
)
def test_resnet_names_an_input_that_is_not_a_floating_point_tensor(x, got):
    # before: a list failed with "'list' object has no attribute 'dim'"
    model = ResNet18TSM(IMAGE, 4, base_width=4)
    with pytest.raises(
        TypeError,
        match=rf"^x must be a floating-point torch.Tensor of episodes \(\*batch, T, C, H, W\), "
        rf"got {got}$",
    ):
        model(x)
    assert model(torch.rand(2, 3, *IMAGE)).shape == (2, 3, 4)


def test_resnet_names_an_input_on_another_device():
    model = ResNet18TSM(IMAGE, 4, base_width=4)
    with pytest.raises(ValueError, match="^x: on meta, but the model's parameters are on cpu"):
        model(torch.rand(2, 3, *IMAGE, device="meta"))


def test_temporal_shift_names_an_input_that_is_not_a_tensor():
    # before: "'list' object has no attribute 'dim'"
    with pytest.raises(TypeError, match="^x must be a torch.Tensor, got list$"):
        temporal_shift([[[[0.0]]]])
    assert temporal_shift(torch.rand(2, 3, 4, 1, 1)).shape == (2, 3, 4, 1, 1)


@pytest.mark.parametrize("image_shape", [(1, 8, 8), (1, 1, 1), (1, 7, 7)])
def test_resnet_encodes_a_lone_image_as_in_a_batch(image_shape):
    # before: torch's "Expected more than 1 value per channel when training" from a GroupNorm
    # whose groups hold one value (1x1 maps, one channel per group), only when the batch
    # held one image: the same image in a batch of three went through
    torch.manual_seed(0)
    model = ResNet18TSM(image_shape, 4, base_width=4).double()
    x = torch.rand((3, 1) + image_shape, dtype=torch.float64)
    out = model(x)
    assert out.shape == (3, 1, 4)
    for n in range(3):
        lone = model(x[n])  # one episode of one image, no batch dims
        assert lone.shape == (1, 4)
        torch.testing.assert_close(lone, out[n])


@pytest.mark.parametrize(
    "shape, out_shape",
    [((0, 3), (0, 3, 4)), ((2, 0), (2, 0, 4)), ((0, 2, 3), (0, 2, 3, 4)), ((3,), (3, 4))],
)
def test_resnet_runs_empty_batches_and_episodes(shape, out_shape):
    model = ResNet18TSM(IMAGE, 4, base_width=4)
    assert model(torch.rand(shape + IMAGE)).shape == out_shape
