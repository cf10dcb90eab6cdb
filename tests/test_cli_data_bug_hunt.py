"""Bugs met through the command line and the data loaders, each with the check that it holds."""

import numpy as np
import pytest
from PIL import Image

from pyromem.cli import main
from pyromem.data import load
from pyromem.experiments.configs import VAEConfig
from pyromem.experiments.options import read_config_file


def test_config_toml_keeps_a_root_beyond_the_basic_multilingual_plane(tmp_path):
    # JSON escapes an emoji as a surrogate pair, which TOML refuses: the run's config.toml
    # could not be read back by --config or --resume
    root = str(tmp_path / "données 😀" / "x\x7f.npz")
    config = VAEConfig.build(dataset="npz", root=root)
    path = config.save(tmp_path / "config.toml")
    assert read_config_file(path, "vae")["root"] == root


@pytest.mark.parametrize(
    "argv, flag",
    [
        (
            ["train", "vma", "--mode", "fewshot", "--memory-classes", "2", "1", "2"],
            "--memory-classes",
        ),
        (["train", "vma", "--mode", "fewshot", "--test-classes", "3", "3"], "--test-classes"),
        (["compare-estimators", "--test-classes", "3", "3"], "--test-classes"),
    ],
)
def test_a_class_option_given_twice_is_refused_by_its_flag(capsys, tmp_path, argv, flag):
    # --memory-classes 2 1 2 scored the memory of 2 classes twice, two rows of the sweep with
    # other numbers; --test-classes 3 3 was refused after the data loaded, named test_classes
    out = tmp_path / "run"
    assert main([*argv, "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip().startswith(f"pyromem: error: {flag}: ")
    assert not out.exists()


def test_train_config_of_another_command_says_how_to_run_it(capsys, tmp_path):
    # argparse answered "argument family: invalid choice: 'retrieval'", a family never typed
    path = tmp_path / "config.toml"
    path.write_text('recipe = "retrieval"\n')
    assert main(["train", "--config", str(path)]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith(f"pyromem: error: --config: {path} is a config of 'retrieval'")
    assert line.endswith(f"run it with pyromem retrieval --config {path}")


def _split_folder(root, train, test):
    # root/train/{a,b}/ and root/test/{a,b}/, the images alternating between the classes
    for part, arrays in (("train", train), ("test", test)):
        for i, array in enumerate(arrays):
            path = root / part / "ab"[i % 2] / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(path)


def test_imagefolder_splits_have_one_support(tmp_path):
    # the support was decided on each split's files alone: black-and-white images but one
    # grey pixel in a test image made train "binary" and test "8bit", and a run chose a
    # Bernoulli likelihood that its test images did not fit
    rng = np.random.default_rng(0)
    black_white = [(rng.random((6, 6)) > 0.5).astype(np.uint8) * 255 for _ in range(6)]
    grey = black_white[-1].copy()
    grey[0, 0] = 128
    _split_folder(tmp_path / "bw", black_white[:4], [black_white[4], grey])
    supports = [load("imagefolder", s, root=tmp_path / "bw").support for s in ("train", "test")]
    assert supports == ["8bit", "8bit"]
    # black and white throughout: binary, both splits
    _split_folder(tmp_path / "all-bw", black_white[:4], black_white[4:])
    supports = [load("imagefolder", s, root=tmp_path / "all-bw").support for s in ("train", "test")]
    assert supports == ["binary", "binary"]


def test_a_models_refusal_that_starts_with_an_option_names_its_flag(tmp_path, capsys):
    from pyromem.cli import main

    argv = ["train", "kpp", "--memory-shape", "3", "4", "4", "--block-shape", "8", "8"]
    assert main([*argv, "--epochs", "1", "--out", str(tmp_path / "run")]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("pyromem: error: --memory-shape (3, 4, 4) cannot hold blocks")


def test_resume_refuses_a_run_config_it_cannot_read(tmp_path, capsys):
    from pyromem.cli import main

    # before: taken for no config, the run went on from the defaults, and the checkpoint's
    # check then named a difference the user never made
    (tmp_path / "config.toml").write_text('recipe = "vae"\n[vae\n')
    assert main(["train", "vae", "--resume", "--out", str(tmp_path), "--epochs", "1"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--resume:" in line and "config.toml is not valid TOML" in line
    assert "--overwrite" in line
