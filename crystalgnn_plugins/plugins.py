"""Plugin host: the pluggy plugin manager and the name registries built from it.

Plugins (the built-in modules of :data:`crystalgnn_plugins.builtins.DEFAULT_PLUGINS`
and external packages exposing an entry point in the ``crystalgnn_plugins``
group) implement the collecting hooks of :mod:`crystalgnn_plugins.hookspecs`.
Each registry (:data:`REGISTRIES`) maps names to objects and remembers which
plugin registered each name::

    from crystalgnn_plugins.plugins import get_registry

    encoder_cls = get_registry("encoders").get("cgcnn")

Everything is built lazily on first use and cached; :func:`register_plugin`,
:func:`unregister_plugin` and :func:`reset` invalidate the caches. The
environment variable ``CRYSTALGNN_PLUGINS`` restricts which external plugins
load (comma-separated entry-point names; empty: none).

Importing this module is cheap: only the standard library and pluggy.
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
import threading
import types
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pluggy

from crystalgnn_plugins import hookspecs
from crystalgnn_plugins._version import __version__
from crystalgnn_plugins.hookspecs import hookimpl, hookspec

__all__ = [
    "BUILTIN_DISTRIBUTION",
    "ENTRY_POINT_GROUP",
    "ENV_VAR",
    "REGISTRIES",
    "DuplicateNameError",
    "Entry",
    "PluginError",
    "Registry",
    "UnknownNameError",
    "get_plugin_manager",
    "get_registry",
    "hookimpl",
    "hookspec",
    "list_plugins",
    "register_plugin",
    "reset",
    "unregister_plugin",
]

#: Registry kinds; each has a collecting hook ``register_<kind>``.
REGISTRIES: tuple[str, ...] = (
    "encoders",
    "losses",
    "explainers",
    "generators",
    "models",
    "pretrained",
    "readers",
)

#: Entry-point group scanned for external plugins.
ENTRY_POINT_GROUP = hookspecs.PROJECT_NAME

#: Environment variable selecting external plugins (comma-separated entry-point names).
ENV_VAR = "CRYSTALGNN_PLUGINS"

#: Distribution label of the built-in plugins.
BUILTIN_DISTRIBUTION = f"crystalgnn-plugins {__version__}"

_SINGULAR = {
    "encoders": "encoder",
    "losses": "loss",
    "explainers": "explainer",
    "generators": "generator",
    "models": "model",
    "pretrained": "pretrained model",
    "readers": "reader",
    "plugins": "plugin",
}
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]*")
_NAME_RULE = "names are lower-case letters, digits, '_' and '-', starting with a letter or digit"


# ---------------------------------------------------------------- exceptions
class PluginError(Exception):
    """A plugin failed to load, or registered something invalid."""


class DuplicateNameError(PluginError):
    """Two registrations of the same name in one registry.

    Attributes:
        kind: registry kind, e.g. ``"encoders"``.
        name: the duplicated name.
        plugins: names of the first and the second registering plugin.
    """

    def __init__(self, kind: str, name: str, first: str, second: str) -> None:
        self.kind = kind
        self.name = name
        self.plugins = (first, second)
        what = f"{_SINGULAR.get(kind, kind)} {name!r}"
        if first == second:
            msg = f"{what} registered twice by plugin {first!r}"
        else:
            msg = f"{what} registered by both plugin {first!r} and plugin {second!r}"
        super().__init__(msg)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.kind, self.name, *self.plugins))


class UnknownNameError(PluginError, KeyError):
    """A name that is not in a registry; the message lists the available names.

    Attributes:
        kind: registry kind, e.g. ``"encoders"``.
        name: the name looked up.
        available: the registered names (sorted).
        suggestions: close matches among ``available``.
    """

    def __init__(self, kind: str, name: object, available: Iterable[str]) -> None:
        self.kind = kind
        self.name = name
        self.available = sorted(available)
        key = name.lower() if isinstance(name, str) else str(name)
        self.suggestions = difflib.get_close_matches(key, self.available, n=3, cutoff=0.6)
        msg = f"unknown {_SINGULAR.get(kind, kind)} {name!r}"
        if self.suggestions:
            msg += f" (did you mean {' or '.join(repr(s) for s in self.suggestions)}?)"
        if self.available:
            msg += f"; available: {', '.join(self.available)}"
        else:
            msg += f"; no {kind} are registered"
        super().__init__(msg)

    def __str__(self) -> str:
        return str(self.args[0])

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.kind, self.name, self.available))


# ------------------------------------------------------------------ registry
@dataclass(frozen=True)
class Entry:
    """One registered object.

    Attributes:
        name: registry name.
        obj: the registered object (class, callable, ...).
        plugin: name of the registering plugin (module name or entry-point name).
        distribution: ``"<dist> <version>"`` the plugin comes from, or ``None``.
        description: one-line description (defaults to the object's docstring).
    """

    name: str
    obj: Any
    plugin: str
    distribution: str | None = None
    description: str | None = None


def _validate_name(kind: str, name: object, plugin: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise PluginError(
            f"plugin {plugin!r} registered an invalid {_SINGULAR.get(kind, kind)} name "
            f"{name!r}: {_NAME_RULE}"
        )


class Registry:
    """Read-only mapping of names to registered objects of one kind.

    Args:
        kind: one of :data:`REGISTRIES`.
        entries: initial entries (validated; duplicates raise).
    """

    def __init__(self, kind: str, entries: Iterable[Entry] = ()) -> None:
        _check_kind(kind)
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        for entry in entries:
            self._add(entry)

    def _add(self, entry: Entry) -> None:
        _validate_name(self.kind, entry.name, entry.plugin)
        previous = self._entries.get(entry.name)
        if previous is not None:
            raise DuplicateNameError(self.kind, entry.name, previous.plugin, entry.plugin)
        self._entries[entry.name] = entry

    def get(self, name: str) -> Any:
        """Registered object called ``name``; raises :class:`UnknownNameError`."""
        return self.entry(name).obj

    def entry(self, name: str) -> Entry:
        """Full :class:`Entry` of ``name``; raises :class:`UnknownNameError`."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UnknownNameError(self.kind, name, self._entries) from None

    __getitem__ = get

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        """Entries sorted by name."""
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={self.names()!r})"


