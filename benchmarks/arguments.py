"""Argument checks shared by the benchmark scripts (a helper module, not a benchmark).

The scripts run as ``python benchmarks/<name>.py``, which puts ``benchmarks/`` on ``sys.path``,
so they import this module as ``arguments``. Each check refuses a bad value in one line on
stderr with argparse's exit status 2, before the script does any work.
"""

import argparse
import platform

import torch


class Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds "(default: ...)" to each option's help, unless the help already says its default."""

    def _get_help_string(self, action):
        if "(default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` whose ``--help`` shows every option's default."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", Formatter)
        super().__init__(*args, **kwargs)

    def add_argument(self, *args, **kwargs):
        # the formatter adds "(default: ...)" to an option's help text only, never to none
        if kwargs.get("help") is None:
            kwargs["help"] = "(default: %(default)s)"
        return super().add_argument(*args, **kwargs)

    def error(self, message):
        """One line on stderr, exit status 2 (argparse's own ``error`` prints the usage too)."""
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _integer(text, least, words):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"{words}, not {value}")
    return value


def positive_int(text):
    """An argparse ``type``: an integer of at least 1."""
    return _integer(text, 1, "must be a positive integer")


def non_negative_int(text):
    """An argparse ``type``: an integer of at least 0."""
    return _integer(text, 0, "must be a non-negative integer")


def at_least_two(text):
    """An argparse ``type``: an integer of at least 2."""
    return _integer(text, 2, "must be an integer of at least 2")


def add_threads(parser):
    """Add the scripts' ``--threads``: torch's CPU threads (unset: torch's default)."""
    parser.add_argument("--threads", type=positive_int, default=None, help="torch's CPU threads")


def set_threads(threads):
    """Give torch ``threads`` CPU threads, where ``--threads`` was given."""
    if threads is not None:
        torch.set_num_threads(threads)


def add_device(parser, help="torch device: cpu, cuda or cuda:N (or mps)"):
    """Add the scripts' ``--device`` option."""
    parser.add_argument("--device", default="cpu", help=help)


def device(parser, name):
    """``name`` as a :class:`torch.device`, or ``parser.error`` (one line, exit 2) where the
    string does not parse or names a device this machine lacks."""
    try:
        found = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        parser.error(f"argument --device: {name!r} is no torch device (cpu, cuda, cuda:N, mps)")
    if found.type == "cuda":
        if not torch.cuda.is_available():
            parser.error(f"argument --device: {name!r} asks for CUDA, which this machine lacks")
        if found.index is not None and found.index >= torch.cuda.device_count():
            parser.error(
                f"argument --device: {name!r} but this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)"
            )
    elif found.type == "mps":
        if not torch.backends.mps.is_available():
            parser.error(f"argument --device: {name!r} asks for MPS, which this machine lacks")
    elif found.type != "cpu":
        parser.error(f"argument --device: {name!r} is not supported here (cpu, cuda, cuda:N, mps)")
    return found


def device_name(device):
    """What a figure names its device by: the GPU's name, or the CPU's (the machine's
    architecture where the platform does not say)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()
