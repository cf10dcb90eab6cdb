"""The pyromem command, generated from the recipes' configs.

    pyromem demo [--quick] [--resume] [--out DIR] [--json]
    pyromem train vae|vma|kpp [--preset NAME] [--config FILE] [options] [--out DIR] [--json]
    pyromem train --config RUN/config.toml
    pyromem eval vae|vma|kpp --checkpoint PATH [--out DIR] [--json]
    pyromem retrieval [--dataset patches] [options] [--out DIR] [--json]
    pyromem compare-guides [--model vae|memory-vae] [options] [--out DIR] [--json]
    pyromem compare-estimators [options] [--out DIR] [--json]

Every command writes results.json and figures to --out (and, but for demo and eval,
the run's full config to config.toml); with --json it prints one JSON object on stdout and
sends progress to stderr (a command that fails prints none, and exits non-zero).
Each option's default, choices and help come from the recipe's config class
(pyromem.experiments.configs).
"""

import argparse
import contextlib
import dataclasses
import json
import re
import signal
import sys
import warnings
from pathlib import Path

from pyromem import __version__
from pyromem.experiments.configs import EvalConfig
from pyromem.experiments.options import (
    MAX_SEED,
    Choices,
    base_type,
    config_recipe,
    writable_folder,
)
from pyromem.experiments.registry import COMMANDS, FAMILIES

DEMO_OUT = "pyromem-demo"


def _flag(field):
    """The command-line flag of a config's field."""
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


def _named_by_flag(message, args):
    """``message`` with the option it starts with (``"gradient_clip_val: ..."``, or a model's
    ``"episode_length must be ..."``) named by the flag that the user typed
    (``"--gradient-clip: ..."``)."""
    if args.command == "eval":
        config = EvalConfig
    elif args.command == "train":
        config = FAMILIES[args.family].config
    elif args.command in COMMANDS:
        config = COMMANDS[args.command].config
    else:
        return message
    name = re.match(r"\w*", message).group()
    fields = {field.name: field for field in dataclasses.fields(config)}
    return _flag(fields[name]) + message[len(name) :] if name in fields else message


def add_options(parser, config_class, list_choices=True, defaults=None):
    """Add one flag per field of ``config_class``, each with its type, choices and help.

    Defaults are left out of the parsed namespace (``argparse.SUPPRESS``), so that
    only the flags given override a preset or a config file; ``--help`` shows them.

    :param bool list_choices: name the choices of each option in its metavar. Choices
        imported from their home (:class:`~pyromem.experiments.options.Choices`) load
        torch, so the CLI lists them only for ``--help``.
    :param dict defaults: the default ``--help`` shows for some options, by name, where it
        is the command's rather than the field's (each eval family's own).
    """
    own = config_class.__dict__.get("__annotations__", {})
    # the recipe's own options first, then those it shares (data, engine, run)
    for field in sorted(dataclasses.fields(config_class), key=lambda f: f.name not in own):
        flag = _flag(field)
        kind, is_tuple = base_type(field.type)
        shown = field.default
        if isinstance(shown, tuple):
            shown = " ".join(map(str, shown))
        help_text = field.metadata["help"]
        if kind is bool:
            # the help says what the flag does: --no-progress does not show progress
            help_text = f"{'do not ' if field.default else ''}{help_text} (default: off)"
        elif field.metadata.get("required"):
            help_text += " (required)"
        elif field.name in (defaults or {}):
            help_text = re.sub(r" \(default: [^)]*\)$", "", help_text)
            help_text += f" (default: {defaults[field.name]})"
        elif shown is not None or "default:" not in help_text:
            # an unset option whose help already says what it defaults to needs no "unset"
            help_text += f" (default: {'unset' if shown is None else shown})"
        options = {"dest": field.name, "default": argparse.SUPPRESS, "help": help_text}
        if field.metadata.get("required"):
            options["required"] = True
        if kind is bool:
            options["action"] = "store_false" if field.default else "store_true"
        else:
            # choices are checked by the config, whose error names the option in one line
            choices = field.metadata.get("choices")
            if isinstance(choices, Choices) and not list_choices:
                choices = None
            options["type"] = kind
            # the flag's name: --gradient-clip GRADIENT_CLIP, not the field's
            metavar = flag.removeprefix("--").replace("-", "_").upper()
            options["metavar"] = "{" + ",".join(choices) + "}" if choices else metavar
            if is_tuple:
                options["nargs"] = "+"
        parser.add_argument(flag, **options)


