"""Declarative recipe configs: each option once, with its default, type, choices and help.

A recipe's config is a dataclass whose fields are made by :func:`option`. The
``pyromem`` command line is generated from these classes (:mod:`pyromem.cli`),
a run folder stores its config as ``config.toml`` (:meth:`Options.save`), and
``--config FILE`` (TOML or JSON) loads one back (:meth:`Options.load`). The
papers' set-ups are named presets: partial configs applied over the defaults.

Precedence, lowest first: the defaults, a preset, a config file, the flags
given on the command line (or the keyword arguments given in Python).
"""

import contextvars
import dataclasses
import difflib
import importlib
import json
import math
import tempfile
import types
import typing
from collections.abc import Sequence
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


#: The values a preset and a config file set, while :meth:`Options.build` makes a config from
#: them: an option that the other settings ignore is refused only when it is given beyond
#: them (a preset for one mode may set options that another mode ignores).
_BASELINE = contextvars.ContextVar("baseline", default=None)


class Choices(Sequence):
    """The values an option allows, declared in the module that owns them and imported
    when first needed.

    Those modules import torch, which takes seconds; the configs and the command line
    do not, so a mistyped flag is answered before any of it loads.

    :param str reference: ``"module:name"`` of a sequence (a dict: its keys).
    :param transform: a function of that sequence to the tuple of choices.
    """

    def __init__(self, reference, transform=tuple):
        self.reference, self.transform, self._values = reference, transform, None

    def _resolved(self) -> tuple:
        if self._values is None:
            module, name = self.reference.split(":")
            self._values = tuple(self.transform(getattr(importlib.import_module(module), name)))
        return self._values

    def __getitem__(self, index):
        return self._resolved()[index]

    def __len__(self):
        return len(self._resolved())

    def __eq__(self, other):
        return isinstance(other, Sequence) and tuple(self) == tuple(other)

    def __hash__(self):
        return hash(self.reference)

    def __repr__(self):
        return repr(self._resolved())


def option(
    default,
    help,
    *,
    choices=None,
    flag=None,
    minimum=None,
    maximum=None,
    above=None,
    stored=True,
    required=False,
):
    """A recipe option: a dataclass field with its default, help, choices and range.

    :param default: the default value (tuples for lists, ``None`` for "unset").
    :param str help: one sentence for ``--help``.
    :param choices: the values allowed (each element's, for a tuple option): a tuple,
        or :class:`Choices` imported from their home when first needed.
    :param str flag: the command-line flag, when it is not ``--`` + the name with dashes.
    :param minimum: the smallest value allowed (each element's, for a tuple option).
    :param maximum: the largest value allowed.
    :param above: values must be greater than this. Numbers must be finite.
    :param bool stored: written to a run's ``config.toml``. An option that says what to do
        with the run folder (``overwrite``, ``resume``) is not: a run started again from
        that file must ask for it again.
    :param bool required: the command line requires the flag (its default stands for "none
        given", which :meth:`Options.check` refuses).
    """
    metadata = {
        "help": help,
        "choices": choices,
        "flag": flag,
        "minimum": minimum,
        "maximum": maximum,
        "above": above,
        "stored": stored,
        "required": required,
    }
    return dataclasses.field(default=default, metadata=metadata)


