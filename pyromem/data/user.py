"""A user's own images: an ImageFolder-style directory or a NumPy ``.npz`` file.

``load("imagefolder", split, root=DIR)`` and ``load("npz", split, root=FILE)``
turn data that pyromem knows nothing about into the same
:class:`~pyromem.data.dataset.ImageDataset` the bundled loaders return, with
values in [0, 1] and a seeded train/test partition when the data come as one
set. There is nothing to download: ``download=True`` is an error.

Partitions (when the data are not already split) use
:func:`pyromem.data.splits.split_indices` with ``load``'s ``seed``: stratified
by label when scikit-learn can stratify (every class has at least two images
and each split has room for one image per class), otherwise, and always for
unlabelled data, uniformly at random.
"""

import numbers
import os

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from pyromem.checks import as_int
from pyromem.data.dataset import ImageDataset
from pyromem.data.resize import check_memory, resize
from pyromem.data.splits import check_seed, check_split, split_indices

#: PIL modes read as grey-scale (C = 1); any other mode is read as RGB (C = 3).
GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N")
#: Class-folder names that mean a split rather than a class: a root holding one of them (but
#: not both ``train/`` and ``test/``) would otherwise train on "classes" train and val.
SPLIT_FOLDERS = ("train", "test", "val", "valid", "validation")
#: The channel counts C an ``npz`` file's images may have: grey (1), RGB (3) and RGBA (4), the
#: images matplotlib's ``imshow`` draws in the figures of every recipe.
CHANNELS = (1, 3, 4)


