"""The updates of the refinement guides against the paper's equations computed directly."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyromem.data import load
from pyromem.infer import (
    LearnedPrecisionRetrieval,
    MAPRefinement,
    MemoryFixedPoint,
    PredictiveCoding,
)
from pyromem.memory import GaussianMixtureMemory
from pyromem.models import VAE, MemoryVAE
from pyromem.models.plates import data_plate


def random_memory_vae(device, memory, **kwargs):
    vae = VAE((1, 4, 4), latent_dim=memory.shape[-1], hidden=(8,)).to(device)
    return MemoryVAE(vae, memory, **kwargs)


def images(device, n=5):
    return torch.bernoulli(torch.full((n, 1, 4, 4), 0.5, device=device))


def eq11(z, memory, sigma):
    """softmax(-||z - M_k||^2 / 2 sigma^2) M, directly."""
    return torch.softmax(-torch.cdist(z, memory).pow(2) / (2 * sigma**2), -1) @ memory


def gmm_energy(z, memory, sigma):
    return -torch.logsumexp(-torch.cdist(z, memory).pow(2) / (2 * sigma**2), -1)


def test_fixed_point_is_eq_11_and_never_raises_the_energy(device):
    memory = torch.randn(6, 3, device=device)
    m = random_memory_vae(device, memory, scale=0.8)
    x = images(device)
    _, path = MemoryFixedPoint(m.model, m.guide, num_steps=5).refine(x, trajectory=True)
    for before, after in zip(path, path[1:], strict=False):
        assert torch.allclose(after, eq11(before, memory, 0.8), atol=1e-5)
        assert (gmm_energy(after, memory, 0.8) <= gmm_energy(before, memory, 0.8) + 1e-5).all()
    # alpha = sigma^2 is the full step of eq. 45; a smaller alpha is a gradient step, eq. 44
    full = MemoryFixedPoint(m.model, m.guide, num_steps=1, alpha=0.64).refine(x)
    assert torch.allclose(full, path[1], atol=1e-5)
    _, path = MemoryFixedPoint(m.model, m.guide, num_steps=5, alpha=0.2).refine(x, trajectory=True)
    for before, after in zip(path, path[1:], strict=False):
        expected = before + 0.2 / 0.64 * (eq11(before, memory, 0.8) - before)
        assert torch.allclose(after, expected, atol=1e-5)
        assert (gmm_energy(after, memory, 0.8) <= gmm_energy(before, memory, 0.8) + 1e-5).all()


def test_one_step_with_a_vanishing_sigma_returns_the_nearest_pattern(device):
    memory = torch.randn(6, 3, device=device)
    m = random_memory_vae(device, memory, scale=1e-3)
    x = images(device)
    guide = MemoryFixedPoint(m.model, m.guide, num_steps=1)
    z0 = guide.initial(x)
    assert torch.equal(guide.refine(x), memory[torch.cdist(z0, memory).argmin(-1)])


def test_hopfield_weights_on_equal_norm_patterns_give_the_mchn_update_eq_8(device):
    memory = torch.randn(6, 3, device=device)
    memory = 1.5 * memory / memory.norm(dim=-1, keepdim=True)
    sigma = 0.6
    hopfield = random_memory_vae(device, memory, scale=sigma, weights="hopfield")
    balanced = MemoryVAE(hopfield.vae, memory, scale=sigma)
    x = images(device)
    z0, path = MemoryFixedPoint(hopfield.model, hopfield.guide, num_steps=3).refine(
        x, trajectory=True
    )
    for before, after in zip(path, path[1:], strict=False):
        beta = 1 / sigma**2
        assert torch.allclose(after, torch.softmax(beta * before @ memory.T, -1) @ memory)
    assert torch.allclose(
        z0, MemoryFixedPoint(balanced.model, balanced.guide, num_steps=3).refine(x), atol=1e-5
    )


def test_map_refinement_never_lowers_the_log_joint(device):
    memory = torch.randn(6, 3, device=device)
    m = random_memory_vae(device, memory, scale=0.5)
    x = images(device, 8)
    # a large rate, so that plain gradient steps overshoot and the line search must act
    guide = MAPRefinement(m.model, m.guide, num_steps=8, lr=5.0, prior_weight=1.0)
    _, path = guide.refine(x, trajectory=True)

    def log_joint(z):
        prior = dist.Normal(memory, 0.5).to_event(1).log_prob(z.unsqueeze(-2))
        logits = m.vae.decoder(z)
        lik = -nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none")
        return prior.logsumexp(-1) + lik.sum((-3, -2, -1))

    values = torch.stack([log_joint(z) for z in path]).detach()
    assert (values[1:] >= values[:-1] - 1e-4).all()
    assert (values[-1] > values[0] + 1e-3).all()
    plain = path[0] + 5.0 * torch.func.grad(lambda z: log_joint(z).sum())(path[0])
    assert (log_joint(plain) < values[0]).any(), "the test's rate should overshoot somewhere"


def gaussian_cascade(device, memory, sigma, variance):
    """z ~ GMM(M, sigma), x ~ N(f0(f1(f2(z))), variance) with small tanh layers (eq. 3)."""
    torch.manual_seed(1)
    layers = [
        nn.Sequential(nn.Linear(2, 5), nn.Tanh()),
        nn.Sequential(nn.Linear(5, 4), nn.Tanh()),
        nn.Linear(4, 6),
    ]
    layers = [f.to(device) for f in layers]
    decoder = nn.Sequential(*layers)

    def model(x):
        with data_plate(x):
            z = pyro.sample("z", GaussianMixtureMemory(memory, scale=sigma))
            pyro.sample("x", dist.Normal(decoder(z), math.sqrt(variance)).to_event(1), obs=x)

    def guide(x):
        with data_plate(x):
            pyro.sample("z", dist.Normal(x[:, :2], 1.0).to_event(1))

    return model, guide, layers


def test_pc_with_fixed_predictions_equals_bp_with_alpha_gamma_2(device):
    """App. C.2: one PC update of z (rate alpha = 2) is one BP step of eq. 10 with gamma = 2."""
    memory = torch.randn(4, 2, device=device)
    sigma = 1.5
    x = torch.randn(3, 6, device=device)
    z = torch.randn(3, 2, device=device)
    model_pc, guide, layers = gaussian_cascade(device, memory, sigma, variance=1.0)
    model_bp, _, _ = gaussian_cascade(device, memory, sigma, variance=0.5)
    pc = PredictiveCoding(model_pc, guide, layers, rate=2.0, fixed_predictions=True)
    # eq. 10's squared error is -log N(x; f(z), 1/2 I); its rate lambda = alpha / 2 (eq. 43)
    bp = MAPRefinement(model_bp, guide, lr=1.0, prior_weight=2.0)
    expected = bp.step(z, x)
    assert torch.allclose(pc.step(z, x), expected, atol=1e-5)
    # not a step the line search cut short, nor one of the prior alone
    plain = z + torch.func.grad(lambda v: bp.log_joint(v, x).sum())(z)
    assert torch.allclose(expected, plain, atol=1e-5)
    prior_only = GaussianMixtureMemory(memory, scale=sigma).fixed_point_step(z, alpha=2.0)
    assert not torch.allclose(expected, prior_only, atol=1e-2)


def test_pc_network_updates_are_gradient_steps_on_the_free_energy_eq_4(device):
    """Alg. 1 (eq. 31-32) is gradient descent on F of eq. 4 over (z, h_2, h_1), so F falls."""
    memory = torch.randn(4, 2, device=device)
    sigma = 1.5
    model, guide, layers = gaussian_cascade(device, memory, sigma, variance=1.0)
    x = torch.randn(3, 6, device=device)
    pc = PredictiveCoding(model, guide, layers, rate=0.1)

    def free_energy(z, h2, h1):
        errors = [h2 - layers[0](z), h1 - layers[1](h2), x - layers[2](h1)]
        log_prior = torch.logsumexp(-torch.cdist(z, memory).pow(2) / (2 * sigma**2), -1)
        return sum(0.5 * e.pow(2).sum(-1) for e in errors) - log_prior

    prior = pc.prior(x)
    start = pc.feedforward(torch.randn(3, 2, device=device))
    state = [s + 0.3 * torch.randn_like(s) for s in start]
    energies = [free_energy(*state)]
    for _ in range(50):
        new = pc.update(state, x, prior)
        grads = torch.func.grad(lambda s: free_energy(*s).sum())(state)
        for after, before, grad in zip(new, state, grads, strict=True):
            assert torch.allclose(after, before - 0.1 * grad, atol=1e-5)
        state = new
        energies.append(free_energy(*state))
    energies = torch.stack(energies).detach()
    assert (energies[1:] <= energies[:-1] + 1e-5).all()
    assert (energies[-1] < energies[0] - 0.1).all()


def test_clean_and_noisy_digits_retrieve_their_pattern(device):
    torch.manual_seed(0)
    x = load("digits", "train").images.to(device)
    vae = VAE((1, 8, 8), 8, "gaussian", hidden=(64,), likelihood_kwargs={"scale": 0.2})
    vae = vae.to(device)
    loss_fn = pyro.infer.Trace_ELBO()(vae.model, vae.guide)
    optimizer = torch.optim.Adam(vae.parameters(), lr=3e-3)
    with pyro.validation_enabled(False):
        for _ in range(600):
            optimizer.zero_grad()
            batch = x[torch.randint(len(x), (128,), device=device)]
            (loss_fn(batch, num_data=len(x)) / len(x)).backward()
            optimizer.step()
    m = MemoryVAE(vae, scale=0.2)
    stored = x[:30]
    memory = m.write(stored)
    guide = MemoryFixedPoint(m.model, m.guide, num_steps=10)
    truth = torch.arange(30, device=device)
    z = guide.refine(stored)
    assert torch.equal(torch.cdist(z, memory).argmin(-1), truth)
    assert (z - memory).norm(dim=-1).max() < 1e-2
    noisy = stored + 0.2 * torch.randn_like(stored)
    hits = torch.cdist(guide.refine(noisy), memory).argmin(-1) == truth
    assert hits.float().mean() >= 0.9


def test_learned_precision_ignores_a_corrupted_dim(device):
    g = torch.Generator().manual_seed(0)
    memory = torch.randn(20, 6, generator=g)

    def queries(n):
        k = torch.randint(20, (n,), generator=g)
        q = memory[k] + 0.1 * torch.randn(n, 6, generator=g)
        q[:, 0] += 4.0 * (2 * torch.randint(2, (n,), generator=g) - 1)  # the "colour" dim
        return q.to(device), k.to(device)

    (train, k_train), (test, k_test) = queries(100), queries(100)
    memory = memory.to(device)
    retrieval = LearnedPrecisionRetrieval(6, num_steps=3, scale=0.5).to(device)

    def accuracy():
        with torch.no_grad():
            nearest = torch.cdist(retrieval(test, memory), memory).argmin(-1)
        return (nearest == k_test).float().mean()

    baseline = accuracy()
    losses = retrieval.fit(train, memory, memory[k_train], epochs=100, lr=0.05)
    assert losses[-1] < 0.1 * losses[0]
    precision = retrieval.precision.detach()
    assert precision[0] < 0.25 * precision[1:].min() and precision[0] < 4.0
    assert baseline < 0.5 and accuracy() >= 0.95
    # as a guide of MemoryVAE with the learned precision, the same retrieval
    prior = GaussianMixtureMemory(memory, precision=precision)
    z = test
    for _ in range(3):
        z = prior.fixed_point_step(z)
    assert torch.allclose(z, retrieval(test, memory).detach(), atol=1e-5)


def test_learned_precision_checks_its_arguments():
    with pytest.raises(ValueError, match="latent_dim"):
        LearnedPrecisionRetrieval(0)
    retrieval = LearnedPrecisionRetrieval(2)
    with pytest.raises(ValueError, match="targets must have the shape"):
        retrieval.fit(torch.zeros(3, 2), torch.zeros(4, 2), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="memory width"):
        retrieval(torch.zeros(3, 2), torch.zeros(4, 5))
    # float64 codes with the float32 module: named in one line, not promoted silently
    codes = torch.zeros(4, 2, dtype=torch.float64)
    match = "memory is torch.float64 but the parameters of LearnedPrecisionRetrieval are"
    with pytest.raises(TypeError, match=match):
        retrieval(codes[:3], codes)
    with pytest.raises(TypeError, match=match):
        retrieval.fit(codes[:3], codes, codes[:3], loss="nll")
    assert retrieval.double()(codes[:3], codes).dtype == torch.float64


@pytest.mark.parametrize("full", [False, True])
def test_learned_precision_log_responsibility_is_the_mixtures(full, device):
    # -log r_k* (the "nll" loss) against the responsibilities GaussianMixtureMemory computes
    # by its softmax, in float64; then training by it raises r_k* of rotated queries.
    g = torch.Generator().manual_seed(3)
    memory = torch.randn(2, 1, 12, 4, generator=g, dtype=torch.float64).to(device)
    index = torch.randint(12, (2, 7), generator=g).to(device)
    targets = memory.squeeze(1).gather(1, index[..., None].expand(2, 7, 4))
    rotation = torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=torch.float64))[0]
    queries = targets @ rotation.to(device)
    retrieval = LearnedPrecisionRetrieval(4, scale=0.7, full=full).to(device, torch.float64)
    with torch.no_grad():  # away from isotropic
        (retrieval.factor if full else retrieval.log_precision).add_(0.1)
    prior = GaussianMixtureMemory(memory, **retrieval.covariance())
    expected = prior.responsibilities(queries).gather(-1, index[..., None]).squeeze(-1).log()
    log_r = retrieval.log_responsibility(queries, memory, targets)
    torch.testing.assert_close(log_r, expected)
    losses = retrieval.fit(queries, memory, targets, epochs=30, lr=0.05, loss="nll")
    assert losses[-1] < 0.8 * losses[0]
    with pytest.raises(ValueError, match="loss"):
        retrieval.fit(queries, memory, targets, epochs=1, loss="l1")
