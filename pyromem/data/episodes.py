"""Episodes: exchangeable sets of images and few-shot memory/query splits.

Memory models read a memory written from a set of images (an episode). The
samplers cover the papers' protocols: exchangeable episodes of ``T`` distinct
images (Kanerva++, VMA recall), the same within one class each, and few-shot
episodes of ``C`` classes with ``S`` memory shots and ``Q`` queries per class
(VMA few-shot learning).

``data`` is either a tensor of images ``(N, C, H, W)`` or a dataset such as
:class:`~pyromem.data.dataset.ImageDataset`; images are read through the
dataset's ``__getitems__`` where it has one, so dynamic binarisation applies.
"""

import dataclasses

import numpy as np
import torch

from pyromem.checks import as_int
from pyromem.data.validation import check_generator


def sample_episode(data, length, *, generator=None):
    """``length`` images drawn uniformly without replacement from ``data``.

    :param data: images ``(N, C, H, W)`` or a dataset of ``N`` images.
    :param int length: episode length ``T`` in [1, N].
    :param torch.Generator generator: optional source of randomness.
    :returns: images of shape ``(T, C, H, W)``.
    """
    return sample_episodes(data, 1, length, generator=generator)[0]


def sample_episodes(data, num_episodes, length, *, generator=None):
    """A batch of independent episodes, each without replacement within itself.

    :param data: images ``(N, C, H, W)`` or a dataset of ``N`` images.
    :param int num_episodes: number of episodes ``B >= 1``.
    :param int length: episode length ``T`` in [1, N].
    :param torch.Generator generator: optional source of randomness.
    :returns: images of shape ``(B, T, C, H, W)``.
    """
    size = _check_data(data)
    as_int(num_episodes, "num_episodes", 1, error=TypeError, form="split")
    as_int(length, "length", 1, error=TypeError, form="split")
    if length > size:
        raise ValueError(f"length must be at most the {size} images of data, got {length}")
    check_generator(generator)
    # Sorting uniform keys gives a uniform random permutation per row.
    keys = torch.rand((num_episodes, size), generator=generator, device=_device(generator))
    index = keys.argsort(dim=-1)[:, :length].cpu()
    return _fetch(data, index)


def sample_class_episodes(data, num_episodes, length, *, labels=None, generator=None):
    """A batch of episodes whose images share one class each.

    Each episode draws its class uniformly among the classes with at least
    ``length`` images, then ``length`` images of that class without replacement.
    A memory written from such an episode carries information about each of its
    images (their class and style) without having to tell them apart.

    :param data: images ``(N, C, H, W)`` or a dataset of ``N`` images.
    :param int num_episodes: number of episodes ``B >= 1``.
    :param int length: episode length ``T >= 1``.
    :param torch.Tensor labels: integer labels ``(N,)``; by default ``data.labels``, which
        must not be all -1 (unlabelled); images labelled -1 are never drawn.
    :param torch.Generator generator: optional source of randomness.
    :returns: images of shape ``(B, T, C, H, W)``.
    """
    size = _check_data(data)
    as_int(num_episodes, "num_episodes", 1, error=TypeError, form="split")
    as_int(length, "length", 1, error=TypeError, form="split")
    check_generator(generator)
    order, classes, counts, starts = _classes(data, labels, size)
    eligible = (counts >= length).nonzero().squeeze(1)
    if len(eligible) == 0:
        raise ValueError(
            f"length must be at most the {counts.max().item()} images of the largest class, "
            f"got {length}"
        )
    device = _device(generator)
    chosen = eligible[
        torch.randint(len(eligible), (num_episodes,), generator=generator, device=device).cpu()
    ]
    # sorting uniform keys, with the slots past a class's size pushed last, gives a uniform
    # random arrangement of that class's images in each row
    keys = torch.rand((num_episodes, counts.max().item()), generator=generator, device=device)
    keys = keys.cpu().masked_fill(torch.arange(keys.shape[1]) >= counts[chosen, None], 2.0)
    within = keys.argsort(dim=-1)[:, :length]
    return _fetch(data, order[starts[chosen, None] + within])


@dataclasses.dataclass
class FewShotEpisode:
    """A few-shot episode: a memory of labelled shots and disjoint queries.

    Both sets are ordered by class: all shots of class 0, then of class 1, ...

    :ivar memory: the memory images, a tensor ``(C * S, ...)``.
    :ivar memory_labels: long labels relabelled to 0..C-1, a tensor ``(C * S,)``.
    :ivar query: the query images, a tensor ``(C * Q, ...)``.
    :ivar query_labels: long labels relabelled to 0..C-1, a tensor ``(C * Q,)``.
    :ivar classes: the original class id of each new label, a tensor ``(C,)``,
        so ``classes[memory_labels]`` are the original labels.
    :ivar memory_indices: indices of the memory in ``data``, a tensor ``(C * S,)``.
    :ivar query_indices: indices of the queries in ``data``, a tensor ``(C * Q,)``.
    """

    memory: torch.Tensor
    memory_labels: torch.Tensor
    query: torch.Tensor
    query_labels: torch.Tensor
    classes: torch.Tensor
    memory_indices: torch.Tensor
    query_indices: torch.Tensor


