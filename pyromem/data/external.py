"""MNIST, FashionMNIST, Omniglot and CIFAR10 read through torchvision.

These datasets are not bundled: they live under the user's ``root`` in
torchvision's on-disk layout, and are fetched there by torchvision only when
``download=True``.
"""

import functools
import os
import re

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from pyromem.checks import as_int
from pyromem.data.dataset import ImageDataset
from pyromem.data.resize import resize
from pyromem.data.splits import check_split


def mnist(split="train", *, root=None, download=False, size=None):
    """MNIST handwritten digits: 60,000 train / 10,000 test images.

    :param str split: ``"train"`` or ``"test"``.
    :param str root: directory holding ``MNIST/raw/*-ubyte``.
    :param bool download: fetch the files into ``root`` if they are missing.
    :param int size: optional side length the 28×28 images are resized to.
    :returns: an :class:`ImageDataset` of images ``(N, 1, 28, 28)`` with 8-bit
        values k/255 in [0, 1] and labels in 0..9.
    """
    return _idx_dataset("MNIST", "mnist", split, root, download, size)


def fashion_mnist(split="train", *, root=None, download=False, size=None):
    """Fashion-MNIST clothing images: 60,000 train / 10,000 test images.

    :param str split: ``"train"`` or ``"test"``.
    :param str root: directory holding ``FashionMNIST/raw/*-ubyte``.
    :param bool download: fetch the files into ``root`` if they are missing.
    :param int size: optional side length the 28×28 images are resized to.
    :returns: an :class:`ImageDataset` of images ``(N, 1, 28, 28)`` with 8-bit
        values k/255 in [0, 1] and labels in 0..9.
    """
    return _idx_dataset("FashionMNIST", "fashion_mnist", split, root, download, size)


def cifar10(split="train", *, root=None, download=False, size=None):
    """CIFAR10 colour photographs: 50,000 train / 10,000 test images.

    :param str split: ``"train"`` or ``"test"``.
    :param str root: directory holding ``cifar-10-batches-py/``.
    :param bool download: fetch the files into ``root`` if they are missing.
    :param int size: optional side length the 32×32 images are resized to.
    :returns: an :class:`ImageDataset` of RGB images ``(N, 3, 32, 32)`` with
        8-bit values k/255 in [0, 1] and labels in 0..9.
    """
    _check_arguments(split, size)
    data = _open(
        "CIFAR10",
        "cifar10",
        root,
        download,
        "cifar-10-batches-py",
        train=split == "train",
    )
    images = torch.as_tensor(data.data).permute(0, 3, 1, 2).float() / 255.0
    return _dataset(images, torch.as_tensor(data.targets), {}, "cifar10", split, size)


