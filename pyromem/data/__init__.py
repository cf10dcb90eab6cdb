"""Data for pyromem: embedded datasets, torchvision loaders, corruptions and episodes.

``load(name, split)`` returns an :class:`ImageDataset` whose items are images in
[0, 1]. The embedded datasets (``digits``, ``patches``, ``shapes``, ``glyphs``)
need no network; MNIST, FashionMNIST, Omniglot and CIFAR10 are read through
torchvision from a user's ``root``, and a user's own images from an ImageFolder
directory (``imagefolder``) or a ``.npz`` file (``npz``).
:func:`select_classes` and :func:`few_shot_splits` give class-disjoint data for
few-shot learning.
"""

from pyromem.data.classes import few_shot_splits, select_classes
from pyromem.data.corruptions import (
    colour_rotation,
    gaussian_noise,
    poisson,
    salt_and_pepper,
    shift,
    speckle,
    square_mask,
)
from pyromem.data.dataset import BINARIZATIONS, ImageDataset
from pyromem.data.episodes import (
    FewShotEpisode,
    sample_class_episodes,
    sample_episode,
    sample_episodes,
    sample_few_shot,
)
from pyromem.data.fresh_episodes import FreshEpisodes
from pyromem.data.loading import DATASETS, load
from pyromem.data.resize import resize
from pyromem.data.splits import SPLITS
from pyromem.data.validation import check_images
from pyromem.data.views import AUGMENTATIONS, dihedral_views

__all__ = [
    "AUGMENTATIONS",
    "BINARIZATIONS",
    "DATASETS",
    "SPLITS",
    "FewShotEpisode",
    "FreshEpisodes",
    "ImageDataset",
    "check_images",
    "colour_rotation",
    "dihedral_views",
    "few_shot_splits",
    "gaussian_noise",
    "load",
    "poisson",
    "resize",
    "salt_and_pepper",
    "select_classes",
    "sample_class_episodes",
    "sample_episode",
    "sample_episodes",
    "sample_few_shot",
    "shift",
    "speckle",
    "square_mask",
]
