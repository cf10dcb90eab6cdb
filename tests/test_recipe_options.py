"""Recipe options that the other settings would ignore are refused in one line before any
work; presets, the demo and the help texts agree with those checks."""

import argparse
import importlib
from pathlib import Path

import pytest

from pyromem.cli import build_parser, main
from pyromem.experiments.configs import (
    CompareEstimatorsConfig,
    CompareGuidesConfig,
    KPPConfig,
    RetrievalConfig,
    VAEConfig,
    VMAConfig,
)
from pyromem.experiments.options import Options
from pyromem.experiments.registry import COMMANDS, FAMILIES


def _configs():
    return [recipe.config for recipe in (*FAMILIES.values(), *COMMANDS.values())]


@pytest.mark.parametrize(
    "config,preset",
    [(config, name) for config in _configs() for name in config.presets],
    ids=lambda value: value if isinstance(value, str) else value.recipe,
)
def test_every_preset_passes_the_checks(config, preset):
    built = config.build(preset=preset)
    for name, value in config.presets[preset].items():
        expected = tuple(value) if isinstance(value, (list, tuple)) else value
        assert getattr(built, name) == expected


@pytest.mark.parametrize(
    "argv,line",
    [
        ("train vma --mode learned --steps 10", "--steps: ignored unless mode is 'recall' or"),
        ("train vma --mode learned --steps-per-epoch 10", "--steps-per-epoch: ignored unless"),
        ("train vma --mode recall --epochs 3", "--epochs: ignored unless mode is 'learned'"),
        ("train vma --mode recall --classes 3", "--classes: ignored unless mode is 'fewshot'"),
        ("train vma --test-classes 1", "--test-classes: ignored unless mode is 'fewshot'"),
        ("train vma --mode fewshot --memory-size 16", "--memory-size: ignored unless mode is"),
        ("train vma --mode fewshot --batch-size 8", "--batch-size: ignored unless mode is"),
        ("train vma --temperature 2", "--temperature: ignored unless address is 'gumbel'"),
        ("train vma --final-temperature 0.1", "--final-temperature: ignored unless address"),
        ("train vma --address soft --prior flat", "--prior: ignored by address 'soft'"),
        ("train vma --channels 8", "--channels: ignored unless net is 'conv'"),
        ("train vma --steps 5 --steps-per-epoch 10", "--steps-per-epoch: expected at most steps"),
        ("train vma --steps 25 --steps-per-epoch 10", "--steps: expected a multiple of"),
        ("train vae --net conv --hidden 7", "--hidden: ignored by net 'conv'"),
        ("train kpp --encoder-width 8", "--encoder-width: ignored unless encoder is"),
        ("retrieval --methods GMM --checkpoint {file}", "--checkpoint: ignored unless methods"),
        ("retrieval --capacity-sizes 5 10", "--capacity-sizes: ignored unless capacity is set"),
        ("retrieval --methods GMM --vae-epochs 5", "--vae-epochs: ignored unless methods names"),
        ("compare-guides --memory-size 20", "--memory-size: ignored unless model is 'memory-vae'"),
        (
            "compare-estimators --estimators enum vimco --temperature 0.3",
            "--temperature: ignored unless estimators names 'gumbel'",
        ),
        (
            "compare-estimators --estimators rws --max-tuples 10",
            "--max-tuples: ignored unless estimators names 'vimco'",
        ),
        ("retrieval --checkpoint {file} --vae-scale 0.3", "--vae-scale: ignored with checkpoint"),
        (
            "retrieval --preset authors-code --checkpoint {file} --vae-latent-dim 8",
            "--vae-latent-dim: ignored with checkpoint",
        ),
        ("retrieval --capacity --memory-size 50", "--memory-size: ignored by the capacity sweep"),
        ("retrieval --capacity --corruptions clean mask-4", "--corruptions: the capacity sweep"),
        ("retrieval --capacity --capacity-sizes 5 1", "--capacity-sizes: expected a value >= 2"),
        ("retrieval --memory-size 1", "--memory-size: expected a value >= 2"),
        ("retrieval --methods GMM NTM GMM", "--methods: 'GMM' is given twice"),
        ("retrieval --corruptions clean noise-0.6 clean", "--corruptions: 'clean' is given twice"),
        ("retrieval --methods gmm", "--methods: unknown method 'gmm'; did you mean 'GMM'?"),
    ],
)
def test_an_option_that_would_change_nothing_is_refused_before_any_work(
    capsys, tmp_path, argv, line
):
    checkpoint = tmp_path / "vae.ckpt"
    checkpoint.write_bytes(b"")
    out = tmp_path / "run"
    assert main([*argv.format(file=checkpoint).split(), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"pyromem: error: {line}"), err
    assert not out.exists()  # refused before the run folder and its config.toml


@pytest.mark.parametrize(
    "config,values",
    [
        # the same options where they apply, or at their defaults where they do not
        (VMAConfig, {"mode": "learned", "epochs": 3, "steps": 2500}),
        (VMAConfig, {"mode": "fewshot", "classes": 3, "test_classes": (1,), "steps": 200}),
        (VMAConfig, {"address": "gumbel", "temperature": 2.0, "final_temperature": 0.1}),
        (VMAConfig, {"net": "conv", "channels": 8, "size": 28}),
        # fewer steps than an epoch's: one epoch of them all
        (VMAConfig, {"steps": 5}),
        (VMAConfig, {"address": "enum", "num_particles": 8}),  # the test KL of z's draws
        (VAEConfig, {"net": "conv", "hidden": (400,)}),
        (KPPConfig, {"encoder": "resnet18-tsm", "encoder_width": 8}),
        (
            RetrievalConfig,
            {"capacity": True, "capacity_sizes": (5, 10), "corruptions": ("mask-4",)},
        ),
        (RetrievalConfig, {"methods": ("GMM", "VAE-GMM"), "resume": True}),
        (CompareGuidesConfig, {"model": "memory-vae", "memory_size": 20}),
        (CompareEstimatorsConfig, {"temperature": 0.3, "max_tuples": 10}),
        (CompareEstimatorsConfig, {"estimators": ("gumbel", "nvil"), "baseline_steps": 3}),
    ],
)
def test_options_that_apply_are_accepted(config, values):
    built = config.build(**values)
    assert {name: getattr(built, name) for name in values} == values


def test_options_a_preset_or_a_file_sets_are_not_refused_where_ignored_nor_stored(tmp_path):
    # the paper's preset is few-shot; recall ignores its classes, shots and queries
    built = VMAConfig.build(preset="paper", mode="recall")
    assert built.classes == VMAConfig.presets["paper"]["classes"]
    assert {"classes", "shots", "queries"}.isdisjoint(built.to_dict())
    assert built.to_dict()["steps"] == VMAConfig.presets["paper"]["steps"]
    # a copy keeps that baseline; a value given beyond it is refused
    assert built.replace(dataset="digits").classes == built.classes
    with pytest.raises(ValueError, match="^classes: ignored unless mode is 'fewshot'"):
        VMAConfig.build(preset="paper", mode="recall", classes=3)
    with pytest.raises(ValueError, match="^classes: ignored unless mode is 'fewshot'"):
        VMAConfig(mode="recall", classes=3)
    # the authors' VAE settings, where a checkpoint's VAE is loaded: kept out of config.toml
    checkpoint = tmp_path / "vae.ckpt"
    checkpoint.write_bytes(b"")
    built = RetrievalConfig.build(preset="authors-code", checkpoint=str(checkpoint))
    saved = built.save(tmp_path / "config.toml").read_text()
    assert "vae_scale" not in saved and "vae_net" not in saved and "checkpoint" in saved
    # a file's settings are a baseline as a preset's are: the run's file with a checkpoint
    trained = tmp_path / "trained.toml"
    RetrievalConfig.build(vae_epochs=7, vae_scale=0.2).save(trained)
    again = RetrievalConfig.build(file=trained, checkpoint=str(checkpoint))
    assert "vae_epochs" not in again.to_dict() and again.to_dict()["checkpoint"] == str(checkpoint)


def test_a_run_folder_stores_only_the_options_its_settings_use(tmp_path):
    saved = VMAConfig.build(mode="recall").save(tmp_path / "config.toml").read_text()
    keys = {line.split(" = ")[0] for line in saved.splitlines()}
    assert {"steps", "memory_size", "batch_size"} <= keys
    assert keys.isdisjoint({"epochs", "classes", "shots", "temperature", "channels"})
    assert VMAConfig.build(file=tmp_path / "config.toml") == VMAConfig.build(mode="recall")


def test_vma_warm_up_is_checked_against_the_epochs_trained():
    # recall trains steps / steps_per_epoch epochs, not --epochs (of learned)
    assert VMAConfig.build(steps=3000, warmup_epochs=25.0).trained_epochs() == 30
    with pytest.raises(ValueError, match="warmup_epochs: expected at most epochs=2, got 3"):
        VMAConfig.build(steps=200, warmup_epochs=3.0)


class _Built(Exception):
    pass


@pytest.mark.parametrize("quick", [True, False], ids=["quick", "full"])
@pytest.mark.parametrize("family", ["vae", "kpp"])
def test_the_demo_configs_pass_the_checks(monkeypatch, tmp_path, family, quick):
    module = importlib.import_module(FAMILIES[family].module)

    def run(config, out_dir):
        raise _Built(config)

    monkeypatch.setattr(module, "run", run)
    with pytest.raises(_Built) as built:
        module.demo_section(tmp_path, quick, progress=False)
    assert isinstance(built.value.args[0], Options)


@pytest.mark.parametrize("quick", [True, False], ids=["quick", "full"])
def test_every_config_of_the_vma_demo_passes_the_checks(monkeypatch, tmp_path, quick):
    vma = importlib.import_module("pyromem.experiments.vma")
    built = []

    def run(config, out_dir):
        # what the demo's report reads of a run, without training it
        built.append(config)
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        sweep = [
            {"classes": c, "memory_size": 4 * c, "test_nll_nats": 1.0, "optimum_nll_nats": 1.0}
            for c in config.memory_classes
        ]
        return {
            "memory_size": config.memory_size,
            "test_nll_nats": 1.0,
            "log_memory_size": 1.0,
            "kl_address": None,
            "kl_z": 0.0,
            "reconstruction": 0.0,
            "figures": {"samples": str(Path(out_dir) / "samples.png")},
            **(
                {"memory_size_sweep": sweep, "classification_accuracy": {}}
                if config.mode == "fewshot"
                else {}
            ),
        }

    monkeypatch.setattr(vma, "run", run)
    vma.demo_section(tmp_path, quick, progress=False)
    modes = {config.mode for config in built}
    assert modes == ({"recall"} if quick else {"recall", "fewshot"})
    assert all(config.memory_size == 16 for config in built if config.mode == "recall") and all(
        config.memory_classes == (1, 2, 4, 8) for config in built if config.mode == "fewshot"
    )


def _option_helps():
    def actions(parser):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from ((f"{name} {flag}", help) for flag, help in actions(sub))
            elif action.option_strings and action.dest not in ("help", "version"):
                yield action.option_strings[0], action.help

    return dict(actions(build_parser()))


def test_the_methods_help_spells_them_as_they_are():
    helps = _option_helps()
    # method names are case-sensitive: the example names real ones
    from pyromem.retrieval.methods import METHODS

    example = helps["retrieval --methods"].split("e.g. ")[1].split(" (")[0].split()
    assert example and set(example) <= set(METHODS)
