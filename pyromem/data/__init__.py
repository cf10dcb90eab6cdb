"""Data for pyromem: embedded datasets, torchvision loaders, corruptions and episodes.

``load(name, split)`` returns an :class:`ImageDataset` whose items are images in
[0, 1]. The embedded datasets (``digits``, ``patches``, ``shapes``, ``glyphs``)
need no network; MNIST, FashionMNIST, Omniglot and CIFAR10 are read through
torchvision from a user's ``root``.
"""

from pyromem.data.dataset import BINARIZATIONS, ImageDataset
from pyromem.data.loading import DATASETS, load
from pyromem.data.validation import check_images

__all__ = [
    "BINARIZATIONS",
    "DATASETS",
    "ImageDataset",
    "check_images",
    "load",
]
