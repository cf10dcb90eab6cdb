"""``load``: one entry point to every dataset pyromem knows."""

import inspect

from pyromem.data.dataset import BINARIZATIONS
from pyromem.data.digits import digits
from pyromem.data.external import cifar10, fashion_mnist, mnist, omniglot
from pyromem.data.glyphs import glyphs
from pyromem.data.patches import patches
from pyromem.data.shapes import shapes
from pyromem.data.splits import check_seed, check_split
from pyromem.data.user import imagefolder, npz

EMBEDDED = {"digits": digits, "patches": patches, "shapes": shapes, "glyphs": glyphs}
EXTERNAL = {
    "mnist": mnist,
    "fashion_mnist": fashion_mnist,
    "omniglot": omniglot,
    "cifar10": cifar10,
}
USER = {"imagefolder": imagefolder, "npz": npz}
#: Every dataset name :func:`load` accepts, mapped to its loader.
DATASETS = {**EMBEDDED, **EXTERNAL, **USER}


def load(
    name,
    split="train",
    *,
    root=None,
    download=False,
    binarize=None,
    seed=0,
    size=None,
    **options,
):
    """Load one split of a dataset as an :class:`~pyromem.data.dataset.ImageDataset`.

    The embedded datasets (``"digits"``, ``"patches"``, ``"shapes"``,
    ``"glyphs"``) are built from files bundled with scikit-learn or generated
    procedurally; they need no ``root`` and no network and are the same for
    every call with the same arguments. ``"mnist"``, ``"fashion_mnist"``,
    ``"omniglot"`` and ``"cifar10"`` are read through torchvision from
    ``root``, and fetched there only with ``download=True``. ``"imagefolder"``
    (one sub-folder of images per class, optionally under ``train/`` and
    ``test/``) and ``"npz"`` (a NumPy ``.npz`` with ``images`` and optional
    ``labels``) read a user's own images from ``root``; see
    :mod:`pyromem.data.user`.

    :param str name: one of :data:`DATASETS`.
    :param str split: ``"train"`` or ``"test"``.
    :param root: directory of a torchvision dataset or of an ImageFolder, or
        the ``.npz`` file (str or path); required for those, refused for the
        embedded datasets, which read no folder.
    :param bool download: let torchvision fetch missing files into ``root``
        (an error for ``"imagefolder"``, ``"npz"`` and the embedded datasets).
    :param str binarize: ``None`` (grey levels), ``"static"`` (one fixed
        Bernoulli sample seeded by ``seed``) or ``"dynamic"`` (a fresh sample at
        every access); grey-scale (C = 1) datasets only.
    :param int seed: an int in [0, 2**32 - 1] fixing the train/test partition of the
        embedded datasets and of a user's own data that come unsplit, the
        procedural content of the embedded datasets, and static binarisation.
    :param int size: optional side length the images are resized (or, for
        glyphs, rendered) to.
    :param options: further keyword arguments of the dataset's own loader, e.g.
        ``num_scenes`` for shapes, ``num_alphabets`` for glyphs or
        ``test_fraction`` for imagefolder and npz (see :mod:`pyromem.data.shapes`,
        :mod:`pyromem.data.glyphs`, :mod:`pyromem.data.user`).
    :returns: an :class:`~pyromem.data.dataset.ImageDataset` with values in [0, 1].
    """
    if not isinstance(name, str) or name not in DATASETS:
        raise ValueError(f"unknown dataset name {name!r}; known names are {sorted(DATASETS)}")
    check_split(split)
    if binarize not in BINARIZATIONS:
        raise ValueError(f"binarize must be one of {BINARIZATIONS}, got {binarize!r}")
    check_seed(seed)
    loader = DATASETS[name]
    accepted = set(inspect.signature(loader).parameters) - {"split", "seed", "root", "download"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise TypeError(
            f"load({name!r}) got unexpected options {unknown}; "
            f"{name} accepts {sorted(accepted - {'size'})}"
        )
    if size is not None:
        options["size"] = size
    if name in EMBEDDED:
        if root is not None or download:
            # they would be ignored, and a run would store them as if they had mattered
            raise ValueError(
                f"root: {name} is embedded in pyromem and reads no folder; --root and "
                "--download are for torchvision's datasets and the user's own"
            )
        dataset = loader(split, seed=seed, **options)
    elif name in USER:
        dataset = loader(split, root=root, download=download, seed=seed, **options)
    else:
        dataset = loader(split, root=root, download=download, **options)
    return dataset if binarize is None else dataset.binarized(binarize, seed=seed)
