import itertools

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from scipy import special, stats

from pyromem.nets import DiscretizedLogisticMixture
from pyromem.nets.discretized_logistic import num_params


def _bin_log_prob(x, mu, s, num_bins):
    """log P(bin of x) for a logistic(mu, s) on [-1, 1] with num_bins levels, in float64.

    Written straight from the definition, with sigmoid(a) - sigmoid(b) rewritten as
    sigmoid(-b) - sigmoid(-a) right of the mode so that float64 does not cancel.
    """
    k = np.rint(np.asarray(x) * (num_bins - 1))
    y = 2 * np.asarray(x, dtype=np.float64) - 1
    delta = 1.0 / (num_bins - 1)
    a, b = (y + delta - mu) / s, (y - delta - mu) / s
    interior = np.where(
        y > mu, special.expit(-b) - special.expit(-a), special.expit(a) - special.expit(b)
    )
    with np.errstate(divide="ignore"):
        return np.where(
            k == 0,
            np.log(special.expit(a)),
            np.where(k == num_bins - 1, np.log(special.expit(-b)), np.log(interior)),
        )


def _reference_log_prob(x, params, num_bins):
    """The PixelCNN++ density of one pixel ``x`` (shape (C,)) under ``params`` (shape (P,)),
    with loops over components and channels, unpacking the documented layout by hand.
    """
    c_count = len(x)
    k_count = len(params) // num_params(c_count, 1)
    y = 2 * np.asarray(x, dtype=np.float64) - 1
    logits = params[:k_count]
    log_weights = logits - special.logsumexp(logits)
    pairs = [(1, 0), (2, 0), (2, 1)][: c_count * (c_count - 1) // 2]
    total = []
    for k in range(k_count):
        log_p = log_weights[k]
        for c in range(c_count):
            mu = params[k_count + k * c_count + c]
            log_s = max(params[k_count + k_count * c_count + k * c_count + c], -7.0)
            for c_prev in range(c):
                j = pairs.index((c, c_prev))
                coeff = np.tanh(
                    params[k_count + 2 * k_count * c_count + k * (c_count * (c_count - 1) // 2) + j]
                )
                mu = mu + coeff * y[c_prev]
            log_p = log_p + _bin_log_prob(x[c], mu, np.exp(log_s), num_bins)
        total.append(log_p)
    return special.logsumexp(total)


def _grid(num_bins, channels):
    """All num_bins ** channels pixels, shape (num_bins ** channels, channels, 1, 1)."""
    levels = list(itertools.product(range(num_bins), repeat=channels))
    return torch.tensor(levels, dtype=torch.float64).reshape(-1, channels, 1, 1) / (num_bins - 1)


@pytest.mark.parametrize("num_bins", [2, 8, 256])
def test_probabilities_sum_to_one_single_channel(num_bins, device):
    # Ten random pixels with three components, plus scales at both extremes of the
    # formulation (the log-scale clamp at -7, and a wide scale that uses the mid-point rule).
    params = torch.randn(12, num_params(1, 3), 1, 1, dtype=torch.float64, device=device)
    params[10, 6:9] = -20.0  # log-scales follow 3 logits and 3 means
    params[11, 6:9] = 12.0
    d = DiscretizedLogisticMixture(params, (1, 1, 1), num_bins=num_bins)
    x = _grid(num_bins, 1).to(device).unsqueeze(1)  # (num_bins, 1, 1, 1, 1) against batch (12,)
    log_probs = d.log_prob(x)
    assert log_probs.shape == (num_bins, 12)
    torch.testing.assert_close(
        log_probs.logsumexp(0),
        torch.zeros(12, dtype=torch.float64, device=device),
        atol=1e-9,
        rtol=0,
    )


def test_probabilities_sum_to_one_rgb(device):
    num_bins = 8
    params = 2 * torch.randn(4, num_params(3, 3), 1, 1, dtype=torch.float64, device=device)
    d = DiscretizedLogisticMixture(params, (3, 1, 1), num_bins=num_bins)
    x = _grid(num_bins, 3).to(device).unsqueeze(1)  # all 512 colours
    total = d.log_prob(x).logsumexp(0)
    torch.testing.assert_close(total, torch.zeros(4, dtype=torch.float64, device=device))


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-9), (torch.float32, 2e-4)])
@pytest.mark.parametrize("num_bins", [8, 256])
def test_single_logistic_matches_closed_form(num_bins, dtype, tol, device):
    x = np.arange(num_bins) / (num_bins - 1)
    for mu, log_s in itertools.product([-0.9, 0.0, 0.37], [-3.0, -1.0, 0.0, 10.0]):
        params = torch.tensor([0.0, mu, log_s], dtype=dtype, device=device).reshape(3, 1, 1)
        d = DiscretizedLogisticMixture(params, (1, 1, 1), num_bins=num_bins)
        value = torch.tensor(x, dtype=dtype, device=device).reshape(-1, 1, 1, 1)
        actual = d.log_prob(value).cpu().double().numpy()
        expected = _bin_log_prob(x, mu, np.exp(log_s), num_bins)
        np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol, err_msg=f"{mu}, {log_s}")


