"""Bad input to training, data checks, checkpoints and Omniglot: one clear line each."""

import os
import re
import zipfile

import pytest
import torch
import torchvision

from pyromem.data import load
from pyromem.data.validation import check_images
from pyromem.train import fit
from pyromem.train.checkpoint import load_checkpoint
from pyromem.train.data_checks import _check_labels
from tests.test_train import LinearGaussianVAE


def test_a_dict_item_without_x_gets_the_batch_type_error(tmp_path):
    data = [{"y": torch.randn(4, 4)}] * 3
    with pytest.raises(TypeError) as info:
        fit(
            LinearGaussianVAE(),
            data,
            out_dir=tmp_path,
            epochs=1,
            batch_size=None,
            progress=False,
        )
    message = str(info.value)
    assert message.startswith("batch: expected the datapoints x as the first positional")
    assert message.endswith("got NoneType") and "\n" not in message


def test_label_checks_name_the_data_they_check():
    class Labelled:
        def __init__(self, labels):
            self.labels = labels

        def __len__(self):
            return 3

    with pytest.raises(ValueError, match=r"^eval_data: expected one integer label"):
        _check_labels(Labelled(torch.zeros(3)), "eval_data")
    with pytest.raises(ValueError, match=r"^eval_data: label -2 of datapoint 1 is negative"):
        _check_labels(Labelled(torch.tensor([0, -2, 1])), "eval_data")


@pytest.mark.parametrize("support", [None, 3, ["binary"]])
def test_a_support_that_is_not_a_string_is_refused(support):
    with pytest.raises(ValueError) as info:
        check_images(torch.rand(2, 1, 4, 4), (1, 4, 4), support=support)
    message = str(info.value)
    assert message.startswith("support must be one of ") and message.endswith(f"got {support!r}")
    assert "\n" not in message


def test_a_checkpoint_without_pyromems_entries_is_refused(tmp_path):
    path = tmp_path / "bad.ckpt"
    torch.save({"pyromem": {}, "state_dict": {}}, path)
    expected = (
        f"corrupt or not a pyromem checkpoint: {path} (its 'pyromem' entry lacks 'config', "
        "'epochs_completed', 'history')"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        load_checkpoint(path)
    torch.save({"pyromem": {"config": {}, "history": []}, "state_dict": {}}, path)
    with pytest.raises(ValueError, match=r"entry lacks 'epochs_completed'\)$"):
        load_checkpoint(path)


@pytest.mark.parametrize("download", [False, True])
def test_an_omniglot_zip_that_is_not_extracted_is_named(tmp_path, monkeypatch, download):
    folder = tmp_path / "omniglot-py"
    folder.mkdir()
    archive = folder / "images_background.zip"
    with zipfile.ZipFile(archive, "w") as f:
        f.writestr("images_background/Greek/character01/0001_01.png", b"")
    # the dummy zip stands for the real one, whose md5 torchvision checks
    monkeypatch.setattr(torchvision.datasets.omniglot, "check_integrity", lambda *args: True)

    def offline(*args, **kwargs):
        raise AssertionError("torchvision skips the download of a zip that matches its md5")

    monkeypatch.setattr(torchvision.datasets.omniglot, "download_and_extract_archive", offline)
    with pytest.raises(FileNotFoundError) as info:
        load("omniglot", root=tmp_path, download=download)
    message = str(info.value)
    assert message.startswith(f"omniglot: {archive} is there but not extracted")
    assert f"extract it into {folder}{os.sep}" in message and "\n" not in message
