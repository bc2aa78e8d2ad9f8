"""Tests of the plugin manager, registries, entry-point loading and ``crystalgnn plugins``."""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import inspect
import json
import pickle
import subprocess
import sys
import threading
import types
from dataclasses import dataclass
from pathlib import Path

import pluggy
import pytest
from hypothesis import given
from hypothesis import strategies as st

import crystalgnn_plugins.builtins as builtin_pkg
from crystalgnn_plugins import hookspecs, plugins
from crystalgnn_plugins.cli import plugins_cmd
from crystalgnn_plugins.hookspecs import hookimpl
from crystalgnn_plugins.plugins import (
    BUILTIN_DISTRIBUTION,
    REGISTRIES,
    DuplicateNameError,
    Entry,
    PluginError,
    Registry,
    UnknownNameError,
    get_plugin_manager,
    get_registry,
    list_plugins,
    register_plugin,
    unregister_plugin,
)

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "plugins.md"
#: Captured at import, before the autouse fixture blanks ``DEFAULT_PLUGINS``.
REAL_DEFAULT_PLUGINS = builtin_pkg.DEFAULT_PLUGINS


def hookspec_names() -> list[str]:
    """Names of all hookspecs declared in :mod:`crystalgnn_plugins.hookspecs`."""
    marker = f"{hookspecs.PROJECT_NAME}_spec"
    return sorted(
        name
        for name, obj in vars(hookspecs).items()
        if inspect.isfunction(obj) and hasattr(obj, marker)
    )


HOOKS = hookspec_names()


def make_plugin(
    module_name: str, **registrations: list[str] | dict[str, object]
) -> types.ModuleType:
    """Throwaway plugin module; ``encoders=["a", "b"]`` registers fresh classes a and b."""
    module = types.ModuleType(module_name)
    module.objects = {}
    for kind, spec in registrations.items():
        items = spec if isinstance(spec, dict) else {n: type(f"Obj_{n}", (), {}) for n in spec}
        module.objects[kind] = items

        def impl(register, _items=items):
            for name, obj in _items.items():
                register(name, obj)

        impl.__name__ = f"register_{kind}"
        setattr(module, f"register_{kind}", hookimpl(impl))
    return module


# ------------------------------------------------------------------ hookspecs
def test_hookspecs_match_registries() -> None:
    assert HOOKS, "no hookspecs found"
    assert HOOKS == sorted(f"register_{kind}" for kind in REGISTRIES)


@pytest.mark.parametrize("hook", HOOKS)
def test_hookspec_signature_and_docstring(hook: str) -> None:
    func = getattr(hookspecs, hook)
    assert list(inspect.signature(func).parameters) == ["register"]
    assert func.__doc__ and "Example::" in func.__doc__ and "@hookimpl" in func.__doc__


@pytest.mark.parametrize("hook", HOOKS)
def test_throwaway_plugin_found_in_each_registry(hook: str, use_plugin) -> None:
    kind = hook.removeprefix("register_")

    class Thing:
        """A throwaway object.

        More text.
        """

    def impl(register):
        register("thing", Thing)
        register("other-thing_2", len, description="the builtin len")

    impl.__name__ = hook
    module = types.ModuleType("throwaway_plugin")
    setattr(module, hook, hookimpl(impl))
    use_plugin(module)

    registry = get_registry(kind)
    assert registry.kind == kind
    assert registry.get("thing") is Thing
    assert registry.names() == ["other-thing_2", "thing"]
    entry = registry.entry("thing")
    assert entry == Entry("thing", Thing, "throwaway_plugin", None, "A throwaway object.")
    assert registry.entry("other-thing_2").description == "the builtin len"
    for other in REGISTRIES:
        if other != kind:
            assert "thing" not in get_registry(other)


