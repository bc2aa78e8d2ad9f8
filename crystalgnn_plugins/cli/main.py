"""``crystalgnn`` command line: ``train``, ``predict``, ``relax``, ``generate``, ``plugins``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from crystalgnn_plugins._version import __version__

#: sub-command modules, each with ``add_parser(subparsers)`` setting ``func``.
_COMMANDS = (
    "crystalgnn_plugins.cli.train_cmd",
    "crystalgnn_plugins.cli.predict_cmd",
    "crystalgnn_plugins.cli.plugins_cmd",
    "crystalgnn_plugins.cli.relax_cmd",
    "crystalgnn_plugins.cli.generate_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="crystalgnn", description="Crystal graph neural networks for ASE and pymatgen."
    )
    parser.add_argument("--version", action="version", version=f"crystalgnn-plugins {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in _COMMANDS:
        importlib.import_module(name).add_parser(sub)
    return parser


def _subcommand_parser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The parser of sub-command ``name`` (for errors with its usage)."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def _stdout_to_devnull() -> None:
    """After a closed pipe (``crystalgnn predict ... | head``): send what is left in
    stdout's buffer to /dev/null, so that the flush at exit does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no file descriptor (e.g. captured output)
        pass


def main(argv: Sequence[str] | None = None) -> int:
    from crystalgnn_plugins.plugins import PluginError

    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # e.g. a misspelt option of the sub-command: its usage, not the top-level one
        _subcommand_parser(parser, args.command).error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here rather than at exit
        return code
    except BrokenPipeError:  # the reader went away (``| head``): stop quietly
        _stdout_to_devnull()
        return 1
    except (ValueError, KeyError, FileNotFoundError, FileExistsError, ImportError, PluginError) as exc:
        print(f"crystalgnn {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
