"""Integration: K++ against the plain VAE with the same nets, on digits episodes."""

import pyro
import pytest
import torch

from pyromem.data import load, sample_episodes
from pyromem.diagnostics import elbo_decomposition
from pyromem.models import VAE, KanervaPlusPlus

T, STEPS, IMAGES_PER_STEP = 2, 100, 32
# nats per image by which K++ must beat the VAE: more than the spread between two
# models that both still decode the mean image (about 0.3 nats at 100 steps)
MARGIN = 2.0


def _train_and_score(model, train, test, episodic):
    pyro.set_rng_seed(0)
    loss_fn = pyro.infer.Trace_ELBO()(model.model, model.guide)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(1)
    for _ in range(STEPS):
        x = sample_episodes(train, IMAGES_PER_STEP // T, T, generator=generator)
        optimizer.zero_grad()
        (loss_fn(x if episodic else x.flatten(0, 1)) / IMAGES_PER_STEP).backward()
        optimizer.step()
    with torch.no_grad():
        parts = elbo_decomposition(
            model.model, model.guide, test if episodic else test.flatten(0, 1), num_particles=10
        )
    return parts.elbo.mean().item() / (T if episodic else 1)


@pytest.fixture
def one_thread():
    # two or more threads on a shared 2-core machine make this test 5-10 times slower
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.xfail(
    strict=True,
    reason="after 100 steps neither model has left the mean-image solution (KL_z < 0.3, "
    "about -117.5 nats/image each); K++'s memory path carries almost no signal "
    "(across-episode std of M ~ 1e-3 of |M|), so it cannot beat the VAE by MARGIN",
)
def test_kpp_conditional_elbo_beats_the_plain_vae_after_the_same_short_training(one_thread):
    train = load("digits", "train", size=16, binarize="static").images
    test = load("digits", "test", size=16, binarize="static").images
    episodes = sample_episodes(test, 32, T, generator=torch.Generator().manual_seed(0))
    with pyro.validation_enabled(False):
        kpp = KanervaPlusPlus(
            (1, 16, 16),
            latent_dim=8,
            memory_shape=(1, 16, 16),
            block_shape=(8, 8),
            embed_dim=64,
            channels=(16, 32),
        )
        vae = VAE((1, 16, 16), latent_dim=8, net="conv")
        kpp_elbo = _train_and_score(kpp, train, episodes, episodic=True)
        vae_elbo = _train_and_score(vae, train, episodes, episodic=False)
    assert kpp_elbo > vae_elbo + MARGIN
