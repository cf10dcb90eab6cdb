import pytest
import torch
import torch.nn.functional as F

from pyromem.data.validation import SUPPORTS
from pyromem.nets import (
    BernoulliLikelihood,
    ConvDecoder,
    DiscretizedLogisticMixture,
    DiscretizedLogisticMixtureLikelihood,
    GaussianLikelihood,
    Likelihood,
    make_likelihood,
)

BATCH_SHAPES = [(), (3,), (2, 4, 3)]


@pytest.mark.parametrize("batch_shape", BATCH_SHAPES)
@pytest.mark.parametrize(
    "name, kwargs, event_shape, param_shape",
    [
        ("bernoulli", {}, (1, 28, 28), (1, 28, 28)),
        ("gaussian", {}, (3, 8, 8), (3, 8, 8)),
        ("gaussian", {"scale": 0.1}, (1, 8, 8), (1, 8, 8)),
        ("discretized_logistic_mixture", {}, (3, 8, 8), (5 + 5 * 3 * 2 + 5 * 3, 8, 8)),
        ("dlm", {"num_mixtures": 2}, (1, 16, 16), (2 + 2 * 2, 16, 16)),
    ],
)
def test_shapes(name, kwargs, event_shape, param_shape, batch_shape, device):
    likelihood = make_likelihood(name, event_shape, **kwargs).to(device)
    assert isinstance(likelihood, Likelihood)
    assert likelihood.event_shape == event_shape
    assert likelihood.param_shape == param_shape
    assert likelihood.support in SUPPORTS
    params = torch.randn(batch_shape + param_shape, device=device)
    d = likelihood(params)
    assert d.batch_shape == batch_shape
    assert d.event_shape == event_shape
    x = d.sample()
    assert x.shape == batch_shape + event_shape and x.device == params.device
    assert d.log_prob(x).shape == batch_shape


def test_bernoulli_log_prob_is_minus_bce(device):
    likelihood = BernoulliLikelihood((1, 8, 8)).to(device)
    logits = torch.randn(5, 1, 8, 8, device=device)
    x = torch.bernoulli(torch.full((5, 1, 8, 8), 0.3, device=device))
    expected = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum((1, 2, 3))
    torch.testing.assert_close(likelihood(logits).log_prob(x), expected)
    assert likelihood.support == "binary"


def test_gaussian_fixed_scale(device):
    likelihood = GaussianLikelihood((1, 4, 4), scale=0.5).to(device)
    assert list(likelihood.parameters()) == []
    loc = torch.randn(6, 1, 4, 4, device=device)
    x = torch.randn(6, 1, 4, 4, device=device)
    expected = torch.distributions.Normal(loc, 0.5).log_prob(x).sum((1, 2, 3))
    torch.testing.assert_close(likelihood(loc).log_prob(x), expected)
    assert likelihood.support == "real"


def test_gaussian_learned_scale_is_a_parameter_per_channel(device):
    likelihood = GaussianLikelihood((3, 4, 4)).to(device)
    (log_scale,) = likelihood.parameters()
    assert log_scale.shape == (3, 1, 1) and log_scale.device.type == device.type
    with torch.no_grad():
        log_scale.copy_(torch.tensor([-1.0, 0.0, 1.0]).reshape(3, 1, 1))
    loc = torch.randn(2, 3, 4, 4, device=device)
    x = torch.randn(2, 3, 4, 4, device=device)
    log_prob = likelihood(loc).log_prob(x)
    scale = torch.tensor([-1.0, 0.0, 1.0], device=device).exp().reshape(3, 1, 1)
    expected = torch.distributions.Normal(loc, scale).log_prob(x).sum((1, 2, 3))
    torch.testing.assert_close(log_prob, expected)
    log_prob.sum().backward()
    assert log_scale.grad is not None and (log_scale.grad != 0).all()


def test_dlm_likelihood_builds_the_distribution():
    likelihood = DiscretizedLogisticMixtureLikelihood((3, 8, 8), num_mixtures=4, num_bins=16)
    d = likelihood(torch.randn(2, *likelihood.param_shape))
    assert isinstance(d, DiscretizedLogisticMixture)
    assert d.num_mixtures == 4 and d.num_bins == 16
    assert likelihood.support == "16-level"  # data k/15, 8-bit data for 256 bins


def test_decoder_feeds_likelihood(device):
    # The point of param_shape: a decoder sized by the head always fits it.
    likelihood = make_likelihood("dlm", (3, 32, 32), num_mixtures=3)
    decoder = ConvDecoder(4, likelihood.param_shape, channels=(8, 4), hidden=16).to(device)
    z = torch.randn(2, 5, 4, device=device)
    d = likelihood(decoder(z))
    assert d.batch_shape == (2, 5) and d.event_shape == (3, 32, 32)


def test_unknown_name_lists_the_names():
    with pytest.raises(ValueError, match="bernoulli.*discretized_logistic_mixture.*gaussian"):
        make_likelihood("poisson", (1, 8, 8))


@pytest.mark.parametrize(
    "likelihood, params",
    [
        (BernoulliLikelihood((1, 8, 8)), torch.zeros(2, 1, 8, 7)),
        (GaussianLikelihood((3, 8, 8)), torch.zeros(2, 1, 8, 8)),
        (DiscretizedLogisticMixtureLikelihood((3, 8, 8), num_mixtures=2), torch.zeros(2, 3, 8, 8)),
        (DiscretizedLogisticMixtureLikelihood((1, 8, 8), num_mixtures=2), torch.zeros(8, 8)),
    ],
)
def test_bad_param_shape(likelihood, params):
    expected = ", ".join(map(str, likelihood.param_shape))
    with pytest.raises(ValueError, match=rf"params must have shape \(\*batch, {expected}\)"):
        likelihood(params)


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: GaussianLikelihood((1, 8, 8), scale=0.0), ValueError, "scale must be a positive"),
        (lambda: GaussianLikelihood((1, 8, 8), scale="1"), TypeError, "scale must be a float"),
        (lambda: BernoulliLikelihood((1, -8, 8)), ValueError, "event_shape"),
        (lambda: make_likelihood("dlm", (3, 8, 8), num_mixtures=0), ValueError, "num_mixtures"),
        (lambda: make_likelihood("dlm", (3, 8, 8), num_bins=1), ValueError, "num_bins"),
    ],
)
def test_bad_constructor_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()