def imagefolder(split="train", *, root=None, download=False, seed=0, size=None, test_fraction=0.2):
    """Images in one sub-folder per class, like ``torchvision.datasets.ImageFolder``.

    Layouts::

        root/cat/001.png, root/dog/xyz.jpg, ...            one set, split here
        root/train/cat/001.png, root/test/cat/002.png, ... split by the user

    When ``root`` has both a ``train/`` and a ``test/`` sub-folder, those are the
    splits (other entries of ``root`` are ignored) and the classes are the union
    of their sub-folders, so a class has the same label in both. Otherwise the
    sub-folders of ``root`` are the classes and ``split`` is one part of a seeded
    partition with a ``test_fraction`` share of test images (see
    :mod:`pyromem.data.user`). Image files are those with torchvision's
    extensions (``.png``, ``.jpg``, ``.bmp``, ...) anywhere below a class folder;
    names starting with ``.`` are skipped.

    Images are read with PIL: as grey levels (C = 1) when every file is
    grey-scale (mode in :data:`GREY_MODES`), otherwise as RGB (C = 3), dropping
    any alpha channel. 8-bit files give values k/255; 16-bit grey files (16-bit
    PNGs, PIL modes ``"I;16"`` and, for PNGs, ``"I"``) give k/65535, all their
    levels kept (PIL's own conversion to 8 bits would clip every level above 255
    to white). Files of 32-bit integers or floats (TIFF modes ``"I"`` and
    ``"F"``), whose range cannot be told from the file, are refused: save them
    as 8- or 16-bit PNGs, or as a ``.npz`` (:func:`npz`).

    :param str split: ``"train"`` or ``"test"``.
    :param root: the directory (str or path).
    :param bool download: must be ``False``; the data are the user's own.
    :param int seed: seed of the partition, in [0, 2**32 - 1] (ignored with ``train/`` and
        ``test/``).
    :param int size: optional side length; every image is resized to
        ``size × size``. Without it all images must have the same size.
    :param float test_fraction: the test share of the partition, in (0, 1)
        (ignored with ``train/`` and ``test/``).
    :returns: an :class:`ImageDataset` named ``"imagefolder"`` of images
        ``(N, C, H, W)`` with values k/255 (support ``"binary"`` if every pixel
        of every file under ``root``, both splits', is 0 or 1, else ``"8bit"``;
        ``"unit_interval"`` once a file of either split is resized or with a 16-bit file
        among them), ordered by
        class and then file path, and labels ``(N,)`` = the class's index among
        the sorted class-folder names.
    :raises FileNotFoundError: if ``root`` does not exist.
    :raises ValueError: if ``root`` is not a directory of class folders holding
        images (a class folder named like a split, e.g. ``train/`` without ``test/``,
        or one without image files among them; with ``train/`` and ``test/``, one of
        them without image files), a file cannot be decoded, holds 32-bit pixels or is
        larger than PIL opens, or the images differ in size and ``size`` is not given.
    """
    name = "imagefolder"
    root = _check_arguments(name, "<directory>", split, root, download, seed, size, test_fraction)
    if not os.path.isdir(root):
        raise ValueError(
            f"imagefolder needs root=<directory> (--root) with one sub-folder per class, got the "
            f"file {root!r}"
        )
    presplit = all(os.path.isdir(os.path.join(root, part)) for part in ("train", "test"))
    parts = ("train", "test") if presplit else ("",)
    classes = sorted({c for part in parts for c in _subfolders(os.path.join(root, part))})
    if not classes:
        raise ValueError(
            f"imagefolder found no class sub-folders under root={root!r}; put each class's "
            "images in a sub-folder of its own"
        )
    splits = sorted(set(classes) & set(SPLIT_FOLDERS))
    if not presplit and splits:
        raise ValueError(
            f"imagefolder: root={root!r} has the sub-folder(s) {', '.join(splits)}, which "
            "would be read as classes; split data need both train/ and test/ (rename a "
            "validation folder to test/), or point root to the folder of class sub-folders"
        )
    files = {part: _image_files(os.path.join(root, part), classes) for part in parts}
    every = [item for part in parts for item in files[part]]
    if not every:
        raise ValueError(
            f"imagefolder found no image files ({', '.join(_image_extensions())}) in the class "
            f"folders under root={root!r}"
        )
    # a class folder without image files (its images GIFs, say) would keep its label but drop
    # out of the data: fewer classes than the user sees, and labels with a gap
    found = {label for _, label in every}
    empty = [cls for label, cls in enumerate(classes) if label not in found]
    if empty:
        raise ValueError(
            f"imagefolder: the class folder(s) {', '.join(empty)} under root={root!r} hold no "
            f"image files ({', '.join(_image_extensions())}); add images or remove the folder(s)"
        )
    # both splits, whichever is asked for: a recipe loads train and then test, and an empty
    # test/ would stop it only after every training image was decoded
    for part in parts if presplit else ():
        if not files[part]:
            raise ValueError(
                f"imagefolder found no image files under {os.path.join(root, part)}; split "
                "data need images in both train/ and test/"
            )
    modes, sizes, deep = [], [], False
    for path, _ in every:
        mode, (width, height), depth = _header(path, root)
        modes.append(mode)
        sizes.append((height, width))
        deep = deep or depth == 16
    grey = all(mode in GREY_MODES for mode in modes)
    if size is None and len(set(sizes)) > 1:
        first = sizes[0]
        k = next(i for i, s in enumerate(sizes) if s != first)
        raise ValueError(
            f"imagefolder: images under root={root!r} differ in size (height×width), "
            f"{first[0]}×{first[1]} ({os.path.relpath(every[0][0], root)}) and "
            f"{sizes[k][0]}×{sizes[k][1]} ({os.path.relpath(every[k][0], root)}); pass "
            "size=<side> (--size) to resize every image to size×size"
        )
    if presplit:
        chosen = files[split]
    else:
        labels = [label for _, label in every]
        chosen = [every[i] for i in _partition(name, labels, split, seed, test_fraction)]
    height, width = (size, size) if size is not None else sizes[0]
    # checked before decoding: one image at a time fits, the stack of all may not
    check_memory((len(chosen), 1 if grey else 3, height, width), 4, name)
    images = []
    for path, _ in chosen:
        image = _decode(path, root, grey)
        if size is not None and tuple(image.shape[1:]) != (size, size):
            image = resize(image.unsqueeze(0), size)[0]
        images.append(image)
    images = torch.stack(images)
    # one support for both splits, as for resizing: the recipes choose the likelihood from
    # the train split's support and score the test split with it
    chosen_paths = {path for path, _ in chosen}
    others = [path for path, _ in every if path not in chosen_paths]
    if size is not None and any(s != (size, size) for s in sizes):
        support = "unit_interval"
    elif _binary(images) and all(_binary(_decode(path, root, grey)) for path in others):
        support = "binary"
    elif deep:
        support = "unit_interval"
    else:
        support = "8bit"
    labels = torch.as_tensor([label for _, label in chosen], dtype=torch.long)
    return ImageDataset(images, labels, name=name, split=split, support=support)