def _check_kind(kind: object) -> None:
    if kind not in REGISTRIES:
        close = difflib.get_close_matches(str(kind), REGISTRIES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise PluginError(f"unknown registry {kind!r}{hint}; registries: {', '.join(REGISTRIES)}")


def _first_doc_line(obj: object) -> str | None:
    if not isinstance(obj, (type, types.FunctionType, types.MethodType)):
        return None
    doc = obj.__doc__
    if not isinstance(doc, str):
        return None
    for line in doc.strip().splitlines():
        if line.strip():
            return line.strip()
    return None


class _Registrar:
    """The ``register`` callable handed to one plugin's collecting hook."""

    def __init__(
        self, kind: str, plugin: str, distribution: str | None, sink: Callable[[Entry], None]
    ) -> None:
        self._kind = kind
        self._plugin = plugin
        self._distribution = distribution
        self._sink = sink
        self._open = True

    def __call__(self, name: str, obj: object, *, description: str | None = None) -> None:
        """Add ``obj`` to the registry under ``name``."""
        if not self._open:
            raise PluginError(
                f"plugin {self._plugin!r} called register() for {self._kind} "
                "after its hook returned"
            )
        _validate_name(self._kind, name, self._plugin)
        what = f"{_SINGULAR[self._kind]} {name!r} of plugin {self._plugin!r}"
        if obj is None:
            raise PluginError(f"{what}: cannot register None")
        if description is not None and not isinstance(description, str):
            raise PluginError(
                f"{what}: description must be a str, got {type(description).__name__}"
            )
        self._sink(
            Entry(
                name=name,
                obj=obj,
                plugin=self._plugin,
                distribution=self._distribution,
                description=description if description is not None else _first_doc_line(obj),
            )
        )

    def close(self) -> None:
        self._open = False

    def __repr__(self) -> str:
        return f"<register {self._kind} for plugin {self._plugin!r}>"


# ------------------------------------------------------------ plugin manager
@dataclass(frozen=True)
class _Source:
    """Where a registered plugin comes from."""

    origin: str  # "built-in" | "entry point" | "runtime"
    distribution: str | None = None
    version: str | None = None
    value: str | None = None  # module name or entry-point value

    @property
    def label(self) -> str | None:
        if self.distribution is None:
            return None
        return f"{self.distribution} {self.version}" if self.version else self.distribution


_lock = threading.RLock()
_pm: pluggy.PluginManager | None = None
_sources: dict[str, _Source] = {}
_registries: dict[str, Registry] = {}
_building: set[str] = set()


def _describe(obj: object) -> str:
    if isinstance(obj, types.ModuleType):
        return obj.__name__
    if isinstance(obj, (type, types.FunctionType)):
        return f"{obj.__module__}.{obj.__qualname__}"
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__} instance"


def _register(pm: pluggy.PluginManager, plugin: object, name: str | None) -> str:
    """Register ``plugin`` with ``pm``, turning pluggy's errors into PluginError."""
    plugin_name = name or pm.get_canonical_name(plugin)
    if pm.get_plugin(plugin_name) is not None:
        raise PluginError(f"a plugin named {plugin_name!r} is already registered")
    other = pm.get_name(plugin)
    if other is not None:
        raise PluginError(f"{_describe(plugin)} is already registered as plugin {other!r}")
    try:
        registered = pm.register(plugin, name=plugin_name)
    except pluggy.PluginValidationError as exc:
        if pm.get_plugin(plugin_name) is plugin:
            pm.unregister(plugin=plugin, name=plugin_name)
        raise PluginError(f"invalid plugin {plugin_name!r}: {exc}") from exc
    if registered is None:
        raise PluginError(f"plugin name {plugin_name!r} is blocked")
    return registered