def base_type(annotation):
    """``(type, is_tuple)`` of a field annotation such as ``int | None`` or ``tuple[int, ...]``."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return base_type(args[0])
    if typing.get_origin(annotation) is tuple:
        return args[0], True
    return annotation, False


@dataclasses.dataclass
class Options:
    """Base of every recipe config: checks and converts its values, saves and loads them.

    Subclasses set ``recipe`` (the family's name) and ``presets`` (name -> partial
    config) as class attributes, and declare their fields with :func:`option`.
    """

    recipe: typing.ClassVar[str] = ""
    presets: typing.ClassVar[dict[str, dict]] = {}

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            setattr(self, field.name, _checked(field, value))
        self._baseline = dict(_BASELINE.get() or {})
        self._refuse_ignored()
        self.check()

    def check(self) -> None:
        """Checks across options, or beyond a type and a range; raise ``ValueError``."""

    def ignored(self) -> dict[str, str]:
        """The options that this config's other settings ignore, each with the end of its
        one-line error, e.g. ``{"hidden": "by net 'conv', whose widths are fixed"}``.

        Such an option is refused when given a value of its own (a run would store it and
        change nothing), and is left out of :meth:`to_dict` and ``config.toml``.
        """
        return {}

    def _refuse_ignored(self):
        fields = {field.name: field for field in dataclasses.fields(self)}
        for name, why in self.ignored().items():
            # the baseline: what the preset and the config file set, else the default
            if name in self._baseline:
                try:
                    baseline = _checked(fields[name], self._baseline[name])
                except ValueError:
                    baseline = None
            else:
                baseline = fields[name].default
            if getattr(self, name) != baseline:
                raise ValueError(f"{name}: ignored {why}; leave it out")

    def replace(self, **changes):
        """A copy with ``changes``, built as this config was (over its preset and file)."""
        token = _BASELINE.set(self._baseline)
        try:
            return dataclasses.replace(self, **changes)
        finally:
            _BASELINE.reset(token)

    @classmethod
    def option_names(cls) -> list[str]:
        return [field.name for field in dataclasses.fields(cls)]

    @classmethod
    def build(cls, preset=None, file=None, **values):
        """A config from a preset, a config file and explicit values, in that order.

        :param str preset: a name of :attr:`presets`.
        :param file: a ``.toml`` or ``.json`` config, e.g. a run folder's ``config.toml``.
        :param values: option values that override both.
        :raises ValueError: on an unknown preset, file, option or value.
        """
        merged = {}
        if preset is not None:
            if preset not in cls.presets:
                known = ", ".join(cls.presets) or "none"
                raise ValueError(
                    f"--preset: {cls.recipe} has no preset {preset!r}; known presets: {known}"
                )
            merged.update(cls.presets[preset])
        if file is not None:
            merged.update(read_config_file(file, cls.recipe))
        baseline = dict(merged)
        merged.update(values)
        unknown = sorted(set(merged) - set(cls.option_names()))
        if unknown:
            close = difflib.get_close_matches(unknown[0], cls.option_names(), n=1)
            guess = f"did you mean {close[0]}? " if close else ""
            raise ValueError(
                f"{unknown[0]}: not an option of {cls.recipe}; {guess}its options are "
                f"{', '.join(cls.option_names())}"
            )
        token = _BASELINE.set(baseline)
        try:
            return cls(**merged)
        finally:
            _BASELINE.reset(token)

    def to_dict(self) -> dict:
        """The options as a JSON-able dict (tuples as lists), less those :meth:`ignored`."""
        ignored = self.ignored()
        return {
            name: list(value) if isinstance(value, tuple) else value
            for name, value in dataclasses.asdict(self).items()
            if name not in ignored
        }

    def start_run(self, out_dir) -> Path:
        """Check the run folder and store this config in it as ``config.toml``, before any work.

        :raises ValueError: if ``out_dir`` is a file or cannot be written, or holds a
            finished run (``results.json``) or an interrupted one (one of
            :data:`INTERRUPTED_RUN_FILES`) while neither ``resume`` nor ``overwrite`` is set.
        """
        existed = Path(out_dir).is_dir()
        out_dir = writable_folder(out_dir)
        if not (getattr(self, "resume", False) or getattr(self, "overwrite", False)):
            _check_no_earlier_run(out_dir, resumable=hasattr(self, "resume"))
        path = out_dir / "config.toml"
        # what abandon_run needs to put the folder back as it was
        self._replaced = (
            path.read_text() if path.is_file() else None,
            _run_files(out_dir),
            existed,
        )
        return self.save(path)

    def abandon_run(self, out_dir) -> None:
        """Undo :meth:`start_run` for a run that stopped on an error before writing anything
        (a later check of its data or checkpoint, data not found): put back the
        ``config.toml`` it replaced, so that the folder's config still describes the run
        whose results and checkpoint it holds, or remove the one it wrote, and the folder
        too when the run made it and it is left empty. Does nothing once the run has
        written a checkpoint, metrics, results or finished rows."""
        replaced = getattr(self, "_replaced", None)
        out_dir = Path(out_dir)
        if replaced is None or _run_files(out_dir) != replaced[1]:
            return
        text, _, existed = replaced
        self._replaced = None  # once: the command line abandons what a recipe abandoned
        path = out_dir / "config.toml"
        if text is not None:
            path.write_text(text)
            return
        path.unlink(missing_ok=True)
        if not existed and not any(out_dir.iterdir()):
            out_dir.rmdir()  # the folder this run made, left empty

    def save(self, path) -> Path:
        """Write the config as TOML, with ``recipe`` first; unset options, those not
        ``stored`` (:func:`option`) and those :meth:`ignored` are omitted."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [f"recipe = {json.dumps(self.recipe)}"]
        values = self.to_dict()
        for field in dataclasses.fields(self):
            value = values.get(field.name)
            if value is not None and field.metadata.get("stored", True):
                lines.append(f"{field.name} = {_toml_value(value)}")
        path.write_text("\n".join(lines) + "\n")
        return path