def _add_output(parser, out_help):
    parser.add_argument("--out", default=None, help=out_help)
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object on stdout (default: off)"
    )


def _add_recipe(commands, recipe, list_choices):
    parser = commands.add_parser(recipe.name, help=recipe.help, description=recipe.help)
    add_options(parser, recipe.config, list_choices)
    presets = ", ".join(recipe.config.presets)
    if presets:
        parser.add_argument(
            "--preset",
            default=None,
            help=f"a paper's set-up (docs/presets.md): {presets} (default: none)",
        )
    parser.add_argument(
        "--config", default=None, help="a .toml or .json config of the run (default: none)"
    )
    _add_output(parser, f"the run's folder (default: {recipe.out})")
    return parser


def build_parser(list_choices=True):
    """The ``pyromem`` argument parser, generated from the registry's config classes.

    :param bool list_choices: as for :func:`add_options`.
    """
    parser = argparse.ArgumentParser(
        prog="pyromem", description="Memory-conditioned generative models as Pyro programs."
    )
    parser.add_argument("--version", action="version", version=f"pyromem {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo",
        help="the main job: every recipe, with a report",
        description="The main job: trains and scores every recipe on embedded data (a VAE, "
        "associative retrieval, VMA, Kanerva++) and writes report.md with its tables and "
        "figures, each section saying what to look at. Under 10 minutes on 2 CPU cores; "
        "--quick: under 2.",
    )
    demo.add_argument(
        "--quick", action="store_true", help="a run of under 2 minutes (default: off)"
    )
    demo.add_argument("--seed", type=int, default=0, help="seed of the whole run (default: 0)")
    demo.add_argument(
        "--num-threads",
        type=int,
        default=1,
        help="torch's CPU threads; the demo's small models run fastest on one (default: 1)",
    )
    demo.add_argument(
        "--no-progress",
        action="store_false",
        dest="progress",
        help="do not show progress on stderr (default: off)",
    )
    demo.add_argument(
        "--resume",
        action="store_true",
        help="keep the sections that the demo in --out finished and run the others (default: off)",
    )
    _add_output(demo, f"the report's folder (default: {DEMO_OUT})")

    train = commands.add_parser(
        "train",
        help="train a model",
        description="Train a model. pyromem train --config RUN/config.toml runs a run's "
        "config again, the family from the file.",
    )
    families = train.add_subparsers(dest="family", required=True)
    for recipe in FAMILIES.values():
        _add_recipe(families, recipe, list_choices)

    evaluate = commands.add_parser(
        "eval",
        help="evaluate a trained model again",
        description="Evaluate a checkpoint that pyromem train wrote, on its dataset's test "
        "split: the same bounds and figures as the training run's, with the samples asked for.",
    )
    eval_families = evaluate.add_subparsers(dest="family", required=True)
    for recipe in FAMILIES.values():
        sub = eval_families.add_parser(
            recipe.name,
            help=f"a checkpoint of {recipe.help}",
            description=f"Evaluate a checkpoint of {recipe.help} on its dataset's test split.",
        )
        own = {"num_samples": recipe.eval_samples, "num_particles": recipe.eval_particles}
        add_options(sub, EvalConfig, list_choices, defaults=own)
        _add_output(sub, "folder of the results (default: beside the checkpoint, in eval/)")

    for recipe in COMMANDS.values():
        _add_recipe(commands, recipe, list_choices)
    return parser


def _given(args, config_class):
    names = config_class.option_names()
    return {name: getattr(args, name) for name in names if hasattr(args, name)}


def _check_not_a_run(out) -> None:
    """Refuse an ``eval --out`` that holds a run (its ``config.toml``): the evaluation's
    ``results.json`` would replace the run's."""
    if (Path(out) / "config.toml").is_file():
        raise ValueError(
            f"--out: {out} holds a run (its config.toml), whose results.json the evaluation "
            "would replace; choose another --out, e.g. its eval folder (the default)"
        )


