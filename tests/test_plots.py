import matplotlib.colors
import matplotlib.image
import numpy as np
import pytest
import torch

from pyromem.diagnostics.plots import save_image_rows


def colour_pixels(path, name):
    """How many pixels of the PNG at ``path`` have the colour ``name`` (to 0.02 per channel)."""
    pixels = matplotlib.image.imread(path)[..., :3]
    target = np.array(matplotlib.colors.to_rgb(name))
    return int((np.abs(pixels - target) < 0.02).all(-1).sum())


def test_marks_frame_each_image_green_or_red(tmp_path):
    images = torch.zeros(3, 1, 8, 8)
    framed = save_image_rows([images], tmp_path / "framed.png", marks=[[True, False, True]])
    plain = save_image_rows([images], tmp_path / "plain.png")
    for name in ("tab:green", "tab:red"):
        assert colour_pixels(framed, name) > 0
        assert colour_pixels(plain, name) == 0
    # two green frames against one red one, each drawn the same way
    assert colour_pixels(framed, "tab:green") > 1.5 * colour_pixels(framed, "tab:red")


def test_marks_must_match_the_images(tmp_path):
    with pytest.raises(ValueError, match="expected 3 marks for row 0, got 2"):
        save_image_rows([torch.zeros(3, 1, 8, 8)], tmp_path / "x.png", marks=[[True, False]])
    assert not (tmp_path / "x.png").exists()
