"""GaussianMixtureMemory against independent truths: scikit-learn's GaussianMixture, the MCHN
update computed directly, autograd and finite differences, and Monte Carlo moments."""

import math
import resource

import numpy as np
import pyro
import pyro.poutine as poutine
import pytest
import torch
from sklearn.mixture import GaussianMixture

from pyromem.memory import GaussianMixtureMemory

COVARIANCES = ["isotropic", "diagonal", "full"]


def random_precision(kind, d, generator):
    """A covariance argument of the given kind, and its precision matrix as numpy."""
    if kind == "isotropic":
        sigma = 0.7
        return {"scale": sigma}, np.eye(d) / sigma**2
    if kind == "diagonal":
        p = torch.rand(d, generator=generator, dtype=torch.float64) * 3 + 0.5
        return {"precision": p}, np.diag(p.numpy())
    a = torch.randn(d, d, generator=generator, dtype=torch.float64)
    p = a @ a.T / d + torch.eye(d, dtype=torch.float64)
    return {"precision_matrix": p}, p.numpy()


def on(device, kwargs):
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in kwargs.items()}


def sklearn_mixture(means, weights, kind, precision):
    """scikit-learn's GaussianMixture with the given parameters set by hand."""
    n, d = means.shape
    covariance_type = {"isotropic": "spherical", "diagonal": "diag", "full": "full"}[kind]
    gm = GaussianMixture(n_components=n, covariance_type=covariance_type)
    gm.weights_ = weights
    gm.means_ = means
    covariance = np.linalg.inv(precision)
    if kind == "isotropic":
        gm.covariances_ = np.full(n, covariance[0, 0])
        gm.precisions_cholesky_ = np.full(n, math.sqrt(precision[0, 0]))
    elif kind == "diagonal":
        gm.covariances_ = np.tile(np.diag(covariance), (n, 1))
        gm.precisions_cholesky_ = np.tile(np.sqrt(np.diag(precision)), (n, 1))
    else:
        gm.covariances_ = np.tile(covariance, (n, 1, 1))
        gm.precisions_cholesky_ = np.tile(np.linalg.cholesky(precision), (n, 1, 1))
    return gm


def hopfield_weights(means, beta):
    logits = 0.5 * beta * (means**2).sum(-1)
    w = np.exp(logits - logits.max())
    return w / w.sum()