def sample_few_shot(data, num_classes, num_shots, num_queries, *, labels=None, generator=None):
    """A ``C``-way ``S``-shot episode with ``Q`` queries per class.

    Classes are drawn uniformly without replacement among the classes present
    in ``labels``; within each class the ``S + Q`` examples are drawn without
    replacement, so memory and queries never share an image.

    :param data: images ``(N, C, H, W)`` or a dataset of ``N`` images.
    :param int num_classes: classes per episode ``C >= 1``.
    :param int num_shots: memory examples per class ``S >= 1``.
    :param int num_queries: query examples per class ``Q >= 0``.
    :param torch.Tensor labels: integer labels ``(N,)``; by default
        ``data.labels``, which must not be all -1 (unlabelled); images labelled -1 belong
        to no class and are never drawn.
    :param torch.Generator generator: optional source of randomness.
    :returns: a :class:`FewShotEpisode`.
    """
    size = _check_data(data)
    as_int(num_classes, "num_classes", 1, error=TypeError, form="split")
    as_int(num_shots, "num_shots", 1, error=TypeError, form="split")
    as_int(num_queries, "num_queries", 0, error=TypeError, form="split")
    check_generator(generator)
    order, classes, counts, starts = _classes(data, labels, size)
    if len(classes) < num_classes:
        raise ValueError(f"num_classes = {num_classes} exceeds the {len(classes)} classes in data")
    needed = num_shots + num_queries
    if counts.min() < needed:
        smallest = counts.argmin()
        raise ValueError(
            f"every class needs num_shots + num_queries = {needed} examples, but class "
            f"{classes[smallest].item()} has {counts[smallest].item()}"
        )
    device = _device(generator)
    chosen = torch.randperm(len(classes), generator=generator, device=device)[:num_classes].cpu()
    picks = []
    for k in chosen.tolist():
        within = torch.randperm(counts[k].item(), generator=generator, device=device)[:needed]
        picks.append(order[starts[k] + within.cpu()])
    picks = torch.stack(picks)  # (C, S + Q)
    memory_indices = picks[:, :num_shots].reshape(-1)
    query_indices = picks[:, num_shots:].reshape(-1)
    new = torch.arange(num_classes)
    return FewShotEpisode(
        memory=_fetch(data, memory_indices),
        memory_labels=new.repeat_interleave(num_shots),
        query=_fetch(data, query_indices),
        query_labels=new.repeat_interleave(num_queries),
        classes=classes[chosen],
        memory_indices=memory_indices,
        query_indices=query_indices,
    )


def _classes(data, labels, size):
    # labels (N,) sorted into classes: (order, classes, counts, starts), all on the CPU, where
    # order[starts[k] : starts[k] + counts[k]] are the indices of class classes[k]
    if labels is None:
        labels = getattr(data, "labels", None)
        if labels is None:
            raise ValueError("labels must be given when data has no labels attribute")
    if (
        not isinstance(labels, torch.Tensor)
        or labels.is_floating_point()
        or labels.shape != (size,)
    ):
        raise ValueError(
            f"labels must be an integer tensor of shape ({size},), got "
            f"{getattr(labels, 'dtype', type(labels).__name__)} "
            f"{tuple(getattr(labels, 'shape', ()))}"
        )
    labels = labels.cpu()
    labelled = (labels != -1).nonzero().squeeze(1)
    if len(labelled) == 0:
        # -1 marks an unlabelled image (ImageDataset); read as one class, every episode would
        # silently be a random one
        name = getattr(data, "name", None)
        raise ValueError(
            f"labels: every label of {name or 'data'} is -1 (unlabelled, e.g. a .npz without "
            "a labels array), so there are no classes to draw episodes from"
        )
    # an image labelled -1 belongs to no class: read as class -1, the unlabelled images of a
    # partly labelled dataset would make episodes of unrelated images
    order = labelled[labels[labelled].argsort(stable=True)]
    classes, counts = labels[order].unique_consecutive(return_counts=True)
    starts = counts.cumsum(0) - counts
    return order, classes, counts, starts


def _fetch(data, index):
    # index: any shape of CPU long indices; returns images of shape index.shape + event.
    if isinstance(data, torch.Tensor):
        return data[index.to(data.device)]
    flat = index.reshape(-1).tolist()
    if hasattr(data, "__getitems__"):
        items = data.__getitems__(flat)
    else:
        items = [data[i] for i in flat]
    if not items:
        example = data[0]
        return example.new_zeros(tuple(index.shape) + tuple(example.shape))
    bad = next((item for item in items if not isinstance(item, torch.Tensor)), None)
    if bad is not None:
        # e.g. a torchvision or TensorDataset item, an (image, label) tuple
        raise TypeError(
            f"data must give an image tensor (C, H, W) for each index, got "
            f"{type(bad).__name__}; pass the images as a tensor or an ImageDataset"
        )
    images = torch.stack(items)
    return images.reshape(tuple(index.shape) + tuple(images.shape[1:]))


def _check_data(data):
    if isinstance(data, np.ndarray):
        # it has __len__ and __getitem__, but its rows would stop torch.stack
        raise TypeError(
            f"data must be a tensor of images or a dataset, got a numpy.ndarray {data.shape}; "
            "convert it with torch.as_tensor(data)"
        )
    if isinstance(data, torch.Tensor):
        if data.dim() < 2:
            raise ValueError(f"data must be images of shape (N, C, H, W), got {tuple(data.shape)}")
    elif not (hasattr(data, "__len__") and hasattr(data, "__getitem__")):
        raise TypeError(f"data must be a tensor of images or a dataset, got {type(data).__name__}")
    size = len(data)
    if size == 0:
        raise ValueError("data is empty")
    return size


def _device(generator):
    return "cpu" if generator is None else generator.device