def npz(split="train", *, root=None, download=False, seed=0, size=None, test_fraction=0.2):
    """Images stored in a NumPy ``.npz`` file (``numpy.savez(path, images=..., labels=...)``).

    :param str split: ``"train"`` or ``"test"``, one part of a seeded partition
        with a ``test_fraction`` share of test images (see :mod:`pyromem.data.user`).
    :param root: the ``.npz`` file (str or path) holding

        - ``images``: ``(N, C, H, W)`` with C in :data:`CHANNELS` (1, 3 or 4), or
          ``(N, H, W)`` (read as C = 1); ``uint8``
          (divided by 255, support ``"8bit"``), ``bool`` (support ``"binary"``)
          or floating point with values in [0, 1] (support ``"binary"`` if every
          value is 0 or 1, else ``"unit_interval"``);
        - ``labels`` (optional): non-negative integers ``(N,)``. Without it every
          label is -1 ("unlabelled") and the partition ignores labels.

        Other arrays in the file are ignored.
    :param bool download: must be ``False``; the data are the user's own.
    :param int seed: seed of the partition, in [0, 2**32 - 1].
    :param int size: optional side length the images are resized to
        (:func:`pyromem.data.resize.resize`; support ``"unit_interval"``).
    :param float test_fraction: the test share of the partition, in (0, 1).
    :returns: an :class:`ImageDataset` named ``"npz"`` of the split's images
        ``(M, C, H, W)`` in file order, with labels ``(M,)``.
    :raises FileNotFoundError: if ``root`` does not exist.
    :raises ValueError: if ``root`` is not a readable ``.npz`` file (a damaged or
        truncated array, or one of Python objects, among them) or its arrays
        have the wrong shapes (channels-last images among them), dtypes or values.
    """
    name = "npz"
    root = _check_arguments(name, "<file.npz>", split, root, download, seed, size, test_fraction)
    if os.path.isdir(root):
        raise ValueError(f"npz needs root=<file.npz> (--root), got the directory {root!r}")
    try:
        data = np.load(root, allow_pickle=False)
    except Exception as error:  # noqa: BLE001 -- numpy raises OSError, ValueError, zip errors
        raise ValueError(
            f"npz: root={root!r} is not a readable .npz file ({type(error).__name__}: {error})"
        ) from error
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(
            f"npz: root={root!r} holds a single array, not a .npz archive; save it with "
            "numpy.savez(path, images=..., labels=...)"
        )
    with data:
        if "images" not in data.files:
            raise ValueError(
                f"npz: root={root!r} has no 'images' array (it has {sorted(data.files)})"
            )
        images, labels = (_member(data, key, root) for key in ("images", "labels"))
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4 or 0 in images.shape:
        raise ValueError(
            "npz: images must have shape (N, C, H, W) or (N, H, W) with N, H, W >= 1, got "
            f"{images.shape}"
        )
    if images.shape[1] not in CHANNELS:
        if images.shape[1] == 2:
            # grey + alpha, as PIL's "LA" keeps it; not (N, H, W, C) images of height 2
            raise ValueError(
                f"npz: images of shape {images.shape} have C = 2 channels (grey and alpha?); "
                f"C must be in {CHANNELS} (grey, RGB, RGBA): keep the grey one, "
                "images[:, :1]"
            )
        # (N, H, W, C), as PIL, matplotlib and TensorFlow keep images, would otherwise train as
        # C = H images of H × W and fail only when a figure draws them
        if images.shape[-1] in CHANNELS:
            raise ValueError(
                f"npz: images of shape {images.shape} look channels-last (N, H, W, C); store "
                "them as (N, C, H, W), e.g. images.transpose(0, 3, 1, 2)"
            )
        raise ValueError(
            f"npz: images (N, C, H, W) must have C in {CHANNELS} (grey, RGB, RGBA), got shape "
            f"{images.shape}"
        )
    if images.dtype == np.uint8:
        tensor, support = torch.from_numpy(images.astype(np.float32) / 255.0), "8bit"
    elif images.dtype == np.bool_:
        tensor, support = torch.from_numpy(images.astype(np.float32)), "binary"
    elif np.issubdtype(images.dtype, np.floating):
        if not np.isfinite(images).all():
            raise ValueError(f"npz: images in {root!r} contain NaN or infinite values")
        low, high = float(images.min()), float(images.max())
        if low < 0 or high > 1:
            raise ValueError(
                f"npz: floating-point images must lie in [0, 1], got [{low:g}, {high:g}]; "
                "store 8-bit data as uint8 or divide it by 255"
            )
        tensor = torch.from_numpy(images.astype(np.float32))
        support = "binary" if bool(((tensor == 0) | (tensor == 1)).all()) else "unit_interval"
    else:
        raise ValueError(f"npz: images must be uint8, bool or floating point, got {images.dtype}")
    count = images.shape[0]
    if labels is not None:
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"npz: labels must be integers, got {labels.dtype}")
        if labels.shape != (count,):
            raise ValueError(f"npz: labels must have shape ({count},), got {labels.shape}")
        if labels.min() < 0:
            raise ValueError(
                f"npz: labels must be non-negative (-1 means unlabelled; leave labels out "
                f"instead), got {int(labels.min())}"
            )
        # uint64 labels past int64's range would wrap to negative labels, -1 ("unlabelled")
        # among them
        if int(labels.max()) > np.iinfo(np.int64).max:
            raise ValueError(
                f"npz: labels must fit in int64, got {int(labels.max())}; number the classes "
                "0, 1, 2, ..."
            )
    index = _partition(name, labels, split, seed, test_fraction, count=count)
    tensor = tensor[torch.as_tensor(index)]
    if size is not None and tuple(tensor.shape[-2:]) != (size, size):
        tensor, support = resize(tensor, size), "unit_interval"
    if labels is None:
        labels = torch.full((len(index),), -1, dtype=torch.long)
    else:
        labels = torch.as_tensor(labels[index].astype(np.int64))
    return ImageDataset(tensor, labels, name=name, split=split, support=support)


