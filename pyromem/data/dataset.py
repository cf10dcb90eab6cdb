"""The image dataset every pyromem loader returns."""

import math

import torch

from pyromem.checks import as_float_tensor, as_int
from pyromem.data.splits import check_split
from pyromem.data.validation import SUPPORTS

BINARIZATIONS = (None, "static", "dynamic")


class ImageDataset(torch.utils.data.Dataset):
    """A split of an image dataset held in memory, with labels and generative factors.

    Indexing returns the image alone, because that is what the models train on;
    labels and factors stay available as attributes for evaluation and for the
    few-shot samplers of :mod:`pyromem.data.episodes`.

    Binarisation turns grey levels ``p`` into Bernoulli(``p``) pixels:

    - ``"static"`` draws ONE sample at construction with a ``torch.Generator``
      seeded by ``seed`` (the classic statically binarised MNIST), so the same
      arguments always give the same binary images;
    - ``"dynamic"`` keeps the grey levels in :attr:`images` and draws a fresh
      sample from torch's global generator on every access (seed it with
      ``pyro.set_rng_seed``), which acts as data augmentation.

    :param torch.Tensor images: float images of shape ``(N, C, H, W)`` with finite values
        in [0, 1].
    :param torch.Tensor labels: integer labels of shape ``(N,)``; stored as ``long``.
        A label of ``-1`` means "unlabelled": the loaders of a user's own data
        (``load("npz", ...)`` without a ``labels`` array) give every image -1,
        and functions that need classes, such as
        :func:`~pyromem.data.classes.select_classes`, refuse such a dataset.
    :param dict factors: optional generative factors, name -> tensor with leading
        dimension ``N`` (e.g. position, colour, alphabet, drawer).
    :param str name: the dataset's name, e.g. ``"digits"``.
    :param str split: the split, ``"train"`` or ``"test"``, as for
        :func:`~pyromem.data.load`.
    :param str support: the support of the (non-binarised) pixels, one of
        ``"binary"``, ``"unit_interval"`` or ``"8bit"``; binarised datasets report
        ``"binary"``.
    :param str binarize: ``None``, ``"static"`` or ``"dynamic"``; needs ``C == 1``.
    :param int seed: seed of the static binarisation, a non-negative int
        (:func:`~pyromem.data.load` takes one in [0, 2**32 - 1]).
    :raises TypeError: if ``images`` is not a floating-point tensor or ``labels`` not an
        integer tensor.
    :raises ValueError: if a shape does not fit, an image holds NaN, an infinite value or
        one outside [0, 1], ``split``, ``support`` or ``binarize`` is not one that
        :func:`~pyromem.data.load` accepts, or ``seed`` is not a non-negative int.
    """

    value_range = (0.0, 1.0)
    #: What one item is, as the training engine's progress lines name their ELBOs' unit.
    datapoint = "image"

    def __init__(
        self,
        images,
        labels,
        factors=None,
        *,
        name,
        split,
        support="unit_interval",
        binarize=None,
        seed=0,
    ):
        as_float_tensor(images, "images")
        if images.dim() != 4:
            raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
        if (
            not isinstance(labels, torch.Tensor)
            or labels.is_floating_point()
            or labels.is_complex()
        ):
            raise TypeError(
                f"labels must be an integer torch.Tensor, got "
                f"{getattr(labels, 'dtype', type(labels).__name__)}"
            )
        if labels.shape != images.shape[:1]:
            raise ValueError(
                f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}"
            )
        factors = dict(factors or {})
        for key, value in factors.items():
            if not isinstance(value, torch.Tensor) or value.shape[:1] != images.shape[:1]:
                raise ValueError(
                    f"factors[{key!r}] must be a tensor with leading dimension {images.shape[0]}, "
                    f"got {tuple(getattr(value, 'shape', ())) or type(value).__name__}"
                )
        check_split(split)
        # load's check of seed: manual_seed would stop on 1.5 with a torch error
        seed = as_int(seed, "seed", 0)
        if support not in SUPPORTS or support == "real":
            raise ValueError(
                f"support must be 'binary', 'unit_interval' or '8bit', got {support!r}"
            )
        if binarize not in BINARIZATIONS:
            raise ValueError(f"binarize must be one of {BINARIZATIONS}, got {binarize!r}")
        if binarize is not None and images.shape[1] != 1:
            raise ValueError(
                f"binarize={binarize!r} (--binarize) needs grey-scale images (C = 1), got C = "
                f"{images.shape[1]}"
            )
        if images.numel():
            # one pass over the images: NaN propagates through the reduction, inf reaches it
            lo, hi = (value.item() for value in torch.aminmax(images))
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise ValueError("images contains NaN or infinite values")
            if lo < 0 or hi > 1:
                raise ValueError(f"images must take values in [0, 1], got [{lo:g}, {hi:g}]")
        if binarize == "static":
            generator = torch.Generator().manual_seed(seed)
            images = torch.bernoulli(images, generator=generator)
        self.images = images
        self.labels = labels.long()
        self.factors = factors
        self.name = name
        self.split = split
        self.binarize = binarize
        self.support = "binary" if binarize is not None else support

    @property
    def event_shape(self):
        """The shape ``(C, H, W)`` of one image."""
        return tuple(self.images.shape[1:])

    def binarized(self, binarize, seed=0):
        """A copy of this dataset binarised ``"static"``-ally or ``"dynamic"``-ally.

        :param str binarize: ``None`` (an unbinarised copy), ``"static"`` or
            ``"dynamic"``.
        :param int seed: seed of the static binarisation, a non-negative int.
        :raises ValueError: if this dataset is already binarised or not grey-scale, or
            ``seed`` is not a non-negative int.
        """
        if self.binarize is not None:
            raise ValueError(f"the dataset is already binarised ({self.binarize!r})")
        return ImageDataset(
            self.images,
            self.labels,
            self.factors,
            name=self.name,
            split=self.split,
            support=self.support,
            binarize=binarize,
            seed=seed,
        )

    def subset(self, indices):
        """The dataset restricted to ``indices``, with the same name, split and binarisation.

        Labels and factors are indexed alike. A statically binarised dataset keeps
        its binary images as they are (no new draw) and still reports
        ``binarize="static"``; a dynamically binarised one keeps its grey levels
        and draws afresh at every access, as before.

        :param indices: integer indices of shape ``(M,)`` (tensor, array or
            sequence), or a boolean mask of shape ``(N,)``.
        :returns: an :class:`ImageDataset` of ``M`` images.
        """
        is_tensor = isinstance(indices, torch.Tensor)
        indices = torch.as_tensor(indices)
        if not is_tensor and indices.numel() == 0:
            indices = indices.long()  # an empty list reads as float32: no image, not a float
        if indices.dtype == torch.bool:
            if indices.shape != self.labels.shape:
                raise ValueError(
                    f"indices: a boolean mask must have shape ({len(self)},), "
                    f"got {tuple(indices.shape)}"
                )
            indices = indices.nonzero().squeeze(1)
        elif indices.is_floating_point() or indices.dim() != 1:
            raise ValueError(
                f"indices must be integers of shape (M,) or a boolean mask, got "
                f"{indices.dtype} {tuple(indices.shape)}"
            )
        indices = indices.long()
        # static: the images are already the binary sample; dynamic: grey levels,
        # for which the constructor draws nothing.
        subset = ImageDataset(
            self.images[indices],
            self.labels[indices],
            {key: value[indices] for key, value in self.factors.items()},
            name=self.name,
            split=self.split,
            support=self.support,
            binarize="dynamic" if self.binarize == "dynamic" else None,
        )
        subset.binarize = self.binarize
        return subset

    def __len__(self):
        return self.images.shape[0]

    def __getitem__(self, index):
        image = self.images[index]
        return torch.bernoulli(image) if self.binarize == "dynamic" else image

    def __getitems__(self, indices):
        # DataLoader calls this once per batch; one gather and one Bernoulli draw
        # for the whole batch instead of one per image. The default collate
        # function expects a list of samples, which unbind gives without a copy.
        return list(self[torch.as_tensor(indices, dtype=torch.long)].unbind(0))

    def __repr__(self):
        return (
            f"ImageDataset(name={self.name!r}, split={self.split!r}, size={len(self)}, "
            f"event_shape={self.event_shape}, support={self.support!r}, "
            f"binarize={self.binarize!r})"
        )
