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


def test_curves_name_the_engine_keys_and_the_elbo_axis(tmp_path, monkeypatch):
    from pyromem.diagnostics import plots

    drawn = []
    original = plots.save_figure
    monkeypatch.setattr(
        plots, "save_figure", lambda fig, path: drawn.append(fig) or original(fig, path)
    )
    history = [{"epoch": e, "train_elbo_nats": -e, "eval_elbo_nats": -e - 1} for e in (1, 2)]
    path = plots.save_curves(history, ["train_elbo_nats", "eval_elbo_nats"], tmp_path / "c.png")
    assert path.is_file()
    ax = drawn[-1].axes[0]
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert legend == [plots.CURVE_LABELS["train_elbo_nats"], plots.CURVE_LABELS["eval_elbo_nats"]]
    assert "train_elbo_nats" not in " ".join(legend)
    assert ax.get_ylabel() == "ELBO, nats per image" and ax.get_xlabel() == "epoch"
    # any other key keeps its name and the generic axis; labels and a title may be given
    plots.save_curves(
        [{"epoch": 1, "loss": 2.0}], ["loss"], tmp_path / "d.png", labels={"loss": "a loss"},
        title="t",
    )  # fmt: skip
    ax = drawn[-1].axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a loss"]
    assert ax.get_ylabel() == "nats per image" and ax.get_title() == "t"