def _check_pending(pm: pluggy.PluginManager) -> None:
    """``pm.check_pending()`` with a readable error naming plugin and hook."""
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        known = sorted(
            n for n, c in vars(pm.hook).items() if isinstance(c, pluggy.HookCaller) and c.has_spec()
        )
        for hook_name, caller in vars(pm.hook).items():
            if not isinstance(caller, pluggy.HookCaller) or caller.has_spec():
                continue
            for impl in caller.get_hookimpls():
                if impl.optionalhook:
                    continue
                close = difflib.get_close_matches(hook_name, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise PluginError(
                    f"plugin {impl.plugin_name!r} implements unknown hook {hook_name!r}{hint}; "
                    f"known hooks: {', '.join(known)}"
                ) from exc
        raise PluginError(str(exc)) from exc


def _selected_entry_points() -> list[str] | None:
    """Entry-point names selected by ``CRYSTALGNN_PLUGINS`` (``None``: all)."""
    raw = os.environ.get(ENV_VAR)
    if raw is None:
        return None
    return [n.strip() for n in raw.split(",") if n.strip()]


def _load_builtins(pm: pluggy.PluginManager, sources: dict[str, _Source]) -> None:
    from crystalgnn_plugins import builtins as builtin_pkg

    for module_name in builtin_pkg.DEFAULT_PLUGINS:
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise PluginError(
                f"failed to import built-in plugin {module_name!r}: {type(exc).__name__}: {exc}"
            ) from exc
        name = _register(pm, module, module_name)
        sources[name] = _Source("built-in", "crystalgnn-plugins", __version__, module_name)


def _load_entry_points(pm: pluggy.PluginManager, sources: dict[str, _Source]) -> None:
    selected = _selected_entry_points()
    if selected is not None and not selected:
        return
    import importlib.metadata

    eps = sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)
    if selected is not None:
        missing = sorted(set(selected) - {ep.name for ep in eps})
        if missing:
            available = ", ".join(sorted({ep.name for ep in eps})) or "(none installed)"
            raise PluginError(
                f"{ENV_VAR} names plugin(s) {', '.join(map(repr, missing))} but no such entry "
                f"point is installed in group {ENTRY_POINT_GROUP!r}; available: {available}"
            )
        eps = [ep for ep in eps if ep.name in selected]

    for ep in eps:
        dist = getattr(ep, "dist", None)
        dist_name = getattr(dist, "name", None)
        dist_version = getattr(dist, "version", None)
        origin = f" from {dist_name} {dist_version}" if dist_name else ""
        where = f"entry point {ep.name} = {ep.value}{origin}"
        if ep.name in sources:
            previous = sources[ep.name]
            raise PluginError(
                f"two plugins named {ep.name!r}: {where} and one from "
                f"{previous.label or previous.value}"
            )
        try:
            plugin = ep.load()
        except Exception as exc:
            raise PluginError(
                f"failed to load plugin {ep.name!r} ({where}): {type(exc).__name__}: {exc}"
            ) from exc
        try:
            name = _register(pm, plugin, ep.name)
        except PluginError as exc:
            raise PluginError(f"{exc} ({where})") from exc
        sources[name] = _Source("entry point", dist_name, dist_version, ep.value)


def get_plugin_manager() -> pluggy.PluginManager:
    """The shared plugin manager, created (and all plugins loaded) on first call.

    Loads the hookspecs, the built-in plugins of
    :data:`crystalgnn_plugins.builtins.DEFAULT_PLUGINS` and the external plugins
    of the ``crystalgnn_plugins`` entry-point group (filtered by
    ``CRYSTALGNN_PLUGINS``), then checks that every hook implementation matches
    a hookspec.

    Raises:
        PluginError: a plugin fails to import or implements an unknown hook.
    """
    global _pm
    with _lock:
        if _pm is None:
            pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
            pm.add_hookspecs(hookspecs)
            sources: dict[str, _Source] = {}
            _load_builtins(pm, sources)
            _load_entry_points(pm, sources)
            _check_pending(pm)
            _sources.clear()
            _sources.update(sources)
            _registries.clear()
            _pm = pm
        return _pm


