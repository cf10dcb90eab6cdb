"""Data too large for memory, and the data layer's messages as the command line shows them."""

import importlib

import numpy as np
import pytest
import torch

from pyromem.data import check_images, load
from pyromem.data.resize import available_memory

# the module, which pyromem.data's function resize hides as an attribute
RESIZE = importlib.import_module("pyromem.data.resize")

MiB = 2**20


@pytest.fixture
def one_mib(monkeypatch):
    # a machine with 1 MiB available: the check's rule without allocating gigabytes
    monkeypatch.setattr(RESIZE, "available_memory", lambda: MiB)


def test_available_memory_is_read_where_it_can_be(monkeypatch):
    available = available_memory()
    try:
        with open("/proc/meminfo") as lines:
            listed = any(line.startswith("MemAvailable:") for line in lines)
    except OSError:
        listed = False
    assert (available is not None) == listed
    if listed:
        assert available > MiB

    def unreadable(*args, **kwargs):
        raise OSError("no /proc here")

    # not Linux: nothing to compare with, so nothing is checked
    monkeypatch.setattr("builtins.open", unreadable)
    assert available_memory() is None


def test_a_resized_dataset_larger_than_memory_is_refused_before_it_is_made(one_mib):
    # 1,437 train digits of 1 × 32 × 32 float32 need 5.6 MiB
    with pytest.raises(ValueError) as info:
        load("digits", size=32)
    message = str(info.value)
    assert message.startswith("size: 1437 images of 1×32×32 need 5.6 MiB, more than the 1.0 MiB")
    assert "--size" in message and "\n" not in message
    # at their own size nothing is resized, and 8 × 8 fits in 1 MiB anyway
    assert load("digits", "test", size=8).event_shape == (1, 8, 8)
    # 512 patches and 2,000 scenes of 3 × 16 × 16 float32 need 1.5 and 5.9 MiB
    for name in ("patches", "shapes"):
        with pytest.raises(ValueError, match="^size: .* more than the 1.0 MiB"):
            load(name, size=16)


def test_a_size_no_machine_holds_is_refused_without_a_patch():
    if available_memory() is None:
        pytest.skip("the memory available cannot be read here")
    # 1,437 × 10¹² pixels: petabytes, beyond any machine's memory and address space
    with pytest.raises(ValueError, match=r"^size: 1437 images of 1×1000000×1000000 need"):
        load("digits", size=10**6)


def test_glyphs_are_checked_before_they_are_rendered(one_mib):
    with pytest.raises(ValueError, match=r"^size: 3000 images of 1×28×28 need"):
        load("glyphs")
    small = load(
        "glyphs", num_alphabets=2, num_characters=1, num_drawers=2, num_test_alphabets=1, size=8
    )
    assert small.event_shape == (1, 8, 8)


def test_an_image_folder_is_checked_before_its_files_are_decoded(tmp_path, one_mib):
    from PIL import Image

    folder = tmp_path / "a"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(folder / f"{i}.png")
    assert load("imagefolder", root=tmp_path).event_shape == (1, 4, 4)
    # 2 train images of 1 × 400 × 400 float32 need 1.2 MiB
    with pytest.raises(ValueError, match=r"^imagefolder: 2 images of 1×400×400 need"):
        load("imagefolder", root=tmp_path, size=400)


def test_binary_support_message_names_the_flags():
    with pytest.raises(ValueError) as info:
        check_images(torch.full((2, 1, 3, 3), 0.5), (1, 3, 3), "binary")
    message = str(info.value)
    assert "binarize='static' or 'dynamic'" in message and "--binarize static or dynamic" in message
    assert "likelihood='gaussian' (--likelihood gaussian)" in message and "\n" not in message
    # colour images cannot be binarised (ImageDataset refuses it): only the Gaussian is advised
    with pytest.raises(ValueError) as info:
        check_images(torch.full((2, 3, 3, 3), 0.5), (3, 3, 3), "binary")
    assert "binari" not in str(info.value) and "--likelihood gaussian" in str(info.value)


def test_an_embedded_dataset_refuses_a_root_or_download_it_would_ignore(tmp_path):
    from pyromem.data import load

    for options in ({"root": tmp_path}, {"download": True}):
        with pytest.raises(ValueError, match="root: digits is embedded in pyromem"):
            load("digits", "train", **options)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_images_resize_in_their_own_dtype(dtype):
    # torch's antialiased bilinear kernel has no CPU half version: NotImplementedError
    images = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    resized = RESIZE.resize(images.to(dtype), 4)
    assert resized.dtype == dtype and resized.shape == (2, 1, 4, 4)
    expected = RESIZE.resize(images.to(dtype).float(), 4)
    assert torch.allclose(resized.float(), expected, atol=1e-2)
