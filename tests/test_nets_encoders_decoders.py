import pytest
import torch

from pyromem.nets import MLP, ConvDecoder, ConvEncoder, ConvTrunk, MLPDecoder, MLPEncoder

IMAGE_SHAPES = [(1, 8, 8), (1, 16, 16), (1, 28, 28), (3, 32, 32), (3, 64, 64)]
BATCH_SHAPES = [(), (2,), (4, 5)]
LATENT_DIM = 6


def _small_encoder(kind, shape):
    if kind == "mlp":
        return MLPEncoder(shape, LATENT_DIM, hidden=(32, 16))
    return ConvEncoder(shape, LATENT_DIM, channels=(4, 8), hidden=16)


def _small_decoder(kind, param_shape):
    if kind == "mlp":
        return MLPDecoder(LATENT_DIM, param_shape, hidden=(16, 32))
    return ConvDecoder(LATENT_DIM, param_shape, channels=(8, 4), hidden=16)


@pytest.mark.parametrize("batch_shape", BATCH_SHAPES)
@pytest.mark.parametrize("shape", IMAGE_SHAPES)
@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_encoder_shapes_and_positive_scale(kind, shape, batch_shape, device):
    encoder = _small_encoder(kind, shape).to(device)
    x = torch.rand(batch_shape + shape, device=device)
    loc, scale = encoder(x)
    assert loc.shape == batch_shape + (LATENT_DIM,)
    assert scale.shape == batch_shape + (LATENT_DIM,)
    assert loc.device == x.device and scale.device == x.device
    assert (scale > 0).all()


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_encoder_leading_dims_are_independent(kind, device):
    # Flattening leading dims must not mix datapoints: encoding a 4x5 batch equals
    # encoding its 20 datapoints one by one.
    encoder = _small_encoder(kind, (1, 16, 16)).to(device)
    x = torch.rand(4, 5, 1, 16, 16, device=device)
    loc, scale = encoder(x)
    for i, j in [(0, 0), (3, 4), (2, 1)]:
        loc_ij, scale_ij = encoder(x[i, j])
        torch.testing.assert_close(loc[i, j], loc_ij)
        torch.testing.assert_close(scale[i, j], scale_ij)


@pytest.mark.parametrize("batch_shape", BATCH_SHAPES)
@pytest.mark.parametrize("shape", IMAGE_SHAPES + [(10, 7, 9)])
@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_decoder_shapes(kind, shape, batch_shape, device):
    decoder = _small_decoder(kind, shape).to(device)
    z = torch.randn(batch_shape + (LATENT_DIM,), device=device)
    params = decoder(z)
    assert params.shape == batch_shape + shape
    assert params.device == z.device


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_gradients_flow_through_encoder_and_decoder(kind, device):
    shape = (3, 32, 32)
    encoder = _small_encoder(kind, shape).to(device)
    decoder = _small_decoder(kind, shape).to(device)
    x = torch.rand((3, 2) + shape, device=device)
    loc, scale = encoder(x)
    params = decoder(loc + scale * torch.randn_like(scale))
    (params - x).pow(2).sum().backward()
    for module in (encoder, decoder):
        for name, p in module.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
            assert p.grad.abs().sum() > 0, name


def test_scale_has_a_floor(device):
    encoder = MLPEncoder((1, 8, 8), LATENT_DIM, hidden=()).to(device)
    with torch.no_grad():
        encoder.head.linear.bias.fill_(-1e4)
    _, scale = encoder(torch.zeros(3, 1, 8, 8, device=device))
    assert (scale > 0).all()


@pytest.mark.parametrize(
    "make, x, match",
    [
        (
            lambda: MLPEncoder((1, 8, 8), 4),
            torch.rand(2, 1, 8, 9),
            r"x must have shape \(\*batch, 1, 8, 8\)",
        ),
        (lambda: ConvEncoder((3, 32, 32), 4), torch.rand(2, 1, 32, 32), "x must have shape"),
        (lambda: MLPDecoder(4, (1, 8, 8)), torch.rand(2, 5), r"z must have shape \(\*batch, 4\)"),
        (lambda: ConvDecoder(4, (1, 8, 8)), torch.rand(3), "z must have shape"),
    ],
)
def test_wrong_input_shape_names_the_argument(make, x, match):
    with pytest.raises(ValueError, match=match):
        make()(x)


def test_integer_input_is_a_type_error():
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        MLPEncoder((1, 8, 8), 4)(torch.zeros(2, 1, 8, 8, dtype=torch.long))


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: ConvEncoder((28, 28), 4), ValueError, "input_shape must have 3 dims"),
        (lambda: ConvEncoder((1, 2, 2), 4), ValueError, "at least 4 pixels"),
        (lambda: MLPEncoder((1, 0, 8), 4), ValueError, "input_shape must be a non-empty"),
        (lambda: MLPEncoder((1, 8, 8), 0), ValueError, "latent_dim must be positive"),
        (lambda: MLPEncoder((1, 8, 8), 4.0), TypeError, "latent_dim must be an int"),
        (lambda: MLPDecoder(4, "abc"), TypeError, "param_shape must be a tuple of ints"),
        (lambda: ConvDecoder(4, (1, 8, 8), channels=()), ValueError, "channels"),
        (lambda: ConvDecoder(4, (1, 8, 8), hidden=-1), ValueError, "hidden must be positive"),
    ],
)
def test_bad_constructor_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize("batch_shape", BATCH_SHAPES)
def test_generic_nets_broadcast_over_batch_dims(batch_shape):
    mlp = MLP(5, (2, 3), hidden=(7,))
    v = torch.randn(batch_shape + (5,))
    assert mlp(v).shape == batch_shape + (2, 3)
    # each vector is mapped on its own: a batch of one gives the same output
    torch.testing.assert_close(mlp(v.reshape(-1, 5))[:1], mlp(v.reshape(-1, 5)[:1]))
    trunk = ConvTrunk((1, 8, 8), channels=(4,), features=6)
    assert trunk(torch.rand(3, 1, 8, 8)).shape == (3, 6)
    with pytest.raises(ValueError, match="at least 4 pixels"):
        ConvTrunk((1, 2, 2), channels=(4, 8))


def test_parameter_names_of_checkpoints_are_those_of_the_old_layout():
    # MLPDecoder and ConvEncoder are built on MLP and ConvTrunk: their state_dict keys (and
    # those of the models holding them) must stay as saved before, so checkpoints load
    linear = ["body.0.weight", "body.0.bias", "body.2.weight", "body.2.bias"]
    assert list(MLPDecoder(3, (4,), hidden=(5,)).state_dict()) == linear
    assert list(MLP(3, (4,), hidden=(5,)).state_dict()) == linear
    conv = ["body.0.weight", "body.0.bias", "body.3.weight", "body.3.bias"]
    assert list(ConvEncoder((1, 8, 8), 2, channels=(4,), hidden=5).state_dict()) == conv + [
        "head.linear.weight",
        "head.linear.bias",
    ]
    assert list(ConvTrunk((1, 8, 8), channels=(4,), features=5).state_dict()) == [
        k[len("body.") :] for k in conv
    ]
