"""``crystalgnn`` command line: ``train``, ``predict``, ``relax``, ``generate``, ``plugins``."""

from __future__ import annotations

import argparse
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


def main(argv: Sequence[str] | None = None) -> int:
    from crystalgnn_plugins.plugins import PluginError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, KeyError, FileNotFoundError, FileExistsError, ImportError, PluginError) as exc:
        print(f"crystalgnn {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
