import math

import pyro
import pyro.poutine as poutine
import pytest
import torch

from pyromem.diagnostics import elbo_decomposition
from pyromem.experiments import kpp as recipe
from pyromem.models import KanervaPlusPlus

IMAGE = (1, 8, 8)


def small(**kwargs):
    options = dict(latent_dim=3, memory_shape=(2, 8, 8), block_shape=(4, 4), embed_dim=16)
    options.update(kwargs)
    return KanervaPlusPlus(IMAGE, **options)


def episodes(b, t, device):
    return torch.bernoulli(torch.full((b, t) + IMAGE, 0.4, device=device))


@pytest.mark.parametrize("write", ["block", "dense"])
def test_sites_and_shapes(device, write):
    kpp = small(write=write, reads=3).to(device)
    x = episodes(4, 5, device)
    guide_trace = poutine.trace(kpp.guide).get_trace(x, num_data=20)
    model_trace = poutine.trace(poutine.replay(kpp.model, trace=guide_trace)).get_trace(
        x, num_data=20
    )
    memory = model_trace.nodes["memory"]["value"]
    assert memory.shape == ((4, 2, 8, 8) if write == "block" else (4, 128))
    assert model_trace.nodes["y"]["value"].shape == (5, 4, 3, 3)  # time-major: T, B, K, 3
    assert model_trace.nodes["z"]["value"].shape == (5, 4, 3)
    assert model_trace.nodes["x"]["fn"].batch_shape == (5, 4)
    # the data plate scales B episodes to num_data episodes
    assert model_trace.nodes["x"]["scale"] == 5.0


def test_bits_per_dim_count_every_image_of_an_episode(device):
    # a datapoint is an episode of T images: its ELBO sums T images' terms, so bits/dim
    # divide by T * C * H * W observed scalars (they divided by one image's, T times too many)
    kpp, x = small().to(device), episodes(3, 5, device)
    parts = elbo_decomposition(kpp.model, kpp.guide, x, num_particles=2)
    scalars = 5 * torch.Size(IMAGE).numel()
    assert parts.num_dims == scalars
    torch.testing.assert_close(parts.bits_per_dim, -parts.elbo / (scalars * math.log(2)))


def test_terms_are_per_episode_sums_of_the_three_terms_of_eq_4(device):
    kpp = small().to(device)
    x = episodes(3, 4, device)
    parts = elbo_decomposition(kpp.model, kpp.guide, x, num_particles=3)
    assert set(parts.kl) == {"y", "z"} and set(parts.log_likelihood) == {"x"}
    assert parts.analytic_kl == {"y": True, "z": True}
    assert parts.elbo.shape == (3,)


@pytest.mark.parametrize("encoder", ["conv", "resnet18-tsm"])
def test_only_the_temporal_shift_encoder_mixes_the_images_of_an_episode(device, encoder):
    # 8 channels shift one each way in the first stage, at 8x8; with 4 that stage shifts none,
    # and what reaches image 0 from image 1 later is below rounding (~1e-13)
    channels = (8,) if encoder == "resnet18-tsm" else None
    kpp = small(encoder=encoder, channels=channels).to(device).double()
    x = episodes(2, 3, device).double()
    changed = x.clone()
    changed[0, 1] = 1 - changed[0, 1]
    with torch.no_grad():
        before, after = kpp.embed(x), kpp.embed(changed)
    # image 0 of the changed episode sees image 1 only through the temporal shift
    moved = (before[0, 0] - after[0, 0]).abs().max()
    if encoder == "conv":
        assert moved == 0
    else:
        assert moved > 0.1 * before[0, 0].abs().max()
    # never through another episode of the batch
    torch.testing.assert_close(before[1], after[1], rtol=0, atol=0)
    assert before.shape == (2, 3, 16)


