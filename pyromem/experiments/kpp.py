"""Deprecated alias, kept for one release, of :mod:`pyromem.experiments.kanerva`.

The alias is the new module itself (not a copy of its names), so that setting an attribute
through either name changes the recipe.
"""

import importlib
import sys

sys.modules[__name__] = importlib.import_module("pyromem.experiments.kanerva")