def _member(data, key, root):
    # The array ``key`` of an open .npz (None where there is none). The archive's directory
    # reads at np.load, a member's bytes only here: a damaged member makes zipfile raise
    # BadZipFile, numpy a ValueError without the file's name, and a member that is not a .npy
    # comes back as bytes.
    if key not in data.files:
        return None
    try:
        array = data[key]
    except Exception as error:  # noqa: BLE001 -- BadZipFile, zlib.error, ValueError, EOFError
        raise ValueError(
            f"npz: the {key!r} array of root={root!r} cannot be read ({type(error).__name__}: "
            f"{error}); the file is damaged or truncated, or holds Python objects rather than "
            "numbers: save it again with numpy.savez(path, images=..., labels=...)"
        ) from error
    if not isinstance(array, np.ndarray):
        raise ValueError(
            f"npz: the {key!r} member of root={root!r} is not a NumPy array (.npy); save the "
            "file with numpy.savez(path, images=..., labels=...)"
        )
    return array


def _check_arguments(name, kind, split, root, download, seed, size, test_fraction):
    # The checks shared by both loaders; returns root as a str.
    check_split(split)
    if not isinstance(download, bool):
        raise TypeError(f"download must be a bool, got {type(download).__name__}")
    if download:
        raise ValueError(
            f"download: {name} data is the user's own; there is nothing to download (leave out "
            "download=True, --download)"
        )
    if root is None:
        raise ValueError(
            f"{name} needs root={kind} (--root) holding the user's own images (see "
            f"pyromem.data.user.{name})"
        )
    check_seed(seed)
    as_int(size, "size", 1, allow_none=True)
    # numbers.Real: NumPy's floats too, as a value read from a config array would be
    if (
        isinstance(test_fraction, bool)
        or not isinstance(test_fraction, numbers.Real)
        or not 0.0 < test_fraction < 1.0
    ):
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction!r}")
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a str or a path, got {type(root).__name__} {root!r}")
    root = os.fspath(root)
    if not os.path.exists(root):
        raise FileNotFoundError(
            f"{name}: root={root!r} does not exist; if the data moved, point root= (--root) to "
            "where they are now"
        )
    return root