def _stored_config(out, recipe, preset, given):
    """The ``config.toml`` of the run that ``--resume`` continues, or ``None``: it goes on with
    the options it was started with, those given again on the command line aside. A config of
    another recipe is not taken: the checkpoint's own check names what differs. An unreadable
    one is refused: the run would go on from the defaults, and the checkpoint's check would
    name a difference the user never made."""
    if out is None:
        out = recipe.out.format(**dataclasses.asdict(recipe.config.build(preset, **given)))
    path = Path(out) / "config.toml"
    try:
        same = path.is_file() and config_recipe(path) == recipe.config.recipe
    except ValueError as error:
        raise ValueError(
            f"--resume: {str(error).removeprefix('--config: ')}; fix the run's config, or "
            "start the run again with --overwrite"
        ) from None
    return path if same else None


def run(args):
    """Run a parsed command and return its results dict (and set ``args.out``)."""
    if args.command == "demo":
        args.out = DEMO_OUT if args.out is None else args.out
        # before torch loads, as the recipes' options are checked
        if not 0 <= args.seed <= MAX_SEED:
            raise ValueError(f"--seed: expected a value in [0, {MAX_SEED}], got {args.seed}")
        if args.num_threads < 1:
            raise ValueError(f"--num-threads: expected a value >= 1, got {args.num_threads}")
        if not args.resume:  # a resume checks its folder's demo first
            writable_folder(args.out)
        from pyromem.experiments.demo import run_demo

        return run_demo(
            args.out,
            quick=args.quick,
            seed=args.seed,
            progress=args.progress,
            num_threads=args.num_threads,
            resume=args.resume,
        )
    if args.command == "eval":
        options = EvalConfig.build(**_given(args, EvalConfig))
        if not options.checkpoint:
            raise ValueError("--checkpoint: expected the path of a checkpoint")
        checkpoint = Path(options.checkpoint)
        # beside the checkpoint: in its run's folder for a run's checkpoints/last.ckpt
        beside = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else None
        if args.out is None:
            args.out = str((beside or checkpoint.parent) / "eval")
        writable_folder(args.out)  # before the evaluation, which may take minutes
        _check_not_a_run(args.out)
        recipe = FAMILIES[args.family]
        from pyromem.experiments.vae import stderr_line  # after parsing: it loads torch

        module = recipe.load()
        evaluator = getattr(module, recipe.evaluator)
        import pyro

        pyro.set_rng_seed(options.seed)
        results = evaluator(
            options.checkpoint,
            out_dir=args.out,
            num_samples=options.num_samples or recipe.eval_samples,
            # unset: each evaluator's own default (VMA's: the training run's)
            **({"num_particles": options.num_particles} if options.num_particles else {}),
            root=options.root,
            log=stderr_line if options.progress else None,
        )
        # the same table as the training run's, on the terminal (stderr under --json)
        print(module.summary(results))
        return results
    recipe = FAMILIES[args.family] if args.command == "train" else COMMANDS[args.command]
    preset, given = getattr(args, "preset", None), _given(args, recipe.config)
    file = args.config
    if file is None and given.get("resume"):
        file = _stored_config(args.out, recipe, preset, given)
    if given.get("resume") and given.get("overwrite"):
        # the recipes' inner runs pass both (continue a training where it has a checkpoint);
        # a user who gives both would see --overwrite ignored
        raise ValueError(
            "--overwrite: it starts the run in --out again and --resume continues it; "
            "give one of them"
        )
    config = recipe.config.build(preset=preset, file=file, **given)
    if args.out is None:  # an empty --out is refused, not replaced
        args.out = recipe.out.format(**dataclasses.asdict(config))
    module = recipe.load()
    import pyro  # after parsing: a bad flag is answered before the heavy imports

    pyro.set_rng_seed(config.seed)
    try:
        results = module.run(config, args.out)
    except Exception:  # a check, data not found, ...: not Ctrl-C, which keeps what it stopped
        config.abandon_run(args.out)
        raise
    summary = getattr(module, "summary", None)
    if summary is not None:
        # to stderr when stdout carries the JSON (main redirects it)
        print(summary(results))
    return results


def _with_config_family(argv):
    # ``pyromem train --config FILE`` (or ``--config=FILE``, anywhere after ``train``) with no
    # family: the family is the one the file names.
    if len(argv) < 2 or argv[0] != "train" or argv[1] in FAMILIES or argv[1] in ("-h", "--help"):
        return argv
    for i, arg in enumerate(argv[1:], 1):
        if arg == "--config" and i + 1 < len(argv):
            file = argv[i + 1]
        elif arg.startswith("--config="):
            file = arg.removeprefix("--config=")
        else:
            continue
        family = config_recipe(file)
        if family not in FAMILIES:
            # argparse would answer "invalid choice" for a family the user never typed
            rerun = f"; run it with pyromem {family} --config {file}" if family in COMMANDS else ""
            raise ValueError(
                f"--config: {file} is a config of {family!r}, not of a family of pyromem train "
                f"({', '.join(FAMILIES)}){rerun}"
            )
        return ["train", family, *argv[1:]]
    return argv