def writable_folder(out_dir) -> Path:
    """The folder ``out_dir``, created if need be, once a file could be written in it.

    :raises ValueError: in one line naming ``--out``, if ``out_dir`` is a file or cannot
        be created or written (read-only, under a file, no permission).
    """
    if str(out_dir) == "":
        raise ValueError("--out: expected a folder, got an empty path")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out: {out_dir} is a file, not a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out_dir).close()
    except OSError as error:
        raise ValueError(f"--out: cannot write to {out_dir}: {error.strerror}") from None
    return out_dir


#: The largest seed of a run: NumPy's and scikit-learn's seeds are 32-bit (the data layer,
#: which loads torch, checks its own ``pyromem.data.splits.MAX_SEED``; this one is checked on
#: the command line before torch loads).
MAX_SEED = 2**32 - 1

#: The retrieval table's finished rows, or the capacity sweep's finished sizes, written as
#: each is done (``pyromem retrieval``).
TABLE_ROWS_FILE = "rows.json"
#: What an interrupted run leaves in its folder for ``--resume``: its last checkpoint, or a
#: stage's (the retrieval's VAE), and the retrieval table's finished rows or sizes.
INTERRUPTED_RUN_FILES = ("checkpoints/last.ckpt", "*/checkpoints/last.ckpt", TABLE_ROWS_FILE)


def _run_files(out_dir) -> dict:
    """The modification times of what a run writes in ``out_dir``, by path."""
    patterns = ("results.json", "metrics.csv", *INTERRUPTED_RUN_FILES)
    return {path: path.stat().st_mtime_ns for p in patterns for path in out_dir.glob(p)}


def interrupted_run_file(out_dir):
    """The first of :data:`INTERRUPTED_RUN_FILES` that ``out_dir`` holds, a ``Path``, or
    ``None``: whether a run there can be continued (``resume``)."""
    return next((path for p in INTERRUPTED_RUN_FILES for path in Path(out_dir).glob(p)), None)


def _check_no_earlier_run(out_dir, resumable) -> None:
    """Raise a one-line ``ValueError`` if ``out_dir`` holds a finished or interrupted run,
    which a new run there would replace."""
    if (out_dir / "results.json").is_file():
        raise ValueError(
            f"--out: {out_dir} holds a finished run; pass --overwrite to replace it "
            "or choose another --out"
        )
    left = interrupted_run_file(out_dir)
    if left is not None:
        resume = "pass --resume to continue it, " if resumable else ""
        raise ValueError(
            f"--out: {out_dir} holds an interrupted run ({left}); {resume}pass "
            "--overwrite to start again or choose another --out"
        )