def omniglot(split="train", *, root=None, download=False, size=None):
    """Omniglot handwritten characters, split by alphabet like the original.

    The train split is the "background" set (30 alphabets, 964 characters) and
    the test split the "evaluation" set (20 alphabets, 659 characters), each
    character drawn once by 20 drawers. Images are inverted so that strokes
    are 1 and the background 0.

    :param str split: ``"train"`` (background) or ``"test"`` (evaluation).
    :param str root: directory holding ``omniglot-py/images_background/`` and
        ``omniglot-py/images_evaluation/``, extracted (torchvision's zips alone are not read).
    :param bool download: fetch the files into ``root`` if they are missing.
    :param int size: optional side length (e.g. 28) the 105×105 images are
        resized to; resized images are grey in [0, 1] rather than binary.
    :returns: an :class:`ImageDataset` of images ``(N, 1, 105, 105)`` (or
        ``size × size``), labels = character index within the split (ordered by
        alphabet, then character) and factors ``"alphabet"`` (index within the
        split), ``"character"`` (index within its alphabet) and ``"drawer"``
        (the drawer number in the file name, or -1 where it has none), each
        ``(N,)`` long.
    """
    _check_arguments(split, size)
    folder = "images_background" if split == "train" else "images_evaluation"
    data = _open(
        "Omniglot",
        "omniglot",
        root,
        download,
        os.path.join("omniglot-py", folder),
        background=split == "train",
    )
    # torchvision lists folders in os.listdir order, which differs between file
    # systems; sorting makes labels the same on every machine.
    characters = sorted(data._characters)
    alphabets = sorted(data._alphabets)
    files = sorted((data._characters[label], path) for path, label in data._flat_character_images)
    label_of = {character: index for index, character in enumerate(characters)}
    alphabet_of = {c: alphabets.index(c.split(os.sep)[0]) for c in characters}
    first_of = {}
    for character in characters:
        first_of.setdefault(alphabet_of[character], label_of[character])
    if not files:
        raise ValueError(
            f"omniglot: found no character images under {data.target_folder}; it should hold "
            "<alphabet>/<character>/<drawing>.png"
        )
    images, labels, alphabet, within, drawer = [], [], [], [], []
    for character, path in files:
        images.append(_read_grey(os.path.join(data.target_folder, character, path)))
        labels.append(label_of[character])
        alphabet.append(alphabet_of[character])
        within.append(label_of[character] - first_of[alphabet_of[character]])
        match = re.search(r"_(\d+)\.png$", path)
        drawer.append(int(match.group(1)) if match else -1)
    # Strokes are black (0) on white (255) on disk.
    images = 1.0 - torch.as_tensor(np.stack(images)).float().unsqueeze(1) / 255.0
    binary = bool(((images == 0) | (images == 1)).all())
    factors = {
        "alphabet": torch.as_tensor(alphabet),
        "character": torch.as_tensor(within),
        "drawer": torch.as_tensor(drawer),
    }
    return _dataset(
        images,
        torch.as_tensor(labels),
        factors,
        "omniglot",
        split,
        size,
        support="binary" if binary else "8bit",
    )


def _vision(name):
    # torchvision's dataset class `name`, imported at the first load of a dataset it reads:
    # importing torchvision takes a second or more, which the embedded datasets and
    # `pyromem --help` should not pay
    import torchvision.datasets

    return getattr(torchvision.datasets, name)


@functools.cache
def _omniglot_class():
    class _Omniglot(_vision("Omniglot")):
        # torchvision checks the md5 of the downloaded zip even when its content is
        # already extracted; a user who has only the extracted folders (the usual
        # way Omniglot is shared) can still load them.
        def _check_integrity(self):
            folder = os.path.join(self.root, self._get_target_folder())
            if os.path.isdir(folder):
                return True
            if not super()._check_integrity():
                return False
            # the zip matches its md5 but is not extracted: torchvision would skip the
            # download (and so the extraction) and then fail to list the missing folder
            raise _NotExtracted(folder + ".zip", folder)

    return _Omniglot


class _NotExtracted(Exception):
    # torchvision's Omniglot zip, there and intact, without its extracted folder
    def __init__(self, archive, folder):
        super().__init__(archive, folder)
        self.archive, self.folder = archive, folder


def _read_grey(path):
    # one Omniglot drawing as uint8 grey levels (H, W); a file PIL cannot decode is named
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("L"))
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"omniglot: cannot read {path} as an image ({error})") from error


def _check_arguments(split, size):
    # before any file is read: the checks that do not need the data
    check_split(split)
    as_int(size, "size", 1, allow_none=True)


def _idx_dataset(kind, name, split, root, download, size):
    _check_arguments(split, size)
    folder = os.path.join(kind, "raw")
    data = _open(kind, name, root, download, folder, train=split == "train")
    if len(data.data) != len(data.targets) or len(data.data) == 0:
        prefix = "train" if split == "train" else "t10k"
        raise ValueError(
            f"{name}: {os.path.join(os.fspath(root), folder)} holds {len(data.data)} images "
            f"({prefix}-images-idx3-ubyte) and {len(data.targets)} labels "
            f"({prefix}-labels-idx1-ubyte); the two files must describe the same images, "
            "at least one"
        )
    images = data.data.unsqueeze(1).float() / 255.0
    return _dataset(images, data.targets, {}, name, split, size)