@pytest.mark.parametrize("weights", ["balanced", "hopfield"])
@pytest.mark.parametrize("kind", COVARIANCES)
def test_log_prob_matches_sklearn(kind, weights, device):
    g = torch.Generator().manual_seed(0)
    n, d = 7, 4
    memory = torch.randn(n, d, generator=g, dtype=torch.float64)
    z = 1.5 * torch.randn(50, d, generator=g, dtype=torch.float64)
    cov, precision = random_precision(kind, d, g)
    beta = None
    if weights == "hopfield":
        beta = 0.8
        w = hopfield_weights(memory.numpy(), beta)
    else:
        w = np.full(n, 1 / n)
    prior = GaussianMixtureMemory(memory.to(device), weights=weights, beta=beta, **on(device, cov))
    expected = sklearn_mixture(memory.numpy(), w, kind, precision).score_samples(z.numpy())
    actual = prior.log_prob(z.to(device)).cpu().numpy()
    np.testing.assert_allclose(actual, expected, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(prior.log_weights.exp().cpu().numpy(), w, rtol=1e-12)


def test_hopfield_beta_defaults_to_inverse_variance(device):
    g = torch.Generator().manual_seed(1)
    memory = torch.randn(5, 3, generator=g, dtype=torch.float64)
    z = torch.randn(20, 3, generator=g, dtype=torch.float64)
    sigma = 0.6
    prior = GaussianMixtureMemory(memory.to(device), scale=sigma, weights="hopfield")
    w = hopfield_weights(memory.numpy(), 1 / sigma**2)
    expected = sklearn_mixture(memory.numpy(), w, "isotropic", np.eye(3) / sigma**2)
    np.testing.assert_allclose(
        prior.log_prob(z.to(device)).cpu().numpy(), expected.score_samples(z.numpy()), rtol=1e-10
    )


@pytest.mark.parametrize("kind", COVARIANCES)
def test_batched_memory_matches_each_memory(kind, device):
    g = torch.Generator().manual_seed(2)
    batch, n, d = 3, 6, 4
    memory = torch.randn(batch, n, d, generator=g, dtype=torch.float64)
    z = torch.randn(10, batch, d, generator=g, dtype=torch.float64)
    cov, precision = random_precision(kind, d, g)
    prior = GaussianMixtureMemory(memory.to(device), **on(device, cov))
    assert prior.batch_shape == (batch,) and prior.event_shape == (d,)
    actual = prior.log_prob(z.to(device)).cpu().numpy()
    assert actual.shape == (10, batch)
    for b in range(batch):
        gm = sklearn_mixture(memory[b].numpy(), np.full(n, 1 / n), kind, precision)
        np.testing.assert_allclose(actual[:, b], gm.score_samples(z[:, b].numpy()), rtol=1e-10)


def test_hopfield_energy_is_eq7_and_drops_the_documented_constant(device):
    g = torch.Generator().manual_seed(3)
    n, d, beta = 8, 5, 2.5
    memory = torch.randn(n, d, generator=g, dtype=torch.float64).to(device)
    z = torch.randn(30, d, generator=g, dtype=torch.float64).to(device)
    prior = GaussianMixtureMemory(memory, scale=beta**-0.5, weights="hopfield")
    eq7 = 0.5 * beta * (z * z).sum(-1) - torch.logsumexp(beta * z @ memory.T, -1)
    torch.testing.assert_close(prior.energy(z), eq7)
    constant = torch.logsumexp(0.5 * beta * (memory**2).sum(-1), -1) + 0.5 * d * math.log(
        2 * math.pi / beta
    )
    torch.testing.assert_close(-prior.log_prob(z) - prior.energy(z), constant.expand(30))


def test_balanced_energy_is_prior_term_of_eq29(device):
    g = torch.Generator().manual_seed(4)
    memory = torch.randn(6, 3, generator=g, dtype=torch.float64).to(device)
    z = torch.randn(10, 3, generator=g, dtype=torch.float64).to(device)
    sigma = 0.4
    prior = GaussianMixtureMemory(memory, scale=sigma)
    squared = ((z[:, None] - memory[None]) ** 2).sum(-1)  # tiny: fine to materialise here
    torch.testing.assert_close(prior.energy(z), -torch.logsumexp(-squared / (2 * sigma**2), -1))


def test_gmm_step_with_equal_norms_is_the_mchn_update(device):
    g = torch.Generator().manual_seed(5)
    n, d, sigma = 10, 6, 0.5
    memory = torch.randn(n, d, generator=g, dtype=torch.float64)
    memory = (2.0 * memory / memory.norm(dim=-1, keepdim=True)).to(device)
    z = torch.randn(40, d, generator=g, dtype=torch.float64).to(device)
    beta = 1 / sigma**2
    mchn = torch.softmax(beta * z @ memory.T, -1) @ memory  # eq. 28: M^T softmax(beta M z)
    prior = GaussianMixtureMemory(memory, scale=sigma)
    torch.testing.assert_close(prior.fixed_point_step(z, alpha=sigma**2), mchn)
    torch.testing.assert_close(prior.fixed_point_step(z), mchn)


def test_hopfield_step_is_the_mchn_update_for_any_norms(device):
    g = torch.Generator().manual_seed(6)
    memory = 2 * torch.randn(10, 6, generator=g, dtype=torch.float64).to(device)
    z = torch.randn(40, 6, generator=g, dtype=torch.float64).to(device)
    beta = 0.7
    prior = GaussianMixtureMemory(memory, scale=beta**-0.5, weights="hopfield")
    mchn = torch.softmax(beta * z @ memory.T, -1) @ memory
    torch.testing.assert_close(prior.fixed_point_step(z, alpha=1 / beta), mchn)


@pytest.mark.parametrize("kind", COVARIANCES)
@pytest.mark.parametrize("weights", ["balanced", "hopfield"])
def test_step_is_gradient_descent_on_the_energy(kind, weights, device):
    # eq. 44 (and 27): z - alpha * grad E(z), the gradient taken by autograd.
    g = torch.Generator().manual_seed(7)
    memory = torch.randn(5, 3, generator=g, dtype=torch.float64).to(device)
    z = torch.randn(8, 3, generator=g, dtype=torch.float64).to(device).requires_grad_()
    cov, _ = random_precision(kind, 3, g)
    beta = 1.3 if weights == "hopfield" else None
    prior = GaussianMixtureMemory(memory, weights=weights, beta=beta, **on(device, cov))
    (grad,) = torch.autograd.grad(prior.energy(z).sum(), z)
    alpha = 0.3
    torch.testing.assert_close(prior.fixed_point_step(z, alpha), z - alpha * grad)


@pytest.mark.parametrize("kind", COVARIANCES)
def test_small_sigma_step_returns_the_nearest_pattern(kind, device):
    g = torch.Generator().manual_seed(8)
    memory = torch.randn(20, 8, generator=g).to(device)
    z = memory[torch.arange(20) % 20] + 0.05 * torch.randn(20, 8, generator=g).to(device)
    small = {
        "isotropic": {"scale": 1e-3},
        "diagonal": {"precision": torch.full((8,), 1e6, device=device)},
        "full": {"precision_matrix": 1e6 * torch.eye(8, device=device)},
    }[kind]
    prior = GaussianMixtureMemory(memory, **small)
    torch.testing.assert_close(prior.fixed_point_step(z), memory, atol=1e-6, rtol=0)
    if kind == "isotropic":
        torch.testing.assert_close(prior.fixed_point_step(z, alpha=1e-6), memory)


ENERGY_CASES = {
    # (covariance, alpha): alpha = sigma^2 is eq. 45; None is the full (EM) step; 1 / max P is
    # a gradient step inside the 2 / lambda_max(P) bound.
    "isotropic-sigma2": ({"scale": 0.5}, 0.25),
    "isotropic-full-step": ({"scale": 0.5}, None),
    "diagonal-full-step": ({"precision": [8.0, 2.0, 0.5]}, None),
    "diagonal-1/max": ({"precision": [8.0, 2.0, 0.5]}, 1 / 8),
    "full-full-step": (
        {"precision_matrix": [[6.0, 2.0, 0.0], [2.0, 4.0, 1.0], [0.0, 1.0, 2.0]]},
        None,
    ),
}


@pytest.mark.parametrize("case", ENERGY_CASES)
@pytest.mark.parametrize("weights", ["balanced", "hopfield"])
def test_energy_never_increases_along_fixed_point_iterations(case, weights, device):
    cov, alpha = ENERGY_CASES[case]
    cov = {
        k: v if isinstance(v, float) else torch.tensor(v, dtype=torch.float64, device=device)
        for k, v in cov.items()
    }
    g = torch.Generator().manual_seed(9)
    memory = torch.randn(12, 3, generator=g, dtype=torch.float64).to(device)
    beta = 1.0 if weights == "hopfield" else None
    prior = GaussianMixtureMemory(memory, weights=weights, beta=beta, **cov)
    z = 3 * torch.randn(500, 3, generator=g, dtype=torch.float64).to(device)
    energies = [prior.energy(z)]
    for _ in range(20):
        z = prior.fixed_point_step(z, alpha)
        energies.append(prior.energy(z))
    energies = torch.stack(energies)
    assert (energies[1:] <= energies[:-1] + 1e-9).all()
    assert (energies[0] - energies[-1]).max() > 1  # the iterations do move


def test_far_away_queries_are_finite(device):
    g = torch.Generator().manual_seed(10)
    memory = torch.randn(50, 16, generator=g).to(device)
    direction = torch.randn(64, 16, generator=g).to(device)
    z = 1e3 * direction / direction.norm(dim=-1, keepdim=True)
    for kwargs in (
        {"scale": 0.1},
        {"scale": 0.1, "weights": "hopfield"},
        {"precision": torch.full((16,), 50.0, device=device)},
        {"precision_matrix": 50 * torch.eye(16, device=device)},
    ):
        prior = GaussianMixtureMemory(memory, **kwargs)
        log_prob = prior.log_prob(z)
        responsibilities = prior.responsibilities(z)
        assert torch.isfinite(log_prob).all() and torch.isfinite(responsibilities).all()
        assert torch.isfinite(prior.fixed_point_step(z)).all()
        torch.testing.assert_close(responsibilities.sum(-1), torch.ones(64, device=device))
        # the float32 result agrees with a float64 computation to float32 precision
        exact = GaussianMixtureMemory(
            memory.double(),
            **{k: v.double() if torch.is_tensor(v) else v for k, v in kwargs.items()},
        ).log_prob(z.double())
        torch.testing.assert_close(log_prob.double(), exact, rtol=1e-5, atol=0)


def test_components_far_below_the_best_change_no_float32_value(device):
    # logits spread over thousands of nats: the floor below the best component (which spares
    # exp() its slow underflow) must leave every value and gradient as a float64 reference has.
    g = torch.Generator().manual_seed(11)
    memory, z = torch.randn(40, 6, generator=g), torch.randn(30, 6, generator=g)
    z64 = z.double().requires_grad_()
    logits = -0.5 * torch.cdist(z64, memory.double()).pow(2) / 0.05**2
    exact = logits.logsumexp(-1) - math.log(40) - 3 * math.log(2 * math.pi * 0.05**2)
    (exact_grad,) = torch.autograd.grad(exact.sum(), z64)
    zz = z.to(device).requires_grad_()
    log_prob = GaussianMixtureMemory(memory.to(device), scale=0.05).log_prob(zz)
    (grad,) = torch.autograd.grad(log_prob.sum(), zz)
    assert (logits.detach().amax(-1, keepdim=True) - logits.detach() > 200).any()
    torch.testing.assert_close(log_prob.double().cpu(), exact.detach(), rtol=1e-6, atol=1e-3)
    torch.testing.assert_close(grad.double().cpu(), exact_grad, rtol=1e-4, atol=1e-2)
    responsibilities = GaussianMixtureMemory(memory.to(device), scale=0.05).responsibilities(
        z.to(device)
    )
    torch.testing.assert_close(
        responsibilities.double().cpu(), logits.detach().softmax(-1), rtol=1e-3, atol=1e-7
    )


def test_memory_use_is_order_batch_times_patterns(device):
    batch, n, d = 4096, 4096, 256
    g = torch.Generator().manual_seed(11)
    memory = torch.randn(n, d, generator=g).to(device)
    z = torch.randn(batch, d, generator=g).to(device)
    prior = GaussianMixtureMemory(memory, precision=torch.ones(d, device=device))
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.max_memory_allocated(device)
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    log_prob = prior.log_prob(z)
    step = prior.fixed_point_step(z, alpha=0.5)
    assert log_prob.shape == (batch,) and step.shape == (batch, d)
    if device.type == "cuda":
        grown = torch.cuda.max_memory_allocated(device) - before
    else:
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    full = batch * n * d * 4  # 17 GB: what a B x N x d tensor of differences would take
    assert grown < full / 16


@pytest.mark.parametrize("weights", ["balanced", "hopfield"])
@pytest.mark.parametrize("kind", COVARIANCES)
def test_sample_moments_match_the_mixture(kind, weights, device):
    g = torch.Generator().manual_seed(12)
    n, d = 4, 3
    memory = 2 * torch.randn(n, d, generator=g, dtype=torch.float64)
    cov, precision = random_precision(kind, d, g)
    beta = 0.5 if weights == "hopfield" else None
    prior = GaussianMixtureMemory(memory.to(device), weights=weights, beta=beta, **on(device, cov))
    w = hopfield_weights(memory.numpy(), beta) if beta else np.full(n, 1 / n)
    mean = w @ memory.numpy()
    spread = memory.numpy() - mean
    covariance = np.linalg.inv(precision) + (w[:, None] * spread).T @ spread

    samples = prior.sample((200_000,)).cpu().numpy()
    assert samples.shape == (200_000, d)
    np.testing.assert_allclose(samples.mean(0), mean, atol=0.03)
    np.testing.assert_allclose(np.cov(samples.T), covariance, atol=0.06)
    np.testing.assert_allclose(prior.mean.cpu().numpy(), mean, rtol=1e-10)
    np.testing.assert_allclose(prior.variance.cpu().numpy(), np.diag(covariance), rtol=1e-10)


def test_batched_sample_uses_each_memory(device):
    memory = torch.tensor([[[0.0, 0.0]], [[10.0, -10.0]]], device=device)  # two memories of N=1
    samples = GaussianMixtureMemory(memory, scale=1e-4).sample((3,))
    assert samples.shape == (3, 2, 2)
    torch.testing.assert_close(samples, memory.squeeze(-2).expand(3, 2, 2), atol=1e-2, rtol=0)


def test_gradients_match_finite_differences(device):
    g = torch.Generator().manual_seed(13)
    memory = torch.randn(4, 3, generator=g, dtype=torch.float64).to(device).requires_grad_()
    z = torch.randn(5, 3, generator=g, dtype=torch.float64).to(device).requires_grad_()
    precision = torch.rand(3, generator=g, dtype=torch.float64).add(0.5).to(device)
    precision.requires_grad_()
    a = torch.randn(3, 3, generator=g, dtype=torch.float64).to(device)
    tril = (torch.tril(a) + 2 * torch.eye(3, dtype=torch.float64, device=device)).requires_grad_()

    def diagonal(m, z, p):
        return GaussianMixtureMemory(m, precision=p, weights="hopfield", beta=0.7).log_prob(z)

    def full(m, z, t):
        return GaussianMixtureMemory(m, precision_matrix=t @ t.T).log_prob(z)

    assert torch.autograd.gradcheck(diagonal, (memory, z, precision))
    assert torch.autograd.gradcheck(full, (memory, z, tril))


def test_works_under_pyro_plate(device):
    memory = torch.randn(6, 3, device=device)

    def model():
        with pyro.plate("data", 5):
            return pyro.sample("z", GaussianMixtureMemory(memory, scale=1.0))

    trace = poutine.trace(model).get_trace()
    assert trace.nodes["z"]["value"].shape == (5, 3)
    assert trace.nodes["z"]["fn"].batch_shape == (5,)
    assert torch.isfinite(trace.log_prob_sum())


def test_per_batch_memories_under_vectorised_particles(device):
    memory = torch.randn(5, 6, 3, device=device)  # one memory per datapoint
    z_obs = torch.randn(4, 5, 3, device=device)

    def model():
        with pyro.plate("particles", 4, dim=-2), pyro.plate("data", 5, dim=-1):
            return pyro.sample("z", GaussianMixtureMemory(memory, scale=0.5), obs=z_obs)

    trace = poutine.trace(model).get_trace()
    trace.compute_log_prob()
    log_prob = trace.nodes["z"]["log_prob"]
    assert log_prob.shape == (4, 5)
    for b in range(5):
        one = GaussianMixtureMemory(memory[b], scale=0.5).log_prob(z_obs[:, b])
        torch.testing.assert_close(log_prob[:, b], one)
    expanded = trace.nodes["z"]["fn"]
    assert expanded.sample().shape == (4, 5, 3)
    assert expanded.responsibilities(z_obs).shape == (4, 5, 6)


def test_expand_rejects_incompatible_batch_shape():
    prior = GaussianMixtureMemory(torch.randn(3, 6, 2), scale=1.0)
    with pytest.raises(ValueError, match="batch_shape"):
        prior.expand((4,))


@pytest.mark.parametrize(
    "memory, kwargs, error, match",
    [
        ([[0.0, 1.0]], {"scale": 1.0}, TypeError, "memory must be a torch.Tensor"),
        (torch.zeros(3, 2, dtype=torch.long), {"scale": 1.0}, TypeError, "floating-point"),
        (torch.zeros(3), {"scale": 1.0}, ValueError, r"batch_shape \+ \(N, d\)"),
        (torch.zeros(0, 2), {"scale": 1.0}, ValueError, "at least one pattern"),
        (torch.zeros(3, 2), {}, ValueError, "exactly one of"),
        (torch.zeros(3, 2), {"scale": 1.0, "precision": torch.ones(2)}, ValueError, "exactly one"),
        (torch.zeros(3, 2), {"scale": 0.0}, ValueError, "scale"),
        (torch.zeros(3, 2), {"scale": -1.0}, ValueError, "scale"),
        (torch.zeros(3, 2), {"scale": float("nan")}, ValueError, "scale"),
        (torch.zeros(3, 2), {"scale": "1"}, TypeError, "scale must be a float"),
        (torch.zeros(3, 2), {"scale": torch.ones(2)}, TypeError, "0-dim"),
        (torch.tensor([[0.0, float("nan")]]), {"scale": 1.0}, ValueError, "memory"),
        (torch.zeros(3, 2), {"precision": torch.ones(3)}, ValueError, r"precision.*\(2,\).*\(3,\)"),
        (torch.zeros(3, 2), {"precision": torch.tensor([1.0, 0.0])}, ValueError, "precision"),
        (torch.zeros(3, 2), {"precision_matrix": torch.eye(3)}, ValueError, "precision_matrix"),
        (
            torch.zeros(3, 2),
            {"precision": torch.ones(2, dtype=torch.float64)},
            TypeError,
            r"precision is torch.float64 but the memory is torch.float32",
        ),
        (
            torch.zeros(3, 2, dtype=torch.float64),
            {"precision_matrix": torch.eye(2)},
            TypeError,
            r"precision_matrix is torch.float32 but the memory is torch.float64",
        ),
        (
            torch.zeros(3, 2),
            {"precision": torch.ones(2, device="meta")},
            ValueError,
            r"precision: on meta, but the memory is on cpu",
        ),
        (
            torch.zeros(3, 2),
            {"precision_matrix": torch.tensor([[1.0, 2.0], [2.0, 1.0]])},
            ValueError,
            "precision_matrix",
        ),
        (torch.zeros(3, 2), {"scale": 1.0, "weights": "uniform"}, ValueError, "weights"),
        (torch.zeros(3, 2), {"scale": 1.0, "beta": 1.0}, ValueError, "beta is only used"),
        (
            torch.zeros(3, 2),
            {"precision": torch.ones(2), "weights": "hopfield"},
            ValueError,
            "beta is required",
        ),
        (torch.zeros(3, 2), {"scale": 1.0, "weights": "hopfield", "beta": 0.0}, ValueError, "beta"),
    ],
)
def test_constructor_errors(memory, kwargs, error, match):
    with pytest.raises(error, match=match):
        GaussianMixtureMemory(memory, **kwargs)


def test_query_errors():
    prior = GaussianMixtureMemory(torch.zeros(3, 2, 4), scale=1.0)
    with pytest.raises(ValueError, match=r"z must have shape \(\.\.\., 4\).*\(5, 3\)"):
        prior.log_prob(torch.zeros(5, 3))
    with pytest.raises(ValueError, match="broadcast with batch_shape"):
        prior.energy(torch.zeros(5, 4))
    with pytest.raises(ValueError, match="NaN"):
        prior.responsibilities(torch.full((3, 4), float("nan")))
    with pytest.raises(TypeError, match="z must be a torch.Tensor"):
        prior.fixed_point_step([0.0] * 4)
    for alpha in (0.0, -1.0, float("nan"), True, "1"):
        with pytest.raises(ValueError, match="alpha"):
            prior.fixed_point_step(torch.zeros(3, 4), alpha)


def test_expanded_views_as_memory_match_contiguous_copies(device):
    g = torch.Generator().manual_seed(14)
    z = torch.randn(7, 5, 2, 3, generator=g).to(device)
    for memory in (
        torch.randn(1, 3, generator=g).to(device).expand(4, 3),  # stride 0 along N
        torch.randn(2, 4, 3, generator=g).to(device).expand(5, 2, 4, 3),  # stride 0 along batch
    ):
        view = GaussianMixtureMemory(memory, scale=0.8, weights="hopfield")
        copy = GaussianMixtureMemory(memory.contiguous(), scale=0.8, weights="hopfield")
        torch.testing.assert_close(view.log_prob(z), copy.log_prob(z))
        torch.testing.assert_close(view.fixed_point_step(z), copy.fixed_point_step(z))
        torch.testing.assert_close(view.mean, copy.mean)
        torch.testing.assert_close(view.variance, copy.variance)


def test_queries_and_keys_on_another_device_than_the_memory_are_named():
    from pyromem.memory import spatial_read

    gmm = GaussianMixtureMemory(torch.zeros(3, 2), scale=1.0)
    with pytest.raises(ValueError, match="z: on meta, but the memory is on cpu"):
        gmm.log_prob(torch.zeros(4, 2, device="meta"))
    keys = torch.zeros(2, 1, 3, device="meta")
    with pytest.raises(ValueError, match="keys: on meta, but the memory is on cpu"):
        spatial_read(torch.rand(2, 1, 8, 8), keys, (4, 4))
