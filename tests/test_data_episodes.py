import numpy as np
import pytest
import torch

from pyromem.data import (
    FewShotEpisode,
    load,
    sample_class_episodes,
    sample_episode,
    sample_episodes,
    sample_few_shot,
)


@pytest.fixture(scope="module")
def digits():
    return load("digits", "test")


def _indices_of(images, pool):
    # Row of ``pool`` equal to each image (images of digits test split are distinct enough).
    flat, pool = images.flatten(1), pool.flatten(1)
    return [(pool == row).all(1).nonzero().flatten().tolist() for row in flat]


def test_exchangeable_episode_without_replacement():
    pool = torch.arange(20.0).view(20, 1, 1, 1).expand(20, 1, 2, 2) / 20
    g = torch.Generator().manual_seed(0)
    episode = sample_episode(pool, 20, generator=g)
    assert episode.shape == (20, 1, 2, 2)
    assert sorted((episode[:, 0, 0, 0] * 20).round().long().tolist()) == list(range(20))
    batch = sample_episodes(pool, 6, 7, generator=g)
    assert batch.shape == (6, 7, 1, 2, 2)
    ids = (batch[:, :, 0, 0, 0] * 20).round().long()
    assert all(len(set(row.tolist())) == 7 for row in ids)
    assert len({tuple(row.tolist()) for row in ids}) == 6
    again = sample_episodes(pool, 6, 7, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(again, batch)  # the generator moved on


def test_episodes_are_seeded_and_read_datasets(digits):
    a = sample_episodes(digits, 3, 10, generator=torch.Generator().manual_seed(4))
    b = sample_episodes(digits, 3, 10, generator=torch.Generator().manual_seed(4))
    assert a.shape == (3, 10, 1, 8, 8) and torch.equal(a, b)
    for row in _indices_of(a[0], digits.images):
        assert row  # every image comes from the dataset
    binary = load("digits", "test", binarize="dynamic")
    assert set(sample_episode(binary, 16).unique().tolist()) == {0.0, 1.0}


def test_episode_draws_are_uniform():
    pool = torch.arange(10.0).view(10, 1, 1, 1) / 10
    g = torch.Generator().manual_seed(0)
    ids = (sample_episodes(pool, 4000, 3, generator=g).flatten() * 10).round().long()
    counts = ids.bincount(minlength=10).float()
    assert (counts / counts.sum() - 0.1).abs().max() < 0.01


def test_few_shot_episode(digits):
    g = torch.Generator().manual_seed(0)
    episode = sample_few_shot(digits, 5, 3, 4, generator=g)
    assert isinstance(episode, FewShotEpisode)
    assert episode.memory.shape == (15, 1, 8, 8) and episode.query.shape == (20, 1, 8, 8)
    assert torch.equal(episode.memory_labels, torch.arange(5).repeat_interleave(3))
    assert torch.equal(episode.query_labels, torch.arange(5).repeat_interleave(4))
    assert len(set(episode.classes.tolist())) == 5
    # Relabelling: the new label k stands for the original class classes[k].
    assert torch.equal(
        digits.labels[episode.memory_indices], episode.classes[episode.memory_labels]
    )
    assert torch.equal(digits.labels[episode.query_indices], episode.classes[episode.query_labels])
    assert torch.equal(episode.memory, digits.images[episode.memory_indices])
    assert torch.equal(episode.query, digits.images[episode.query_indices])
    # Memory and queries are disjoint, and no image is drawn twice.
    used = torch.cat([episode.memory_indices, episode.query_indices]).tolist()
    assert len(set(used)) == len(used)


def test_few_shot_covers_classes_and_is_seeded():
    glyphs = load("glyphs", "test", num_drawers=5)
    seen = set()
    for seed in range(20):
        e = sample_few_shot(glyphs, 5, 1, 4, generator=torch.Generator().manual_seed(seed))
        seen |= set(e.classes.tolist())
        assert set(e.classes.tolist()) <= set(glyphs.labels.tolist())
    assert len(seen) > 35  # 50 classes in all
    a = sample_few_shot(glyphs, 5, 1, 4, generator=torch.Generator().manual_seed(3))
    b = sample_few_shot(glyphs, 5, 1, 4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.memory, b.memory) and torch.equal(a.query_indices, b.query_indices)


def test_few_shot_with_tensor_and_labels():
    images = torch.rand(12, 1, 2, 2)
    labels = torch.tensor([7, 7, 7, 3, 3, 3, 9, 9, 9, 5, 5, 5])
    e = sample_few_shot(images, 4, 2, 1, labels=labels, generator=torch.Generator())
    assert sorted(e.classes.tolist()) == [3, 5, 7, 9]
    assert e.query.shape == (4, 1, 2, 2)
    e = sample_few_shot(images, 2, 3, 0, labels=labels)
    assert e.query.shape == (0, 1, 2, 2) and e.query_labels.shape == (0,)


def test_class_episodes_hold_one_class_without_replacement_and_draw_uniformly():
    # 3 classes of 2, 5 and 9 images; each image's value is its index
    labels = torch.tensor([0] * 2 + [1] * 5 + [2] * 9)[
        torch.randperm(16, generator=torch.Generator().manual_seed(1))
    ]
    pool = torch.arange(16.0).view(16, 1, 1, 1)
    g = torch.Generator().manual_seed(0)
    ids = sample_class_episodes(pool, 6000, 3, labels=labels, generator=g).flatten(1).long()
    assert ids.shape == (6000, 3)
    episode_labels = labels[ids]
    assert (episode_labels == episode_labels[:, :1]).all()
    assert all(len(set(row)) == 3 for row in ids.tolist())
    # class 0 has fewer than 3 images, so classes 1 and 2 are each drawn half the time
    chosen = episode_labels[:, 0].bincount(minlength=3).float() / 6000
    assert chosen[0] == 0 and (chosen[1:] - 0.5).abs().max() < 0.02
    # within a class every image is in an episode 3 / size of the time
    inclusion = ids.flatten().bincount(minlength=16).float()
    for k, size in ((1, 5), (2, 9)):
        members = (labels == k).nonzero().flatten()
        rate = inclusion[members] / (episode_labels[:, 0] == k).sum()
        assert (rate - 3 / size).abs().max() < 0.03


def test_class_episodes_read_datasets_and_are_seeded(digits):
    batch = sample_class_episodes(digits, 5, 4, generator=torch.Generator().manual_seed(3))
    assert batch.shape == (5, 4) + tuple(digits.images.shape[1:])
    for episode in batch:
        rows = _indices_of(episode, digits.images)
        assert len({digits.labels[row[0]].item() for row in rows}) == 1
    again = sample_class_episodes(digits, 5, 4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(again, batch)


def test_errors(digits):
    with pytest.raises(ValueError, match="length"):
        sample_episode(digits, 0)
    with pytest.raises(ValueError, match="length"):
        sample_episode(digits, len(digits) + 1)
    with pytest.raises(ValueError, match="num_episodes"):
        sample_episodes(digits, 0, 3)
    with pytest.raises(TypeError, match="length"):
        sample_episode(digits, 2.0)
    with pytest.raises(ValueError, match="num_classes = 11"):
        sample_few_shot(digits, 11, 1, 1)
    with pytest.raises(ValueError, match="num_shots \\+ num_queries = 40"):
        sample_few_shot(digits, 5, 20, 20)
    with pytest.raises(ValueError, match="labels"):
        sample_few_shot(digits.images, 5, 1, 1)
    with pytest.raises(ValueError, match="labels"):
        sample_few_shot(digits.images, 5, 1, 1, labels=digits.labels[:-1])
    with pytest.raises(TypeError, match="generator"):
        sample_episode(digits, 3, generator=0)
    with pytest.raises(ValueError, match="num_shots"):
        sample_few_shot(digits, 5, 0, 1)
    largest = digits.labels.bincount().max().item()
    with pytest.raises(ValueError, match=f"at most the {largest} images of the largest class"):
        sample_class_episodes(digits, 2, largest + 1)
    with pytest.raises(ValueError, match="labels"):
        sample_class_episodes(digits.images, 2, 3)
    with pytest.raises(ValueError, match="num_episodes"):
        sample_class_episodes(digits, 0, 3)


def test_unlabelled_data_has_no_classes_to_draw_from(tmp_path, digits):
    # a .npz without labels gives every image -1; read as one class, "same-class" episodes
    # and few-shot episodes would silently be random ones
    np.savez(tmp_path / "mine.npz", images=(digits.images[:20, 0] * 255).byte().numpy())
    unlabelled = load("npz", root=tmp_path / "mine.npz")
    assert unlabelled.labels.tolist() == [-1] * len(unlabelled)
    message = r"^labels: every label of npz is -1 \(unlabelled"
    with pytest.raises(ValueError, match=message):
        sample_class_episodes(unlabelled, 2, 3)
    with pytest.raises(ValueError, match=message):
        sample_few_shot(unlabelled, 1, 1, 1)
    with pytest.raises(ValueError, match=r"^labels: every label of data is -1"):
        sample_class_episodes(digits.images, 2, 3, labels=torch.full((len(digits),), -1))
    # episodes that need no classes still draw from it
    assert sample_episodes(unlabelled, 2, 3).shape == (2, 3, 1, 8, 8)


def test_images_labelled_minus_one_belong_to_no_class(digits):
    # a partly labelled dataset: -1 read as a class made episodes of unrelated images
    labels = digits.labels.clone()
    labels[:100] = -1
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match=r"num_classes = 11 exceeds the 10 classes"):
        sample_few_shot(digits, 11, 1, 1, labels=labels, generator=g)
    episode = sample_few_shot(digits, 10, 1, 1, labels=labels, generator=g)
    assert -1 not in episode.classes.tolist()
    assert (labels[episode.memory_indices] >= 0).all() and (
        labels[episode.query_indices] >= 0
    ).all()
    # 40 one-image episodes: each would be drawn from the 100 unlabelled images with p = 1/11
    episodes = sample_class_episodes(digits.images, 40, 1, labels=labels, generator=g)
    first = digits.images[:100].flatten(1)
    assert not (episodes.flatten(2)[:, 0, None] == first[None]).all(-1).any()


def test_data_that_does_not_give_image_tensors_is_refused(digits):
    with pytest.raises(TypeError, match=r"numpy\.ndarray .*torch\.as_tensor"):
        sample_episode(digits.images.numpy(), 3)
    # a TensorDataset's items are tuples, which torch.stack refused in its own words
    pairs = torch.utils.data.TensorDataset(digits.images, digits.labels)
    with pytest.raises(TypeError, match=r"image tensor \(C, H, W\) for each index, got tuple"):
        sample_episodes(pairs, 2, 3)


def test_fresh_episodes_check_the_epoch_when_it_is_set():
    from pyromem.data import FreshEpisodes

    episodes = FreshEpisodes(lambda generator: torch.rand(1, generator=generator), 3)
    # the bad epoch stopped only at the next item, in NumPy's own words
    with pytest.raises(ValueError, match=r"^epoch: expected an int >= 0, got -1"):
        episodes.set_epoch(-1)
    with pytest.raises(ValueError, match=r"^rank: expected an int >= 0, got 0.5"):
        episodes.set_epoch(1, 0.5)