def read_config_file(file, recipe=None) -> dict:
    """The options of a ``.toml`` or ``.json`` config file, without its ``recipe`` key.

    :param str recipe: the family the file must be for (``None``: any).
    :raises ValueError: if the file is missing, unreadable or for another family.
    """
    values = _read_table(file)
    found = values.pop("recipe", None)
    if recipe is not None and found not in (None, recipe):
        raise ValueError(f"--config: {file} is a config of {found!r}, not of {recipe!r}")
    return values


def config_recipe(file) -> str:
    """The ``recipe`` a config file names (for ``pyromem train --config FILE``)."""
    recipe = _read_table(file).get("recipe")
    if not isinstance(recipe, str):
        raise ValueError(f"--config: {file} names no recipe; name the family, e.g. train vma")
    return recipe


def _read_table(file) -> dict:
    path = Path(file)
    if not path.is_file():
        raise ValueError(f"--config: no config file at {path}")
    if path.suffix not in (".toml", ".json"):
        raise ValueError(f"--config: expected a .toml or .json file, got {path}")
    try:
        text = path.read_text()
        values = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, UnicodeDecodeError) as error:
        # JSONDecodeError and TOMLDecodeError are ValueErrors
        kind = path.suffix[1:].upper()
        raise ValueError(f"--config: {path} is not valid {kind}: {error}") from None
    if not isinstance(values, dict):
        raise ValueError(f"--config: expected a table of options in {path}")
    return values


def _checked(field, value):
    kind, is_tuple = base_type(field.type)
    name, choices = field.name, field.metadata.get("choices")
    if value is None:
        if field.default is not None:
            raise ValueError(f"{name}: expected a value, got None")
        return None
    bounds = tuple(field.metadata.get(key) for key in ("minimum", "above", "maximum"))
    if is_tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            value = (value,)
        if not value:
            raise ValueError(f"{name}: expected at least one value, got none")
        return tuple(_scalar(name, kind, item, choices, bounds) for item in value)
    return _scalar(name, kind, value, choices, bounds)


def _scalar(name, kind, value, choices, bounds=(None, None, None)):
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{name}: expected true or false, got {value!r}")
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name}: expected an integer, got {value!r}")
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name}: expected a number, got {value!r}")
        value = float(value)
    elif kind is str and not isinstance(value, str):
        raise ValueError(f"{name}: expected a string, got {value!r}")
    if choices is not None and value not in choices:
        raise ValueError(f"{name}: expected one of {tuple(choices)}, got {value!r}")
    if kind in (int, float):
        minimum, above, maximum = bounds
        if not math.isfinite(value):
            raise ValueError(f"{name}: expected a finite number, got {value!r}")
        if minimum is not None and value < minimum:
            raise ValueError(f"{name}: expected a value >= {minimum}, got {value!r}")
        if above is not None and not value > above:
            raise ValueError(f"{name}: expected a value > {above}, got {value!r}")
        if maximum is not None and value > maximum:
            raise ValueError(f"{name}: expected a value <= {maximum}, got {value!r}")
    return value


def _toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + "".join(map(_toml_char, value)) + '"'
    if isinstance(value, (int, float)):
        return json.dumps(value)
    return "[" + ", ".join(_toml_value(item) for item in value) + "]"


def _toml_char(char):
    # JSON's escapes are TOML's, but for a character beyond U+FFFF (an emoji in a --root),
    # which JSON writes as a surrogate pair that TOML refuses, and DEL, which TOML escapes
    if ord(char) > 0xFFFF:
        return f"\\U{ord(char):08x}"
    return "\\u007f" if char == "\x7f" else json.dumps(char)[1:-1]
