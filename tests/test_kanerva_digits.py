"""Integration: K++ against the same nets without a memory, on digits episodes."""

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyromem.data import load, sample_episodes
from pyromem.diagnostics import elbo_decomposition
from pyromem.models import KanervaPlusPlus

T, STEPS, IMAGES_PER_STEP = 2, 300, 32
# nats per image by which K++ must beat the same nets without a memory: more than
# the spread between seeds of one model (about 0.4 nats at 300 steps)
MARGIN = 2.0


class _NoMemory(KanervaPlusPlus):
    """The VAE with K++'s nets: the readout prior fixed to p(z) = N(0, I).

    The plain ``VAE(net="conv")`` lacks K++'s LayerNorm on the embedding, which
    alone is worth 4-9 nats/image here; this baseline differs from K++ only by
    the memory (its keys are unused and q(y | X) can match p(y) at no cost).
    """

    def readout_prior(self, memory, keys):
        return dist.Normal(keys.new_zeros(keys.shape[:-2] + (self.latent_dim,)), 1.0).to_event(1)


def _train_and_score(model, train, test):
    pyro.set_rng_seed(0)
    loss_fn = pyro.infer.Trace_ELBO()(model.model, model.guide)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(1)
    for _ in range(STEPS):
        x = sample_episodes(train, IMAGES_PER_STEP // T, T, generator=generator)
        optimizer.zero_grad()
        (loss_fn(x) / IMAGES_PER_STEP).backward()
        optimizer.step()
    with torch.no_grad():
        parts = elbo_decomposition(model.model, model.guide, test, num_particles=10)
    return parts.elbo.mean().item() / T


@pytest.fixture
def one_thread():
    # two or more threads on a shared 2-core machine make this test 5-10 times slower
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.xfail(
    strict=True,
    reason="q(y | X) collapses onto p(y) (KL_y ~ 0.02): the memory holds the episode but not "
    "which image a key reads, so the readout prior gains 0.3-1.1 nats/image over N(0, I) after "
    "300 steps and 0.7-1.2 after 1000-2000 (not a matter of budget; docs/models/kanerva.md)",
)
def test_kpp_conditional_elbo_beats_its_nets_without_memory_after_the_same_training(one_thread):
    train = load("digits", "train", size=16, binarize="static").images
    test = load("digits", "test", size=16, binarize="static").images
    episodes = sample_episodes(test, 32, T, generator=torch.Generator().manual_seed(0))
    with pyro.validation_enabled(False):
        options = dict(
            latent_dim=8,
            memory_shape=(1, 16, 16),
            block_shape=(8, 8),
            embed_dim=64,
            channels=(16, 32),
        )
        torch.manual_seed(0)
        kpp_elbo = _train_and_score(KanervaPlusPlus((1, 16, 16), **options), train, episodes)
        torch.manual_seed(0)
        baseline_elbo = _train_and_score(_NoMemory((1, 16, 16), **options), train, episodes)
    assert kpp_elbo > baseline_elbo + MARGIN