def _open(kind, name, root, download, folder, **kwargs):
    # kind: the torchvision dataset class's name; folder: where under root torchvision looks,
    # for the error message.
    if root is None:
        raise ValueError(
            f"{name} is not bundled with pyromem: pass root=<directory> (--root) holding it "
            "(and download=True, --download, to fetch it there)"
        )
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a str or a path, got {type(root).__name__} {root!r}")
    if not isinstance(download, bool):
        raise TypeError(f"download must be a bool, got {type(download).__name__}")
    cls = _omniglot_class() if kind == "Omniglot" else _vision(kind)
    where = os.path.join(os.fspath(root), folder)
    try:
        return cls(os.fspath(root), download=download, **kwargs)
    except _NotExtracted as error:
        above = os.path.dirname(error.folder)
        raise FileNotFoundError(
            f"{name}: {error.archive} is there but not extracted ({error.folder} is missing); "
            f"extract it into {above}{os.sep}, e.g. unzip {error.archive} -d {above}"
        ) from None
    except Exception as error:  # noqa: BLE001 -- a bad file makes torchvision's readers raise
        # RuntimeError, ValueError, AssertionError, EOFError or pickle's errors
        text = str(error).strip()
        # torchvision reports a failed fetch in several lines (each mirror tried), or as a
        # URLError; its last line holds the reason
        reason = text.splitlines()[-1] if text else type(error).__name__
        missing = isinstance(error, RuntimeError) and text.startswith("Dataset not found")
        if download and (missing or isinstance(error, OSError) or "Error downloading" in text):
            raise ConnectionError(
                f"{name}: could not download it into root={os.fspath(root)!r}: {reason}; "
                f"without a network, put its files in {where} by hand"
            ) from error
        if isinstance(error, OSError):
            raise  # a folder that cannot be read: the system's own words
        if missing and not (os.path.isdir(where) and os.listdir(where)):
            above = _root_above(root, folder)
            remedy = (
                f"root is the folder that holds {folder.split(os.sep)[0]}/: pass "
                f"root={above!r} (--root)"
                if above is not None
                else f"pass download=True (--download) to fetch it into root={os.fspath(root)!r}"
            )
            raise FileNotFoundError(
                f"{name} was not found under {where} ({reason}); {remedy}"
            ) from error
        if missing:
            # torchvision's own words ("Dataset not found or corrupted. You can use
            # download=True") would repeat the remedy below
            reason = "torchvision found a file missing or not matching its checksum"
        # the files are there but torchvision rejects them (a checksum that does not match,
        # a truncated or foreign file): "not found, download it" would send the user to a
        # download that torchvision skips, since the files exist
        raise ValueError(
            f"{name}: the files under {where} cannot be read as {name} ({reason}); one is "
            f"missing, truncated or not {name}'s: replace them with the original files, or "
            "delete them and pass download=True (--download) to fetch them again"
        ) from error


def _root_above(root, folder):
    # A root that points inside the dataset's own folders (root=data/MNIST rather than data)
    # is the usual mistake: the root it should be, where that holds the folder, or None.
    here = os.path.normpath(os.fspath(root))
    parts = folder.split(os.sep)
    for depth in range(len(parts), 0, -1):
        tail = os.path.join(*parts[:depth])
        if here == tail:
            above = "."
        elif here.endswith(os.sep + tail):
            above = here[: -len(tail) - 1] or os.sep
        else:
            continue
        return above if os.path.isdir(os.path.join(above, folder)) else None
    return None


def _dataset(images, labels, factors, name, split, size, support="8bit"):
    if size is not None and size != images.shape[-1]:
        images, support = resize(images, size), "unit_interval"
    return ImageDataset(images, labels, factors, name=name, split=split, support=support)
