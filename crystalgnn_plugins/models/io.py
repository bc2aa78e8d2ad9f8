"""Save and load models: ``model.json`` (class, version, config, elements,
units) + ``model.pt`` (state dict, loaded with ``weights_only=True``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from crystalgnn_plugins._atomic import atomic_write, atomic_write_json
from crystalgnn_plugins._version import __version__
from crystalgnn_plugins.models.base import CrystalModel

FORMAT = "crystalgnn-model"
FORMAT_VERSION = 1
CONFIG_FILE = "model.json"
WEIGHTS_FILE = "model.pt"


class ModelFileError(ValueError):
    """A saved model is missing, corrupt or incompatible (names the file)."""


def _providers(model: CrystalModel) -> dict[str, dict[str, str | None]]:
    """Which plugin (and distribution) registered the model's type and its encoder, so
    that loading it without that plugin can say what to install."""
    from crystalgnn_plugins.plugins import PluginError, get_registry

    out = {}
    for kind, name in (("models", model.model_type), ("encoders", getattr(model, "encoder_name", None))):
        if not name:
            continue
        try:
            entry = get_registry(kind).entry(name)
        except PluginError:
            continue
        out[kind] = {"name": name, "plugin": entry.plugin, "distribution": entry.distribution}
    return out


def _provider_hint(meta: dict[str, Any]) -> str:
    """``"; saved with encoder 'pair' of plugin 'myplugin' (myplugin 0.1.0): install it"``."""
    parts = [
        f"{kind[:-1]} {p['name']!r} of plugin {p['plugin']!r}" + (f" ({p['distribution']})" if p.get("distribution") else "")
        for kind, p in (meta.get("providers") or {}).items()
        if not str(p.get("plugin", "")).startswith("crystalgnn_plugins.")
    ]
    return f"; it was saved with the {' and the '.join(parts)}: install and enable that plugin" if parts else ""


def save_model(model: CrystalModel, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` into the directory ``path`` (created if needed); each file
    is written atomically. ``extra`` is stored under ``"metadata"``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    dtype = next(model.parameters()).dtype
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_type": model.model_type,
        "class": f"{type(model).__module__}:{type(model).__qualname__}",
        "package_version": __version__,
        "torch_version": torch.__version__,
        "dtype": str(dtype).replace("torch.", ""),
        "config": model.get_config(),
        "elements": model.elements,
        "units": dict(model.units),
        "num_parameters": model.num_parameters,
        "providers": _providers(model),
        "metadata": extra or {},
    }
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_write(path / WEIGHTS_FILE, lambda fh: torch.save(state, fh))
    atomic_write_json(path / CONFIG_FILE, meta)
    return path


def read_model_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The ``model.json`` of a saved model, validated."""
    path = Path(path)
    cfg = path / CONFIG_FILE if path.is_dir() else path
    if not cfg.exists():
        raise ModelFileError(f"{path}: no saved model here (expected {CONFIG_FILE} and {WEIGHTS_FILE})")
    try:
        meta = json.loads(cfg.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{cfg}: corrupt model file ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{cfg}: not a crystalgnn-plugins model file")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(
            f"{cfg}: model format version {meta.get('format_version')!r} is not supported "
            f"(this is crystalgnn-plugins {__version__}, format {FORMAT_VERSION})"
        )
    for key in ("model_type", "config"):
        if key not in meta:
            raise ModelFileError(f"{cfg}: field {key!r} missing")
    return meta


def load_model(
    path: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> CrystalModel:
    """Load a model saved by :func:`save_model` (in eval mode).

    The model class is looked up by its type in the models registry (so a
    model using a plugin encoder needs that plugin installed).
    """
    from crystalgnn_plugins.plugins import PluginError, get_registry

    path = Path(path)
    meta = read_model_metadata(path)
    root = path if path.is_dir() else path.parent
    try:
        cls = get_registry("models").get(meta["model_type"])
        model = cls.from_config(meta["config"])
    except PluginError as exc:
        raise ModelFileError(f"{root}: cannot rebuild the model: {exc}{_provider_hint(meta)}") from None
    except TypeError as exc:
        raise ModelFileError(f"{root}: config does not match {meta['model_type']!r} model: {exc}") from None
    saved_dtype = getattr(torch, str(meta.get("dtype", "float32")), None)
    if not isinstance(saved_dtype, torch.dtype):
        raise ModelFileError(f"{root}: unknown dtype {meta.get('dtype')!r} in {CONFIG_FILE}")
    model = model.to(dtype=saved_dtype)
    weights = root / WEIGHTS_FILE
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelFileError(f"{weights}: weights file missing") from None
    except Exception as exc:
        raise ModelFileError(f"{weights}: corrupt weights file ({type(exc).__name__}: {exc})") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(f"{weights}: weights do not fit the model in {CONFIG_FILE}: {exc}") from None
    model = model.to(device=device, dtype=dtype or saved_dtype)
    model.eval()
    return model