def test_resnet18_tsm_kpp_trains_reads_and_rebuilds(device):
    kpp = small(encoder="resnet18-tsm", channels=(4,)).to(device)
    x = episodes(2, 3, device)
    loss = pyro.infer.Trace_ELBO().differentiable_loss(kpp.model, kpp.guide, x)
    loss.backward()
    assert all(p.grad is not None for p in kpp.encoder.parameters())
    with torch.no_grad():
        steps = kpp.iterative_read(x, kpp.write(x), steps=2)
    assert steps.shape == (3,) + x.shape
    again = KanervaPlusPlus(**kpp.config)
    again.load_state_dict(kpp.state_dict())


def test_plain_vae_of_the_same_nets_has_no_memory_and_a_standard_normal_prior(device):
    kpp = small(write="none").to(device)
    x = episodes(3, 4, device)
    with torch.no_grad():
        parts = elbo_decomposition(kpp.model, kpp.guide, x, num_particles=2)
        assert set(parts.kl) == {"z"}
        # KL(N(mu, sigma) || N(0, I)) in closed form, summed over the T images
        loc, scale = kpp.posterior(kpp.embed(x))
        kl = 0.5 * (scale**2 + loc**2 - 1 - 2 * scale.log()).sum(-1)
    torch.testing.assert_close(parts.kl["z"], kl.sum(-1))
    assert "memory" not in poutine.trace(kpp.model).get_trace(x).nodes
    with pytest.raises(ValueError, match="needs a memory"):
        kpp.write(x)
    with pytest.raises(ValueError, match="needs a memory"):
        kpp.generate(torch.zeros(3, 2, 8, 8, device=device))


def _per_image_elbo(kpp, images, length, memory, y, z):
    """The single-draw ELBO per image of ``images`` grouped in episodes of ``length``,
    with the memory fixed and the draws of y and z fixed per image."""
    b = len(images) // length

    def time_major(v):
        return v.reshape((b, length) + v.shape[1:]).transpose(0, 1)

    draws = {"y": time_major(y), "z": time_major(z)}
    x = images.reshape((b, length) + images.shape[1:])
    fixed = dict(draws, memory=memory.expand((b,) + memory.shape))
    model_trace = poutine.trace(poutine.condition(kpp.model, data=fixed)).get_trace(x, num_data=b)
    guide_trace = poutine.trace(poutine.condition(kpp.guide, data=draws)).get_trace(x, num_data=b)
    return (model_trace.log_prob_sum() - guide_trace.log_prob_sum()) / len(images)


def test_per_image_bound_does_not_depend_on_the_episode_length(device):
    # With a memory that ignores the episode, the same 12 images grouped as 6 x 2,
    # 4 x 3, 3 x 4 or 2 x 6 have the same bound per image: the data plate counts
    # episodes, the plate "episode" sums over T, nothing divides by T twice.
    kpp = small().to(device)
    images = episodes(1, 12, device)[0]
    memory = torch.randn(2, 8, 8, device=device)
    y = torch.randn(12, 2, 3, device=device)
    z = torch.randn(12, 3, device=device)
    with torch.no_grad():
        bounds = [_per_image_elbo(kpp, images, t, memory, y, z) for t in (2, 3, 4, 6)]
    for bound in bounds[1:]:
        torch.testing.assert_close(bound, bounds[0])
    # and the per-episode decomposition divided by T once is on the same scale
    x = images.reshape(4, 3, *IMAGE)
    conditioned = poutine.condition(kpp.model, data={"memory": memory.expand(4, 2, 8, 8)})
    with torch.no_grad():
        parts = elbo_decomposition(conditioned, kpp.guide, x, num_particles=200)
    assert abs(parts.elbo.mean() / 3 - bounds[0]) < 0.25 * abs(bounds[0])


def test_training_loss_is_per_episode_scaled_to_the_dataset(device):
    kpp = small().to(device)
    x = episodes(2, 3, device)
    loss = pyro.infer.Trace_ELBO().differentiable_loss
    pyro.set_rng_seed(1)
    whole = loss(kpp.model, kpp.guide, x)
    pyro.set_rng_seed(1)
    scaled = loss(kpp.model, kpp.guide, x, num_data=10)
    torch.testing.assert_close(scaled, whole * 5)