def _out_of_memory(error) -> str | None:
    """One line for torch's failure to allocate (a CPU's or a GPU's), or ``None``."""
    text = str(error)
    torch = sys.modules.get("torch")
    if not (
        (torch is not None and isinstance(error, torch.OutOfMemoryError))
        or "can't allocate memory" in text
        or "out of memory" in text.lower()
    ):
        return None
    # the CPU allocator counts bytes, CUDA's writes e.g. "Tried to allocate 20.00 GiB"
    size = re.search(r"allocate (\d+) bytes", text)
    asked = f"{int(size.group(1)) / 2**30:.1f} GiB" if size else None
    if asked is None:
        size = re.search(r"allocate ([\d.]+ [KMGT]iB)", text)
        asked = size.group(1) if size else None
    tried = f" (tried to allocate {asked})" if asked else ""
    return f"out of memory{tried}; a smaller model, batch or number of samples needs less"


def _interrupted(error, args) -> str:
    """What a Ctrl-C (or SIGTERM) stopped, and how to go on; ``error`` may be a
    :class:`pyromem.train.TrainingInterrupted` (not imported: it needs Lightning)."""
    by_sigterm = getattr(error, "signal_number", None) == signal.SIGTERM
    stopped = "terminated" if by_sigterm else "interrupted"
    if args.command == "demo":
        from pyromem.experiments.demo import SECTIONS_FILE

        # the record is written as the first section starts
        if (Path(args.out or DEMO_OUT) / SECTIONS_FILE).is_file():
            return (
                f"{stopped}; the same command with --resume keeps the finished sections and "
                "continues the one interrupted"
            )
        return f"{stopped}; the same command runs the demo again from its start"
    recipe = FAMILIES[args.family] if args.command == "train" else COMMANDS.get(args.command)
    fields = dataclasses.fields(recipe.config) if recipe is not None else ()
    resumable = "resume" in {field.name for field in fields}
    go_on = "; the same command with --resume continues the run"
    if getattr(error, "checkpoint", None) is None:
        # stopped outside a training (an evaluation, a comparison) or in its first epoch:
        # the trainings that the run's folder holds continue all the same
        from pyromem.experiments.options import INTERRUPTED_RUN_FILES

        out = Path(args.out) if getattr(args, "out", None) else None
        if resumable and out and any(any(out.glob(p)) for p in INTERRUPTED_RUN_FILES):
            return stopped + go_on
        return stopped
    line = (
        f"{stopped} in epoch {error.epoch} of {error.epochs}; {error.checkpoint} holds the "
        f"{error.completed} epochs completed"
    )
    if resumable:
        line += go_on
    return line


def main(argv=None):
    """Entry point of the ``pyromem`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        argv = _with_config_family(argv)
    except ValueError as error:
        print(f"pyromem: error: {error}", file=sys.stderr)
        return 2
    # torch loads after parsing, so that a bad flag is answered at once (see add_options)
    args = build_parser(list_choices="-h" in argv or "--help" in argv).parse_args(argv)
    # deprecation notices of our dependencies' internals are not the user's business
    warnings.filterwarnings("ignore", message=r".*LeafSpec.* is deprecated")
    try:
        # with --json, stdout carries the one JSON object and nothing else
        with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
            results = run(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"pyromem: error: {_named_by_flag(str(error), args)}", file=sys.stderr)
        return 2
    except ArithmeticError as error:  # pyromem.train.TrainingDiverged
        print(f"pyromem: error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # a full disk, a folder that went away: the system's own words
        print(f"pyromem: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as error:
        print(f"pyromem: {_interrupted(error, args)}", file=sys.stderr)
        # 128 + the signal, as a shell reports a process that Ctrl-C (SIGINT, 2) or
        # SIGTERM (15) stopped
        return 128 + getattr(error, "signal_number", signal.SIGINT)
    except RuntimeError as error:
        line = _out_of_memory(error)
        if line is None:
            raise
        print(f"pyromem: error: {line}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(results))
    else:
        print(f"results written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