# ------------------------------------------------------------------ registry
def test_registry_mapping_api(use_plugin) -> None:
    mod = make_plugin("p1", encoders=["beta", "alpha"])
    use_plugin(mod)
    reg = get_registry("encoders")
    assert reg.names() == ["alpha", "beta"]
    assert list(reg) == ["alpha", "beta"]
    assert len(reg) == 2
    assert "alpha" in reg and "gamma" not in reg and 3 not in reg and None not in reg
    assert reg["beta"] is mod.objects["encoders"]["beta"]
    assert [e.name for e in reg.entries()] == ["alpha", "beta"]
    assert all(e.plugin == "p1" for e in reg.entries())
    assert "alpha" in repr(reg) and "encoders" in repr(reg)


def test_registry_is_cached_and_built_once(use_plugin) -> None:
    calls = []

    @hookimpl
    def register_losses(register):
        calls.append(1)
        register("l1", len)

    use_plugin(types.SimpleNamespace(__name__="counting", register_losses=register_losses))
    first = get_registry("losses")
    assert get_registry("losses") is first
    assert calls == [1]
    use_plugin(make_plugin("p2", losses=["l2"]))  # invalidates the cache
    second = get_registry("losses")
    assert second is not first and second.names() == ["l1", "l2"]
    assert calls == [1, 1]


def test_registry_constructor_validates() -> None:
    a = Entry("a", len, "p")
    assert Registry("models", [a]).get("a") is len
    with pytest.raises(DuplicateNameError):
        Registry("models", [a, Entry("a", max, "q")])
    with pytest.raises(PluginError, match="unknown registry"):
        Registry("nope")


def test_duplicate_name_names_both_plugins(use_plugin) -> None:
    use_plugin(make_plugin("first_plugin", models=["shared", "x"]))
    use_plugin(make_plugin("second_plugin", models=["shared"]))
    with pytest.raises(DuplicateNameError) as info:
        get_registry("models")
    msg = str(info.value)
    assert "'shared'" in msg and "first_plugin" in msg and "second_plugin" in msg
    assert info.value.plugins == ("first_plugin", "second_plugin")
    assert info.value.kind == "models" and info.value.name == "shared"
    assert isinstance(info.value, PluginError)
    again = pickle.loads(pickle.dumps(info.value))
    assert str(again) == msg


def test_duplicate_name_within_one_plugin(use_plugin) -> None:
    @hookimpl
    def register_readers(register):
        register("r", len)
        register("r", max)

    use_plugin(types.SimpleNamespace(__name__="twice", register_readers=register_readers))
    with pytest.raises(DuplicateNameError, match="registered twice by plugin 'twice'"):
        get_registry("readers")


def test_unknown_name_lists_available(use_plugin) -> None:
    use_plugin(make_plugin("p", encoders=["smooth_cgcnn", "cgcnn"]))
    reg = get_registry("encoders")
    with pytest.raises(UnknownNameError) as info:
        reg.get("foo")
    err = info.value
    assert str(err) == "unknown encoder 'foo'; available: cgcnn, smooth_cgcnn"
    assert isinstance(err, KeyError) and isinstance(err, PluginError)
    assert err.available == ["cgcnn", "smooth_cgcnn"] and err.name == "foo"
    assert str(pickle.loads(pickle.dumps(err))) == str(err)

    with pytest.raises(KeyError, match=r"did you mean 'cgcnn'\?"):
        reg.entry("CGCN")
    with pytest.raises(UnknownNameError, match="unknown encoder"):
        reg.get(["unhashable"])  # type: ignore[arg-type]


def test_unknown_name_in_empty_registry_and_loss_wording() -> None:
    with pytest.raises(UnknownNameError) as info:
        get_registry("losses").get("mse")
    assert str(info.value) == "unknown loss 'mse'; no losses are registered"


def test_unknown_registry_kind() -> None:
    with pytest.raises(PluginError) as info:
        get_registry("encoder")
    msg = str(info.value)
    assert "did you mean 'encoders'" in msg
    assert all(kind in msg for kind in REGISTRIES)


@pytest.mark.parametrize(
    "bad", ["", "Foo", "has space", "-leading", "_leading", "ümlaut", "a/b", "a.b", "a\n", 3, None]
)
def test_invalid_names_rejected(bad: object, use_plugin) -> None:
    @hookimpl
    def register_generators(register):
        register(bad, len)

    use_plugin(types.SimpleNamespace(__name__="badnames", register_generators=register_generators))
    with pytest.raises(PluginError, match="invalid generator name") as info:
        get_registry("generators")
    assert "badnames" in str(info.value) and "lower-case" in str(info.value)


