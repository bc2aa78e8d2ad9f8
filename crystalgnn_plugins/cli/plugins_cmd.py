"""``crystalgnn plugins [--json]``: list loaded plugins and what they register."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, TextIO


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``plugins`` sub-command to ``subparsers``; sets ``func`` to :func:`run`."""
    parser = subparsers.add_parser(
        "plugins",
        help="list loaded plugins and the names they register",
        description=(
            "List every loaded plugin (built-in or from an installed distribution) and, per "
            "registry, the names it registers. Set CRYSTALGNN_PLUGINS to a comma-separated "
            "list of entry-point names to restrict external plugins (empty: none)."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.set_defaults(func=run)
    return parser


def _origin_label(info: dict[str, Any]) -> str:
    dist = info["distribution"]
    if dist and info["version"]:
        dist = f"{dist} {info['version']}"
    if info["origin"] == "built-in":
        return f"built-in, {dist}" if dist else "built-in"
    if info["origin"] == "entry point":
        where = f"entry point {info['value']}"
        return f"{dist}, {where}" if dist else where
    return f"registered at runtime: {info['value']}" if info["value"] else "registered at runtime"


def _env_summary(env: str | None) -> str:
    from crystalgnn_plugins.plugins import ENV_VAR

    if env is None:
        return f"external plugins: all installed (restrict with {ENV_VAR}=name1,name2)"
    names = [n.strip() for n in env.split(",") if n.strip()]
    if not names:
        return f"external plugins: disabled ({ENV_VAR} is empty)"
    return f"external plugins: only {', '.join(names)} ({ENV_VAR})"


def _registries_json() -> dict[str, list[dict[str, Any]]]:
    from crystalgnn_plugins.plugins import REGISTRIES, _describe, get_registry

    return {
        kind: [
            {
                "name": e.name,
                "object": _describe(e.obj),
                "plugin": e.plugin,
                "distribution": e.distribution,
                "description": e.description,
            }
            for e in get_registry(kind).entries()
        ]
        for kind in REGISTRIES
    }


def format_text(plugins: list[dict[str, Any]], env: str | None) -> str:
    """Human-readable listing of :func:`crystalgnn_plugins.plugins.list_plugins` output."""
    lines: list[str] = []
    for info in plugins:
        lines.append(f"{info['name']}  [{_origin_label(info)}]")
        for kind, names in info["registers"].items():
            lines.append(f"    {kind}: {', '.join(names) if names else '(none)'}")
        listed = {f"register_{kind}" for kind in info["registers"]}
        other = [h for h in info["hooks"] if h not in listed]
        if other:
            lines.append(f"    other hooks: {', '.join(sorted(other))}")
        if not info["hooks"]:
            lines.append("    (implements no hooks)")
    if lines:
        lines.append("")
    count = len(plugins)
    lines.append(f"{count} plugin{'s' if count != 1 else ''} loaded; {_env_summary(env)}")
    return "\n".join(lines)


def run(args: argparse.Namespace, stdout: TextIO | None = None) -> int:
    """Print the plugin listing; returns the exit status (2 if a plugin is broken)."""
    from crystalgnn_plugins.plugins import ENV_VAR, PluginError, list_plugins

    out = stdout if stdout is not None else sys.stdout
    env = os.environ.get(ENV_VAR)
    try:
        plugins = list_plugins()
        registries = _registries_json() if getattr(args, "json", False) else None
    except PluginError as exc:
        print(f"crystalgnn plugins: error: {exc}", file=sys.stderr)
        return 2
    if registries is not None:
        doc = {"env": {ENV_VAR: env}, "plugins": plugins, "registries": registries}
        out.write(json.dumps(doc, indent=2) + "\n")
    else:
        out.write(format_text(plugins, env) + "\n")
    return 0