def _build_registry(pm: pluggy.PluginManager, kind: str) -> Registry:
    if kind in _building:
        raise PluginError(f"get_registry({kind!r}) called recursively from a register_{kind} hook")
    _building.add(kind)
    try:
        registry = Registry(kind)
        caller = getattr(pm.hook, f"register_{kind}", None)
        if caller is None or not caller.has_spec():
            raise PluginError(f"no hookspec register_{kind} in crystalgnn_plugins.hookspecs")
        # get_hookimpls() lists implementations in registration order (built-ins,
        # entry points, runtime); pluggy would call them in reverse.
        for impl in caller.get_hookimpls():
            if impl.hookwrapper or impl.wrapper:
                raise PluginError(
                    f"plugin {impl.plugin_name!r}: register_{kind} cannot be a hook wrapper"
                )
            source = _sources.get(impl.plugin_name)
            register = _Registrar(
                kind, impl.plugin_name, source.label if source else None, registry._add
            )
            args = {"register": register}
            try:
                impl.function(*(args[a] for a in impl.argnames))
            except PluginError:
                raise
            except Exception as exc:
                raise PluginError(
                    f"plugin {impl.plugin_name!r} failed in register_{kind}: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            finally:
                register.close()
        return registry
    finally:
        _building.discard(kind)


def get_registry(kind: str) -> Registry:
    """The registry of ``kind`` (one of :data:`REGISTRIES`), built on first call.

    Raises:
        PluginError: unknown ``kind``, or a plugin registered something invalid
            (:class:`DuplicateNameError` for a name registered twice).
    """
    _check_kind(kind)
    with _lock:
        registry = _registries.get(kind)
        if registry is None:
            pm = get_plugin_manager()
            registry = _build_registry(pm, kind)
            _registries[kind] = registry
        return registry


def register_plugin(plugin: object, name: str | None = None) -> str:
    """Register a plugin (module, class or object with ``@hookimpl`` functions).

    Args:
        plugin: the plugin object.
        name: plugin name; default ``plugin.__name__`` (or pluggy's id-based name).

    Returns:
        The name the plugin is registered under.

    Raises:
        PluginError: name taken, plugin already registered, or a hook
            implementation does not match a hookspec (the plugin is then not kept).
    """
    with _lock:
        pm = get_plugin_manager()
        plugin_name = _register(pm, plugin, name)
        try:
            _check_pending(pm)
        except PluginError:
            pm.unregister(plugin=plugin, name=plugin_name)
            raise
        _sources[plugin_name] = _Source("runtime", value=_describe(plugin))
        _registries.clear()
        return plugin_name


def unregister_plugin(name_or_plugin: str | object) -> object:
    """Unregister a plugin given by name or object; returns the plugin object.

    Raises:
        UnknownNameError: no plugin of that name.
        PluginError: the object is not a registered plugin.
    """
    with _lock:
        pm = get_plugin_manager()
        if isinstance(name_or_plugin, str):
            name = name_or_plugin
            plugin = pm.get_plugin(name)
            if plugin is None:
                names = [n for n, p in pm.list_name_plugin() if p is not None]
                raise UnknownNameError("plugins", name, names)
        else:
            plugin = name_or_plugin
            found = pm.get_name(plugin)
            if found is None:
                raise PluginError(f"{_describe(plugin)} is not a registered plugin")
            name = found
        pm.unregister(plugin=plugin, name=name)
        _sources.pop(name, None)
        _registries.clear()
        return plugin


def reset() -> None:
    """Drop the plugin manager and all registries; the next use reloads plugins."""
    global _pm
    with _lock:
        _pm = None
        _sources.clear()
        _registries.clear()


def list_plugins() -> list[dict[str, Any]]:
    """One JSON-able dict per loaded plugin, in load order.

    Keys: ``name``; ``origin`` (``"built-in"``, ``"entry point"`` or
    ``"runtime"``); ``distribution`` and ``version`` (``None`` when unknown);
    ``value`` (module name, entry-point value or object path); ``hooks``
    (implemented hook names, sorted); ``registers`` (``{kind: [names]}`` for
    each ``register_<kind>`` hook the plugin implements).

    Builds every registry, so plugins' heavy imports happen here.
    """
    with _lock:
        pm = get_plugin_manager()
        registries = {kind: get_registry(kind) for kind in REGISTRIES}
        result = []
        for name, plugin in pm.list_name_plugin():
            if plugin is None:  # blocked
                continue
            source = _sources.get(name) or _Source("runtime", value=_describe(plugin))
            hooks = sorted({c.name for c in pm.get_hookcallers(plugin) or ()})
            registers = {
                kind: [e.name for e in registries[kind].entries() if e.plugin == name]
                for kind in REGISTRIES
                if f"register_{kind}" in hooks
            }
            result.append(
                {
                    "name": name,
                    "origin": source.origin,
                    "distribution": source.distribution,
                    "version": source.version,
                    "value": source.value,
                    "hooks": hooks,
                    "registers": registers,
                }
            )
        return result
