"""Every old name the CHANGELOG's "Deprecated aliases" tables promise still resolves."""

import importlib
import re
from pathlib import Path

import pytest

CHANGELOG = (Path(__file__).parents[1] / "CHANGELOG.md").read_text()


def _promised():
    names = []
    for section in re.split(r"^### ", CHANGELOG, flags=re.M):
        if section.startswith("Deprecated aliases"):
            names += re.findall(r"^\| `(pyromem\.[\w.]+)(?:\(.*?\))?`", section, re.M)
    return names


def _resolve(name):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError:
        module, attribute = name.rsplit(".", 1)
        return getattr(importlib.import_module(module), attribute)


def test_the_tables_are_found():
    assert len(_promised()) >= 10


@pytest.mark.parametrize("name", _promised())
def test_a_deprecated_alias_resolves(name):
    assert _resolve(name) is not None