@given(st.from_regex(r"[a-z0-9][a-z0-9_-]{0,20}", fullmatch=True))
def test_valid_names_accepted(name: str) -> None:
    assert Registry("readers", [Entry(name, len, "p")]).names() == [name]


@given(st.text(max_size=12).filter(lambda s: not plugins._NAME_RE.fullmatch(s)))
def test_names_outside_the_rule_rejected(name: str) -> None:
    with pytest.raises(PluginError, match="invalid reader name"):
        Registry("readers", [Entry(name, len, "p")])


def test_register_argument_checks(use_plugin) -> None:
    kept = []

    @hookimpl
    def register_explainers(register):
        kept.append(register)
        register("ok", len)

    use_plugin(types.SimpleNamespace(__name__="keeper", register_explainers=register_explainers))
    assert get_registry("explainers").names() == ["ok"]
    assert "keeper" in repr(kept[0])
    with pytest.raises(PluginError, match="after its hook returned"):
        kept[0]("late", len)

    for call, match in [
        (lambda r: r("none", None), "cannot register None"),
        (lambda r: r("desc", len, description=3), "description must be a str"),
    ]:
        plugins.reset()

        @hookimpl
        def register_explainers(register, _call=call):  # noqa: F811
            _call(register)

        use_plugin(types.SimpleNamespace(__name__="bad", register_explainers=register_explainers))
        with pytest.raises(PluginError, match=match):
            get_registry("explainers")


def test_hook_exception_wrapped_with_plugin_name(use_plugin) -> None:
    @hookimpl
    def register_models(register):
        raise ImportError("No module named 'dscribe'")

    use_plugin(types.SimpleNamespace(__name__="needs_dscribe", register_models=register_models))
    with pytest.raises(PluginError, match="'needs_dscribe' failed in register_models") as info:
        get_registry("models")
    assert "dscribe" in str(info.value)
    assert isinstance(info.value.__cause__, ImportError)


def test_recursive_get_registry_rejected(use_plugin) -> None:
    @hookimpl
    def register_models(register):
        get_registry("models")

    use_plugin(types.SimpleNamespace(__name__="recursive", register_models=register_models))
    with pytest.raises(PluginError, match="recursively"):
        get_registry("models")


def test_class_and_instance_plugins(use_plugin) -> None:
    class ClassPlugin:
        @staticmethod
        @hookimpl
        def register_losses(register):
            register("from-class", len)

    class InstancePlugin:
        def __init__(self, obj):
            self.obj = obj

        @hookimpl
        def register_losses(self, register):
            register("from-instance", self.obj)

    assert use_plugin(ClassPlugin) == "ClassPlugin"
    name = use_plugin(InstancePlugin(max), name="instance")
    assert name == "instance"
    reg = get_registry("losses")
    assert reg.get("from-instance") is max
    assert reg.entry("from-class").plugin == "ClassPlugin"