def test_mixture_with_channel_coefficients_matches_reference(device):
    num_bins, channels, k_count = 16, 3, 2
    generator = torch.Generator().manual_seed(1)
    params = torch.randn(num_params(channels, k_count), dtype=torch.float64, generator=generator)
    x = torch.randint(0, num_bins, (20, channels), generator=generator).double() / (num_bins - 1)
    d = DiscretizedLogisticMixture(params.reshape(-1, 1, 1).to(device), (channels, 1, 1), num_bins)
    actual = d.log_prob(x.reshape(20, channels, 1, 1).to(device)).cpu().numpy()
    expected = [_reference_log_prob(xi.numpy(), params.numpy(), num_bins) for xi in x]
    np.testing.assert_allclose(actual, expected, rtol=1e-9)


def test_log_prob_sums_over_pixels(device):
    params = torch.randn(2, num_params(3, 2), 4, 5, device=device)
    d = DiscretizedLogisticMixture(params, (3, 4, 5), num_bins=256)
    x = d.sample()
    per_pixel = [
        DiscretizedLogisticMixture(params[..., i : i + 1, j : j + 1], (3, 1, 1)).log_prob(
            x[..., i : i + 1, j : j + 1]
        )
        for i in range(4)
        for j in range(5)
    ]
    torch.testing.assert_close(d.log_prob(x), sum(per_pixel))


@pytest.mark.parametrize("num_bins, channels", [(16, 1), (256, 1), (4, 3)])
def test_samples_on_grid_with_the_histogram_of_log_prob(num_bins, channels, device):
    num_samples = 100_000
    params = torch.randn(2, num_params(channels, 3), 1, 1, device=device)
    d = DiscretizedLogisticMixture(params, (channels, 1, 1), num_bins=num_bins)
    x = d.sample((num_samples,))
    assert x.shape == (num_samples, 2, channels, 1, 1)
    assert x.min() >= 0 and x.max() <= 1
    levels = x * (num_bins - 1)
    assert (levels - levels.round()).abs().max() < 1e-4

    # Index each pixel's colour, and compare counts with num_samples * exp(log_prob).
    weights = torch.tensor([num_bins**i for i in reversed(range(channels))], device=device)
    index = (levels.round().long().reshape(num_samples, 2, channels) * weights).sum(-1)
    grid = _grid(num_bins, channels).float().to(device).unsqueeze(1)
    probs = d.log_prob(grid).exp().T.double().cpu().numpy()  # (2, num_bins ** channels)
    for b in range(2):
        observed = np.bincount(index[:, b].cpu().numpy(), minlength=num_bins**channels)
        expected = num_samples * probs[b]
        assert observed.sum() == num_samples
        # Pearson's chi-square over the cells expected to hold at least 5 draws.
        keep = expected >= 5
        assert observed[~keep].sum() <= max(20, 3 * expected[~keep].sum())
        chi2 = ((observed[keep] - expected[keep]) ** 2 / expected[keep]).sum()
        assert chi2 < stats.chi2.ppf(0.9999, keep.sum() - 1), chi2


@pytest.mark.parametrize("channels", [1, 3])
def test_log_prob_and_gradients_finite_for_extreme_params(channels, device):
    p = num_params(channels, 2)
    values = torch.tensor([-1e4, -50.0, -7.0, 0.0, 7.0, 50.0, 1e4], device=device)
    generator = torch.Generator().manual_seed(2)
    index = torch.randint(0, len(values), (64, p, 1, 1), generator=generator).to(device)
    params = values[index].requires_grad_()
    d = DiscretizedLogisticMixture(params, (channels, 1, 1), num_bins=256)
    x = torch.tensor([0.0, 1 / 255, 0.5, 254 / 255, 1.0], device=device)
    x = x.reshape(5, 1, 1, 1, 1).expand(5, 1, channels, 1, 1)
    log_prob = d.log_prob(x)
    assert log_prob.shape == (5, 64)
    assert torch.isfinite(log_prob).all()
    log_prob.sum().backward()
    assert torch.isfinite(params.grad).all()
    assert torch.isfinite(d.sample()).all()


def test_bad_param_shapes():
    with pytest.raises(ValueError, match=r"P = K \* 10 for K mixtures of 3 channels"):
        DiscretizedLogisticMixture(torch.zeros(2, 9, 4, 4), (3, 4, 4))
    with pytest.raises(ValueError, match="params must have shape"):
        DiscretizedLogisticMixture(torch.zeros(2, 10, 4, 5), (3, 4, 4))
    with pytest.raises(TypeError, match="params must be a torch.Tensor"):
        DiscretizedLogisticMixture(np.zeros((10, 4, 4)), (3, 4, 4))
    with pytest.raises(ValueError, match="num_bins must be at least 2"):
        DiscretizedLogisticMixture(torch.zeros(10, 4, 4), (3, 4, 4), num_bins=1)


def test_expand_and_plates(device):
    params = torch.randn(num_params(3, 2), 4, 4, device=device)
    d = DiscretizedLogisticMixture(params, (3, 4, 4), num_bins=256)
    assert d.batch_shape == ()
    expanded = d.expand((6,))
    assert expanded.batch_shape == (6,) and expanded.sample().shape == (6, 3, 4, 4)

    x = d.sample((6,))

    def model():
        with pyro.plate("data", 6):
            pyro.sample("x", d, obs=x)

    trace = pyro.poutine.trace(model).get_trace()
    trace.compute_log_prob()
    torch.testing.assert_close(trace.nodes["x"]["log_prob"], d.log_prob(x))


def test_validation_rejects_values_outside_unit_interval():
    d = DiscretizedLogisticMixture(torch.zeros(3, 2, 2), (1, 2, 2), validate_args=True)
    with pytest.raises(ValueError):
        d.log_prob(torch.full((1, 2, 2), 1.5))
    assert isinstance(d, dist.TorchDistribution)