def _partition(name, labels, split, seed, test_fraction, count=None):
    # Sorted indices of one split: stratified by labels when scikit-learn can do
    # it, otherwise (and when labels is None) uniformly at random.
    count = len(labels) if labels is not None else count
    if count < 2:
        raise ValueError(f"{name}: a train/test partition needs at least 2 images, got {count}")
    # float: scikit-learn refuses NumPy's float32
    options = {"test_fraction": float(test_fraction), "seed": seed}
    if labels is not None:
        try:
            return split_indices(labels, split, **options)
        except ValueError:
            pass  # a class with one image, or more classes than a split can hold
    try:
        return split_indices(np.zeros(count), split, stratify=False, **options)
    except ValueError as error:
        raise ValueError(
            f"{name}: {count} images are too few for a split with test_fraction="
            f"{test_fraction} ({error})"
        ) from error


def _binary(images):
    return bool(((images == 0) | (images == 1)).all())


def _subfolders(folder):
    return [
        entry.name
        for entry in os.scandir(folder)
        if entry.is_dir() and not entry.name.startswith(".")
    ]


def _image_extensions():
    # torchvision's list, as its ImageFolder reads; imported here, since importing torchvision
    # takes a second or more that a user without an image folder should not pay
    from torchvision.datasets.folder import IMG_EXTENSIONS

    return IMG_EXTENSIONS


def _image_files(folder, classes):
    # (path, label) of every image file below folder/<class>, by class then path.
    items, extensions = [], _image_extensions()
    for label, cls in enumerate(classes):
        top = os.path.join(folder, cls)
        if not os.path.isdir(top):
            continue
        found = []
        for directory, subdirs, names in os.walk(top, followlinks=True):
            subdirs[:] = [d for d in subdirs if not d.startswith(".")]
            found += [
                os.path.join(directory, n)
                for n in names
                if not n.startswith(".") and n.lower().endswith(extensions)
            ]
        items += [(path, label) for path in sorted(found)]
    return items


def _depth(image):
    # bits per grey level of a PIL image, 8 or 16; None for 32-bit integers or floats, whose
    # range the file does not tell. Pillow < 10 opens 16-bit PNGs in mode "I".
    if image.mode.startswith("I;16") or (image.mode == "I" and image.format == "PNG"):
        return 16
    return None if image.mode in ("I", "F") else 8


def _header(path, root):
    # (mode, (width, height), bits per level) from the file's header, without decoding the
    # pixels, so that a file that cannot be read is refused before any is decoded.
    try:
        with Image.open(path) as image:
            mode, size, depth = image.mode, image.size, _depth(image)
    except Image.DecompressionBombError as error:
        # PIL refuses to open an image of more than twice Image.MAX_IMAGE_PIXELS (an
        # Exception, not an OSError): its size is in PIL's message
        raise ValueError(
            f"imagefolder: {os.path.relpath(path, root)} under root={root!r} is larger than "
            f"PIL opens ({error}); shrink the file, or raise PIL.Image.MAX_IMAGE_PIXELS if you "
            "trust it"
        ) from error
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(
            f"imagefolder: cannot read {os.path.relpath(path, root)} under root={root!r} "
            f"as an image ({error})"
        ) from error
    if depth is None:
        raise ValueError(
            f"imagefolder: {os.path.relpath(path, root)} under root={root!r} holds 32-bit "
            f"{'floating-point' if mode == 'F' else 'integer'} pixels (PIL mode {mode!r}), "
            "whose range the file does not tell; save it as an 8- or 16-bit PNG, or store "
            "the images in a .npz file (load('npz'), --dataset npz)"
        )
    return mode, size, depth


def _decode(path, root, grey):
    # One file as float (C, H, W) in [0, 1], C = 1 if grey else 3: 8-bit levels / 255 and
    # 16-bit grey levels / 65535 (PIL's conversion to "L" would clip them at 255).
    try:
        with Image.open(path) as image:
            if _depth(image) == 16:
                array = np.asarray(image).astype(np.float32) / 65535.0
                array = array if grey else np.repeat(array[..., None], 3, axis=-1)
            else:
                array = np.asarray(image.convert("L" if grey else "RGB")) / np.float32(255.0)
    except (UnidentifiedImageError, OSError) as error:
        # a header that reads but pixels that do not: a truncated file
        raise ValueError(
            f"imagefolder: cannot decode {os.path.relpath(path, root)} under root={root!r} "
            f"({error}); the file is damaged or truncated"
        ) from error
    image = torch.as_tensor(array, dtype=torch.float32).clamp_(0.0, 1.0)
    return image.unsqueeze(0) if grey else image.permute(2, 0, 1)