def test_concurrent_first_use_builds_one_registry(use_plugin) -> None:
    use_plugin(make_plugin("p", readers=["r"]))
    plugins._registries.clear()
    results: list[Registry] = []
    threads = [
        threading.Thread(target=lambda: results.append(get_registry("readers"))) for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8 and all(r is results[0] for r in results)


# ------------------------------------------------------- register / unregister
def test_misspelt_hook_rejected_by_check_pending(use_plugin) -> None:
    @hookimpl
    def register_encoder(register):  # missing "s"
        register("x", len)

    bad = types.SimpleNamespace(__name__="typo_plugin", register_encoder=register_encoder)
    with pytest.raises(PluginError) as info:
        register_plugin(bad)
    msg = str(info.value)
    assert "'typo_plugin'" in msg and "'register_encoder'" in msg
    assert "did you mean 'register_encoders'" in msg
    assert isinstance(info.value.__cause__, pluggy.PluginValidationError)
    # the bad plugin is not kept and the manager stays usable
    assert get_plugin_manager().get_plugin("typo_plugin") is None
    use_plugin(make_plugin("good", encoders=["x"]))
    assert get_registry("encoders").names() == ["x"]


def test_optional_unknown_hook_allowed(use_plugin) -> None:
    @hookimpl(optionalhook=True)
    def register_future_things(register):
        pass

    use_plugin(
        types.SimpleNamespace(__name__="future", register_future_things=register_future_things)
    )
    get_plugin_manager().check_pending()


def test_wrong_hook_arguments_rejected() -> None:
    @hookimpl
    def register_encoders(reg):
        pass

    with pytest.raises(PluginError, match="invalid plugin 'wrong_args'"):
        register_plugin(
            types.SimpleNamespace(__name__="wrong_args", register_encoders=register_encoders)
        )
    assert get_plugin_manager().get_plugin("wrong_args") is None


def test_hook_wrapper_rejected(use_plugin) -> None:
    @hookimpl(wrapper=True)
    def register_models(register):
        return (yield)

    use_plugin(types.SimpleNamespace(__name__="wrapper", register_models=register_models))
    with pytest.raises(PluginError, match="cannot be a hook wrapper"):
        get_registry("models")


def test_register_plugin_twice_rejected(use_plugin) -> None:
    mod = make_plugin("dup_mod", encoders=["a"])
    use_plugin(mod)
    with pytest.raises(PluginError, match="already registered as plugin 'dup_mod'"):
        register_plugin(mod, name="other_name")
    with pytest.raises(PluginError, match="a plugin named 'dup_mod' is already registered"):
        register_plugin(make_plugin("dup_mod"))


def test_unregister_plugin(use_plugin) -> None:
    mod = make_plugin("gone", encoders=["a"])
    use_plugin(mod)
    use_plugin(make_plugin("stays", encoders=["b"]))
    assert get_registry("encoders").names() == ["a", "b"]
    assert unregister_plugin("gone") is mod
    assert get_registry("encoders").names() == ["b"]
    with pytest.raises(UnknownNameError, match="unknown plugin 'gone'; available: stays"):
        unregister_plugin("gone")
    with pytest.raises(PluginError, match="not a registered plugin"):
        unregister_plugin(mod)
    use_plugin(mod)
    assert unregister_plugin(mod) is mod
    assert get_registry("encoders").names() == ["b"]


def test_reset_and_lazy_manager(use_plugin) -> None:
    plugins.reset()
    assert plugins._pm is None
    pm = get_plugin_manager()
    assert get_plugin_manager() is pm
    plugins.reset()
    assert get_plugin_manager() is not pm


# ------------------------------------------------------------------ built-ins
def test_default_plugins_tuple() -> None:
    assert REAL_DEFAULT_PLUGINS == (
        "crystalgnn_plugins.builtins.encoders",
        "crystalgnn_plugins.builtins.losses",
        "crystalgnn_plugins.builtins.models",
        "crystalgnn_plugins.builtins.pretrained",
        "crystalgnn_plugins.builtins.readers",
    )


def test_builtin_plugins_loaded_with_distribution(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "fake_builtin", make_plugin("fake_builtin", readers=["xyz"]))
    monkeypatch.setattr(builtin_pkg, "DEFAULT_PLUGINS", ("fake_builtin",))
    entry = get_registry("readers").entry("xyz")
    assert entry.plugin == "fake_builtin"
    assert entry.distribution == BUILTIN_DISTRIBUTION
    assert BUILTIN_DISTRIBUTION.startswith("crystalgnn-plugins ")
    [info] = list_plugins()
    assert info["origin"] == "built-in" and info["distribution"] == "crystalgnn-plugins"


def test_missing_builtin_module_raises(monkeypatch) -> None:
    monkeypatch.setattr(builtin_pkg, "DEFAULT_PLUGINS", ("crystalgnn_plugins.builtins.no_such",))
    with pytest.raises(PluginError, match="built-in plugin 'crystalgnn_plugins.builtins.no_such'"):
        get_plugin_manager()
    assert plugins._pm is None  # nothing half-built is cached


def test_real_builtins_load(monkeypatch) -> None:
    missing = [m for m in REAL_DEFAULT_PLUGINS if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"built-in plugin modules not written yet: {missing}")
    monkeypatch.setattr(builtin_pkg, "DEFAULT_PLUGINS", REAL_DEFAULT_PLUGINS)
    infos = {info["name"]: info for info in list_plugins()}  # builds every registry
    for module_name in REAL_DEFAULT_PLUGINS:
        info = infos[module_name]
        assert info["origin"] == "built-in"
        assert info["hooks"], f"{module_name} implements no hook"
    for kind in REGISTRIES:
        for entry in get_registry(kind).entries():
            assert entry.distribution == BUILTIN_DISTRIBUTION


# --------------------------------------------------------------- entry points
@dataclass
class FakeDist:
    name: str
    version: str


@dataclass
class FakeEntryPoint:
    name: str
    value: str
    target: object = None
    error: Exception | None = None
    dist: FakeDist | None = None
    group: str = plugins.ENTRY_POINT_GROUP

    def load(self) -> object:
        if self.error is not None:
            raise self.error
        return self.target


@pytest.fixture
def fake_entry_points(monkeypatch):
    """Install fake entry points; returns a function taking the list and the call log."""
    calls: list[str] = []

    def install(eps: list) -> list[str]:
        def entry_points(*, group: str):
            calls.append(group)
            return [ep for ep in eps if ep.group == group]

        monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
        return calls

    return install


def _two_entry_points() -> list[FakeEntryPoint]:
    return [
        FakeEntryPoint(
            "alpha",
            "alpha_pkg.plugin",
            make_plugin("alpha_pkg.plugin", encoders=["alpha_enc"]),
            dist=FakeDist("alpha-pkg", "1.2.3"),
        ),
        FakeEntryPoint(
            "beta",
            "beta_pkg.plugin",
            make_plugin("beta_pkg.plugin", losses=["beta_loss"]),
            dist=FakeDist("beta-pkg", "0.1"),
        ),
    ]


def test_entry_points_all_loaded_when_env_unset(monkeypatch, fake_entry_points) -> None:
    monkeypatch.delenv(plugins.ENV_VAR)
    calls = fake_entry_points(_two_entry_points())
    entry = get_registry("encoders").entry("alpha_enc")
    assert calls == [plugins.ENTRY_POINT_GROUP]
    assert entry.plugin == "alpha"
    assert entry.distribution == "alpha-pkg 1.2.3"
    assert get_registry("losses").entry("beta_loss").distribution == "beta-pkg 0.1"
    infos = {i["name"]: i for i in list_plugins()}
    assert infos["alpha"]["origin"] == "entry point"
    assert infos["alpha"]["distribution"] == "alpha-pkg" and infos["alpha"]["version"] == "1.2.3"
    assert infos["alpha"]["value"] == "alpha_pkg.plugin"
    assert infos["alpha"]["registers"] == {"encoders": ["alpha_enc"]}


@pytest.mark.parametrize("env", ["alpha", " alpha , ", "alpha,,"])
def test_env_var_selects_entry_points(monkeypatch, fake_entry_points, env: str) -> None:
    monkeypatch.setenv(plugins.ENV_VAR, env)
    fake_entry_points(_two_entry_points())
    assert [i["name"] for i in list_plugins()] == ["alpha"]
    assert "beta_loss" not in get_registry("losses")


@pytest.mark.parametrize("env", ["", " , "])
def test_empty_env_var_disables_external_plugins(monkeypatch, fake_entry_points, env) -> None:
    monkeypatch.setenv(plugins.ENV_VAR, env)
    monkeypatch.setitem(sys.modules, "fake_builtin", make_plugin("fake_builtin", readers=["r"]))
    monkeypatch.setattr(builtin_pkg, "DEFAULT_PLUGINS", ("fake_builtin",))
    calls = fake_entry_points(_two_entry_points())
    assert [i["name"] for i in list_plugins()] == ["fake_builtin"]  # built-ins always load
    assert calls == []


def test_env_var_naming_missing_plugin(monkeypatch, fake_entry_points) -> None:
    monkeypatch.setenv(plugins.ENV_VAR, "alpha,nope")
    fake_entry_points(_two_entry_points())
    with pytest.raises(PluginError, match=r"'nope'.*available: alpha, beta"):
        get_plugin_manager()


def test_failing_plugin_import_named(monkeypatch, fake_entry_points) -> None:
    monkeypatch.delenv(plugins.ENV_VAR)
    original = ModuleNotFoundError("No module named 'broken_dep'")
    eps = _two_entry_points() + [
        FakeEntryPoint(
            "broken", "broken_pkg.plugin", error=original, dist=FakeDist("broken-pkg", "2.0")
        )
    ]
    fake_entry_points(eps)
    with pytest.raises(PluginError) as info:
        get_registry("encoders")
    msg = str(info.value)
    assert "'broken'" in msg and "broken_pkg.plugin" in msg and "broken-pkg 2.0" in msg
    assert "No module named 'broken_dep'" in msg
    assert info.value.__cause__ is original
    assert plugins._pm is None


def test_entry_point_with_misspelt_hook(monkeypatch, fake_entry_points) -> None:
    monkeypatch.delenv(plugins.ENV_VAR)

    @hookimpl
    def register_model(register):
        pass

    mod = types.SimpleNamespace(__name__="typo_pkg.plugin", register_model=register_model)
    fake_entry_points([FakeEntryPoint("typo", "typo_pkg.plugin", mod)])
    with pytest.raises(PluginError, match="plugin 'typo' implements unknown hook 'register_model'"):
        get_plugin_manager()


def test_duplicate_entry_point_names(monkeypatch, fake_entry_points) -> None:
    monkeypatch.delenv(plugins.ENV_VAR)
    eps = _two_entry_points()
    eps.append(
        FakeEntryPoint(
            "alpha", "other.plugin", make_plugin("other.plugin"), dist=FakeDist("other", "9")
        )
    )
    fake_entry_points(eps)
    with pytest.raises(PluginError, match="two plugins named 'alpha'"):
        get_plugin_manager()


def test_real_entry_point_object(monkeypatch, fake_entry_points) -> None:
    """A genuine ``importlib.metadata.EntryPoint`` (no distribution) loads too."""
    monkeypatch.setenv(plugins.ENV_VAR, "real")
    module = make_plugin("real_ep_plugin", generators=["gen"])
    monkeypatch.setitem(sys.modules, "real_ep_plugin", module)
    ep = importlib.metadata.EntryPoint("real", "real_ep_plugin", plugins.ENTRY_POINT_GROUP)
    fake_entry_points([ep])
    entry = get_registry("generators").entry("gen")
    assert entry.plugin == "real" and entry.distribution is None


# ------------------------------------------------------------------- imports
def test_import_is_cheap_and_lazy() -> None:
    code = (
        "import sys\n"
        "import crystalgnn_plugins.plugins as p\n"
        "import crystalgnn_plugins.hookspecs, crystalgnn_plugins.builtins\n"
        "import crystalgnn_plugins.cli.plugins_cmd\n"
        "assert p._pm is None, 'plugin manager created at import'\n"
        "heavy = [m for m in ('torch', 'ase', 'pymatgen', 'numpy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert not any(m.startswith('crystalgnn_plugins.builtins.') for m in sys.modules)\n"
    )
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# ----------------------------------------------------------------------- CLI
def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="crystalgnn")
    sub = parser.add_subparsers(dest="command", required=True)
    plugins_cmd.add_parser(sub)
    return parser.parse_args(argv)


