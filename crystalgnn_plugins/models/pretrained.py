"""Models shipped inside the package (``crystalgnn_plugins/pretrained/<name>/``)
and resolution of a ``model=`` argument (object, path or name)."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch

from crystalgnn_plugins.models.base import CrystalModel
from crystalgnn_plugins.models.io import CONFIG_FILE, ModelFileError, load_model

PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"
DEFAULT_MODEL = "default"


def available_models() -> list[str]:
    """Names of the models shipped in the package."""
    if not PRETRAINED_DIR.is_dir():
        return []
    return sorted(p.name for p in PRETRAINED_DIR.iterdir() if (p / CONFIG_FILE).is_file())


def resolve_model(
    model: CrystalModel | str | os.PathLike | None,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> CrystalModel:
    """A model from an instance, a saved-model directory, or a shipped model name
    (``None`` is the shipped default)."""
    if isinstance(model, CrystalModel):
        param = next(model.parameters())
        if param.device == torch.device(device) and dtype in (None, param.dtype):
            return model
        # never convert the caller's model in place
        return copy.deepcopy(model).to(device=device, dtype=dtype or param.dtype)
    name = DEFAULT_MODEL if model is None else model
    path = Path(name)
    if path.exists():
        return load_model(path, device=device, dtype=dtype)
    shipped = PRETRAINED_DIR / str(name)
    if (shipped / CONFIG_FILE).is_file():
        return load_model(shipped, device=device, dtype=dtype)
    available = available_models()
    raise ModelFileError(
        f"no model {str(name)!r}: not a saved-model directory and not a shipped model "
        f"(shipped: {', '.join(available) if available else 'none yet'})"
    )
