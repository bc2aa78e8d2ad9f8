"""Models shipped inside the package (``crystalgnn_plugins/pretrained/<name>/``)
and resolution of a ``model=`` argument (object, path or name)."""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path

import torch

from crystalgnn_plugins.models.base import CrystalModel
from crystalgnn_plugins.models.io import CONFIG_FILE, WEIGHTS_FILE, ModelFileError, load_model

PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"
DEFAULT_MODEL = "default"


def available_models() -> list[str]:
    """Names of the registered trained models (shipped ones and those of plugins,
    hook ``register_pretrained``)."""
    from crystalgnn_plugins.plugins import get_registry

    return get_registry("pretrained").names()


def pretrained_path(name: str) -> Path | None:
    """The saved-model directory registered under ``name``, or ``None``."""
    from crystalgnn_plugins.plugins import get_registry

    registry = get_registry("pretrained")
    if name not in registry:
        return None
    obj = registry.get(name)
    path = obj() if callable(obj) else obj
    if isinstance(path, CrystalModel):
        raise ModelFileError(f"pretrained model {name!r} must be registered as a directory, got a model instance")
    return Path(path)


def resolve_model(
    model: CrystalModel | str | os.PathLike | None,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> CrystalModel:
    """A model from an instance, a saved-model directory, or the name of a
    registered trained model (``None`` is the shipped default potential)."""
    if isinstance(model, CrystalModel):
        param = next(model.parameters())
        if param.device == torch.device(device) and dtype in (None, param.dtype):
            return model
        # never convert the caller's model in place
        return copy.deepcopy(model).to(device=device, dtype=dtype or param.dtype)
    return load_model(model_path(model), device=device, dtype=dtype)


def model_path(model: str | os.PathLike | None) -> Path:
    """The directory of a saved model given as a path or a registered name
    (``None``: the shipped default potential). Raises ``ModelFileError``.

    A directory that holds a saved model wins over a registered name; one that holds
    none (e.g. a folder called ``default`` in the working directory) does not hide
    the registered model of that name (a warning says which was taken)."""
    name = DEFAULT_MODEL if model is None else model
    path = Path(name)
    if model is not None and (path / CONFIG_FILE).is_file():
        return path
    registered = pretrained_path(str(name))
    if registered is not None:
        if not (registered / CONFIG_FILE).is_file():
            raise ModelFileError(f"pretrained model {str(name)!r} is registered at {registered}, which holds no saved model")
        if model is not None and path.exists():
            warnings.warn(
                f"{str(name)!r} is taken as the registered model; the path {path} holds no saved model",
                UserWarning, stacklevel=3,
            )
        return registered
    if path.is_dir():
        inner = [p for p in ("model", "export") if (path / p / CONFIG_FILE).is_file()]
        hint = f"; did you mean {path / inner[0]}?" if inner else ""
        raise ModelFileError(f"{path}: no saved model here (expected {CONFIG_FILE} and {WEIGHTS_FILE}){hint}")
    if path.exists():
        return path  # a file: load_model says what is wrong with it
    available = available_models()
    raise ModelFileError(
        f"no model {str(name)!r}: not a saved-model directory and not a registered trained model "
        f"(registered: {', '.join(available) if available else 'none'})"
    )