def test_generation_iterative_read_and_reconstruction(device):
    kpp = small().to(device)
    x = episodes(2, 4, device)
    with torch.no_grad():
        memory = kpp.write(x)
        images, keys = kpp.generate(memory, num_samples=5)
        assert images.shape == (2, 5) + IMAGE and keys.shape == (2, 5, 2, 3)
        perturbed, _ = kpp.generate(memory, keys=keys + 0.1 * torch.randn_like(keys))
        assert perturbed.shape == images.shape
        steps = kpp.iterative_read(x[:, :3], memory, steps=4)
        assert steps.shape == (5, 2, 3) + IMAGE
        torch.testing.assert_close(steps[0], x[:, :3])
        assert ((steps[1:] >= 0) & (steps[1:] <= 1)).all()
        assert kpp.reconstruct(x).shape == x.shape


def test_generate_takes_num_samples_first_and_the_old_form_warns(device):
    kpp = small().to(device)
    memory = kpp.write(episodes(2, 3, device)).detach()
    with torch.no_grad():
        pyro.set_rng_seed(0)
        keys = kpp.sample_keys(memory, 4)
        images = kpp.generate(4, memory, keys=keys)
        pyro.set_rng_seed(0)
        with pytest.warns(DeprecationWarning, match="generate"):
            old_images, old_keys = kpp.generate(memory, num_samples=4)
    # the same draws, in the same order, give the same keys and images
    torch.testing.assert_close(old_keys, keys)
    torch.testing.assert_close(old_images, images)
    assert images.shape == (2, 4) + IMAGE
    with pytest.raises(ValueError, match="generate needs a memory"):
        kpp.generate(4)
    with pytest.raises(ValueError, match="keys hold 4 samples per memory but num_samples is 2"):
        kpp.generate(2, memory, keys=keys)


def test_discretized_logistic_mixture_on_8bit_episodes(device):
    kpp = KanervaPlusPlus(
        (3, 8, 8),
        latent_dim=3,
        memory_shape=(3, 8, 8),
        block_shape=(4, 4),
        embed_dim=16,
        likelihood="discretized_logistic_mixture",
        likelihood_kwargs={"num_mixtures": 2},
    ).to(device)
    x = torch.randint(0, 256, (2, 3, 3, 8, 8), device=device) / 255.0
    loss = pyro.infer.Trace_ELBO().differentiable_loss(kpp.model, kpp.guide, x)
    assert torch.isfinite(loss)
    images, _ = kpp.generate(kpp.write(x), 2)
    assert images.shape == (2, 2, 3, 8, 8)


def test_rebuild_from_config():
    kpp = small(write="dense", reads=4)
    again = KanervaPlusPlus(**kpp.config)
    assert again.config == kpp.config
    again.load_state_dict(kpp.state_dict())
    assert KanervaPlusPlus(**small(key_scale=1.5).config).key_scale == 1.5


def test_key_scale_reaches_the_block_reads():
    wide, narrow = small(key_scale=2.0), small(key_scale=1.0)
    narrow.load_state_dict(wide.state_dict())
    memory, keys = torch.randn(2, 2, 8, 8), torch.randn(3, 2, 2, 3)
    torch.testing.assert_close(
        wide.readout_prior(memory, 2 * keys).mean, narrow.readout_prior(memory, keys).mean
    )
    assert not torch.allclose(
        wide.readout_prior(memory, keys).mean, narrow.readout_prior(memory, keys).mean
    )