@pytest.fixture
def cli_plugins(use_plugin, monkeypatch, fake_entry_points) -> None:
    monkeypatch.setitem(sys.modules, "fake_builtin", make_plugin("fake_builtin", readers=["xyz"]))
    monkeypatch.setattr(builtin_pkg, "DEFAULT_PLUGINS", ("fake_builtin",))
    monkeypatch.setenv(plugins.ENV_VAR, "alpha")
    fake_entry_points(_two_entry_points())
    use_plugin(make_plugin("runtime_plugin", encoders=["enc_a", "enc_b"], models=[]))
    use_plugin(types.SimpleNamespace(__name__="empty_plugin"))


def test_cli_text(cli_plugins, capsys) -> None:
    args = _parse(["plugins"])
    assert args.func is plugins_cmd.run
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert f"fake_builtin  [built-in, {BUILTIN_DISTRIBUTION}]" in out
    assert "    readers: xyz" in out
    assert "alpha  [alpha-pkg 1.2.3, entry point alpha_pkg.plugin]" in out
    assert "    encoders: alpha_enc" in out
    assert "runtime_plugin  [registered at runtime: runtime_plugin]" in out
    assert "    encoders: enc_a, enc_b" in out
    assert "    models: (none)" in out
    assert "empty_plugin" in out and "(implements no hooks)" in out
    assert "4 plugins loaded; external plugins: only alpha (CRYSTALGNN_PLUGINS)" in out
    assert "beta" not in out