def test_recipe_test_episodes_hold_one_class_each():
    images = torch.arange(23.0).reshape(23, 1, 1, 1)  # image i holds the value i
    labels = torch.arange(23) % 3  # classes of 8, 8 and 7 images
    episodes = recipe.test_episodes(images, 3, seed=0, labels=labels)
    assert episodes.shape == (6, 3, 1, 1, 1)  # 2 episodes of 3 from each class
    index = episodes.reshape(6, 3).long()
    assert (labels[index] == labels[index[:, :1]]).all()
    assert len(set(index.flatten().tolist())) == 18
    assert sorted(labels[index[:, 0]].tolist()) == [0, 0, 1, 1, 2, 2]
    plain = recipe.test_episodes(images, 3, seed=0)
    assert plain.shape == (7, 3, 1, 1, 1) and len(set(plain.flatten().tolist())) == 21
    with pytest.raises(ValueError, match="8 images of its largest class"):
        recipe.test_episodes(images, 9, labels=labels)
    with pytest.raises(ValueError, match="episode_length: expected an int >= 1, got 0"):
        recipe.test_episodes(images, 0)


def test_bad_input():
    kpp = small()
    with pytest.raises(ValueError, match="at least 2 images"):
        kpp.model(episodes(3, 1, "cpu"))
    with pytest.raises(ValueError, match=r"episodes of shape \(B, T, 1, 8, 8\)"):
        kpp.guide(torch.zeros(3, 1, 8, 8))
    with pytest.raises(ValueError, match="must have shape"):
        kpp.model(torch.zeros(3, 2, 1, 7, 7))
    with pytest.raises(ValueError, match="binary"):
        kpp.model(torch.full((3, 2, 1, 8, 8), 0.5))
    with pytest.raises(TypeError):
        kpp.model(torch.zeros(3, 2, 1, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="cannot hold blocks"):
        small(memory_shape=(2, 8, 8), block_shape=(9, 4))
    with pytest.raises(ValueError, match="memory_shape must have 3 dims"):
        small(memory_shape=(8, 8))
    with pytest.raises(ValueError, match="write must be one of"):
        small(write="sparse")
    with pytest.raises(ValueError, match="key_scale must be a positive"):
        small(key_scale=0)
    with pytest.raises(ValueError, match="encoder must be one of"):
        small(encoder="resnet50")
    with pytest.raises(ValueError, match=r"channels=\(width,\)"):
        small(encoder="resnet18-tsm", channels=(8, 16))
    with pytest.raises(ValueError, match=r"keys must have shape \(2, S, 2, 3\)"):
        kpp.generate(torch.zeros(2, 2, 8, 8), keys=torch.zeros(2, 5, 3))
    with pytest.raises(ValueError, match="x must have shape"):
        kpp.iterative_read(torch.zeros(3, 2, 1, 8, 8), torch.zeros(2, 2, 8, 8))


def test_dkm_accounting_divides_the_kls_twice_and_the_reconstruction_once(device):
    # Reference: the DKM code's reduction applied to per-image terms computed from the
    # nets with torch.distributions, at keys and latents fixed by replaying one guide draw.
    kpp, length = small().to(device).eval(), 4
    x = episodes(3, length, device)
    with torch.no_grad():
        embedding = kpp.embed(x).transpose(0, 1)  # (T, B, E)
        q_y, q_z = kpp.key_posterior(embedding), kpp.latent_posterior(embedding)
        draw = poutine.trace(kpp.guide).get_trace(x)
        y, z = draw.nodes["y"]["value"], draw.nodes["z"]["value"]
        p_y = torch.distributions.Independent(
            torch.distributions.Normal(0.0, torch.ones_like(y)), 2
        )
        kl = torch.distributions.kl_divergence(q_y, p_y) + torch.distributions.kl_divergence(
            q_z, kpp.readout_prior(kpp.write(x), y)
        )  # (T, B)
        reconstruction = kpp.decode(z).log_prob(x.transpose(0, 1))  # (T, B)
        expected = reconstruction.mean(0) - (kl / length).mean(0)
        parts = elbo_decomposition(kpp.model, poutine.replay(kpp.guide, draw), x, 1)
    actual = recipe.dkm_accounting_nats(parts, length)
    assert torch.allclose(actual, expected, atol=1e-4)
    # the per-image bound subtracts the whole KL, the DKM figure only 1/T of it
    assert torch.allclose(parts.elbo / length, reconstruction.mean(0) - kl.mean(0), atol=1e-4)
    assert (actual > parts.elbo / length).all()


def test_nearest_class_mean_agrees_with_scikit_learn():
    from sklearn.neighbors import NearestCentroid

    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(60) % 4
    images = torch.rand(60, *IMAGE, generator=generator) + labels.reshape(60, 1, 1, 1) / 4
    labels[:3] = -1  # unlabelled images are left out of the means
    queries = torch.rand(5, 7, *IMAGE, generator=generator) * 1.5
    expected = NearestCentroid().fit(images[3:].flatten(1).numpy(), labels[3:].numpy())
    predicted = recipe.nearest_class_mean(images, labels)(queries)
    assert predicted.shape == (5, 7)
    by_scikit_learn = expected.predict(queries.reshape(35, -1).numpy())
    assert predicted.flatten().tolist() == by_scikit_learn.tolist()
    with pytest.raises(ValueError, match="at least one labelled image"):
        recipe.nearest_class_mean(images, torch.full((60,), -1))
    with pytest.raises(ValueError, match="one label per image, got 60 images and 59"):
        recipe.nearest_class_mean(images, labels[1:])


class _Split:
    def __init__(self, images, labels):
        self.images, self.labels = images, labels


def test_read_class_agreement_counts_the_reads_of_the_episodes_class(device):
    # reads that copy the episode's own images agree with its class exactly as often as the
    # classifier is right on those images, counted here by scikit-learn's NearestCentroid
    from sklearn.neighbors import NearestCentroid

    generator = torch.Generator().manual_seed(1)
    train_labels = torch.arange(40) % 2
    train = _Split(
        torch.bernoulli(torch.full((40, *IMAGE), 0.4), generator=generator), train_labels
    )
    train.images[train_labels == 1, :, :4] = 1.0  # class 1: the top half lit
    x = torch.bernoulli(torch.full((6, 3, *IMAGE), 0.4), generator=generator)
    classes = torch.tensor([0, 1, 1, 0, 1, 0])
    x[classes == 1, :, :, :4] = 1.0
    x[0, 0, :, :4] = 1.0  # one image of class 0 that looks like class 1
    kpp = small().to(device)
    kpp.generate = lambda num_reads, memory: x.to(device)[:, [0, 1, 2, 0]][:, :num_reads]
    measured = recipe.read_class_agreement(
        kpp, x, classes, train, num_reads=4, device=torch.device(device)
    )
    centroid = NearestCentroid().fit(train.images.flatten(1).numpy(), train_labels.numpy())
    right = centroid.predict(x.flatten(0, 1).flatten(1).numpy()).reshape(6, 3) == (
        classes[:, None].numpy()
    )
    assert measured["reads_per_memory"] == 4
    assert measured["read_classifier_accuracy"] == pytest.approx(right.mean())
    assert measured["read_class_agreement"] == pytest.approx(right[:, [0, 1, 2, 0]].mean())
    assert measured["read_class_agreement"] < 1  # the odd image of episode 0 is read twice
    with pytest.raises(ValueError, match="num_reads: expected an int >= 1, got 0"):
        recipe.read_class_agreement(kpp, x, classes, train, num_reads=0)
    with pytest.raises(ValueError, match=r"one class per episode, shape \(6,\), got \(5,\)"):
        recipe.read_class_agreement(kpp, x, classes[:5], train)


def test_load_kpp_data_gives_each_same_class_episode_its_class():
    config = {"dataset": "digits", "binarize": "static", "same_class": True, "seed": 0}
    train, episodes, classes = recipe.load_kpp_data(config, 4)
    _, mixed, no_classes = recipe.load_kpp_data(dict(config, same_class=False), 4)
    assert no_classes is None and mixed.shape[1] == 4
    assert episodes.shape[:2] == (len(classes), 4)
    from pyromem.data import load

    test = load("digits", "test", binarize="static")
    # each episode's images are test images of its class
    for episode, label in zip(episodes[:10], classes[:10], strict=True):
        for image in episode:
            match = (test.images == image).flatten(1).all(1).nonzero().flatten()
            assert (test.labels[match] == label).any()