def test_cli_json(cli_plugins, capsys) -> None:
    args = _parse(["plugins", "--json"])
    assert args.func(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["env"] == {"CRYSTALGNN_PLUGINS": "alpha"}
    by_name = {p["name"]: p for p in doc["plugins"]}
    assert list(by_name) == ["fake_builtin", "alpha", "runtime_plugin", "empty_plugin"]
    assert by_name["alpha"]["distribution"] == "alpha-pkg"
    assert by_name["alpha"]["version"] == "1.2.3"
    assert by_name["fake_builtin"]["origin"] == "built-in"
    assert by_name["runtime_plugin"]["registers"] == {"encoders": ["enc_a", "enc_b"], "models": []}
    assert by_name["runtime_plugin"]["hooks"] == ["register_encoders", "register_models"]
    assert by_name["empty_plugin"]["hooks"] == [] and by_name["empty_plugin"]["registers"] == {}
    assert set(doc["registries"]) == set(REGISTRIES)
    [enc] = [e for e in doc["registries"]["encoders"] if e["name"] == "alpha_enc"]
    assert enc["plugin"] == "alpha" and enc["distribution"] == "alpha-pkg 1.2.3"
    assert enc["object"].endswith("Obj_alpha_enc")


def test_cli_env_summaries() -> None:
    assert "all installed" in plugins_cmd.format_text([], None)
    assert "disabled" in plugins_cmd.format_text([], "")
    assert plugins_cmd.format_text([], "").startswith("0 plugins loaded")


def test_cli_broken_plugin_exit_code(use_plugin, capsys) -> None:
    use_plugin(make_plugin("a1", losses=["same"]))
    use_plugin(make_plugin("a2", losses=["same"]))
    assert plugins_cmd.run(_parse(["plugins"])) == 2
    err = capsys.readouterr().err
    assert "crystalgnn plugins: error:" in err and "a1" in err and "a2" in err


def test_cli_main_entry(use_plugin, capsys) -> None:
    """Through ``crystalgnn_plugins.cli.main`` once the other sub-commands exist."""
    needed = ["crystalgnn_plugins.cli.train_cmd", "crystalgnn_plugins.cli.predict_cmd"]
    if any(importlib.util.find_spec(m) is None for m in needed):
        pytest.skip("train/predict sub-commands not written yet")
    from crystalgnn_plugins.cli.main import main

    use_plugin(make_plugin("via_main", encoders=["m1"]))
    assert main(["plugins"]) == 0
    assert "via_main" in capsys.readouterr().out


# ---------------------------------------------------------------------- docs
def test_docs_cover_every_hook_and_error() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for name in HOOKS:
        assert f"`{name}`" in text or f"{name}(" in text, f"{name} missing from docs/plugins.md"
    for name in ("PluginError", "DuplicateNameError", "UnknownNameError", plugins.ENV_VAR):
        assert name in text
    assert "[project.entry-points.crystalgnn_plugins]" in text
