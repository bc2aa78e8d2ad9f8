"""Function-preserving growth of a trained PaiNN energy model (Net2Net-style).

Continuing training of a larger model from a trained smaller one costs far less than
training the larger model from scratch. Both kinds of growth give a model that
predicts the same energies, forces and stresses (to float rounding) and can use its
new weights from the first training step.

**Wider** (:func:`widen_energy_model`). A model with ``F`` features per atom is
copied into one with ``F' > F``: every weight between old channels is copied, every
weight from a new channel into an old one is zero, and the weights into the new
channels keep the fresh model's random initialisation. The old channels therefore
compute exactly what they computed before, the new channels take no part in the
output at first, and their outgoing weights get gradients because their activations
are not zero.

Feature dimensions of the PaiNN layers come in chunks (the message MLP gives
``n F`` gate values, the update MLP ``3 F``, ``U`` and ``V`` are one ``2 F``
matrix, the update MLP reads ``[s, |V v|]``): old channel ``c`` of chunk ``k`` moves
from ``k F + c`` to ``k F' + c``.

**Deeper** (:func:`deepen_energy_model`). Interaction blocks are appended after the
trained ones. PaiNN's blocks are residual (``s + ds``, ``v + dv``): the last linear
layer of each new block's message and update MLPs starts at zero, so the new blocks
add nothing at first, and those layers get gradients because their inputs are not
zero. A new block also widens the receptive field by one cutoff.
"""

from __future__ import annotations

import torch
from torch import nn

from crystalgnn_plugins.models.energy import EnergyModel


def _old_index(size_old: int, size_new: int, features_old: int, features_new: int) -> torch.Tensor | None:
    """Positions in the new dimension of the old entries (``None``: dimension unchanged)."""
    if size_old == size_new:
        return None
    chunks = size_old // features_old
    if chunks * features_old != size_old or chunks * features_new != size_new:
        raise ValueError(f"dimension {size_old} -> {size_new} is not a multiple of the features {features_old} -> {features_new}")
    return torch.cat([k * features_new + torch.arange(features_old) for k in range(chunks)])


def _larger_copy(model: EnergyModel, option: str, value: int, what: str) -> tuple[EnergyModel, int]:
    """A freshly initialised copy of the PaiNN ``model`` with the encoder option
    ``option`` raised to ``value`` (on the model's device and dtype), and the old value."""
    if not isinstance(model, EnergyModel) or model.encoder_name != "painn":
        raise ValueError(f"only a PaiNN energy model can be {what} "
                         f"(got {type(model).__name__} with {getattr(model, 'encoder_name', '?')!r})")
    old = int(model.encoder.get_config()[option])
    if value <= old:
        raise ValueError(f"{option} must exceed the model's {old}, got {value}")
    config = model.get_config()
    config["encoder_kwargs"] = {**config["encoder_kwargs"], option: int(value)}
    larger = type(model).from_config(config)
    ref = next(model.parameters())
    return larger.to(device=ref.device, dtype=ref.dtype), old


def _all(size: int) -> torch.Tensor:
    return torch.arange(size)


@torch.no_grad()
def widen_energy_model(model: EnergyModel, atom_features: int) -> EnergyModel:
    """A copy of ``model`` (PaiNN encoder) with ``atom_features`` features per atom
    that gives the same energies, forces and stresses (to float rounding).

    Raises:
        ValueError: not a PaiNN energy model, or ``atom_features`` not larger.
    """
    wide, f_old = _larger_copy(model, "atom_features", atom_features, "widened")
    old_modules = dict(model.named_modules())
    done: set[str] = set()
    for name, new in wide.named_modules():
        old = old_modules.get(name)
        if isinstance(new, nn.Linear):
            out_old, in_old = old.weight.shape
            out_new, in_new = new.weight.shape
            rows = _old_index(out_old, out_new, f_old, atom_features)
            cols = _old_index(in_old, in_new, f_old, atom_features)
            rows = _all(out_new) if rows is None else rows
            cols_all = _all(in_new) if cols is None else cols
            new.weight[rows] = 0.0  # an old output reads no new input ...
            new.weight[rows.unsqueeze(1), cols_all.unsqueeze(0)] = old.weight  # ... and the old inputs as before
            if new.bias is not None:
                new.bias[rows] = old.bias
            done.update(f"{name}.{p}" for p in ("weight", "bias") if getattr(new, p) is not None)
        elif isinstance(new, nn.Embedding):
            cols = _old_index(old.weight.shape[1], new.weight.shape[1], f_old, atom_features)
            new.weight[:, _all(new.weight.shape[1]) if cols is None else cols] = old.weight
            done.add(f"{name}.weight")
    old_state = model.state_dict()
    state = wide.state_dict()
    for key, value in old_state.items():
        if key in done:
            continue
        if state[key].shape != value.shape:
            raise ValueError(f"cannot widen {key}: shape {tuple(value.shape)} -> {tuple(state[key].shape)}")
        state[key].copy_(value)
    return wide


@torch.no_grad()
def deepen_energy_model(model: EnergyModel, num_layers: int) -> EnergyModel:
    """A copy of ``model`` (PaiNN encoder) with ``num_layers`` interaction blocks
    that gives the same energies, forces and stresses (to float rounding): the
    trained blocks are copied, the new ones appended with zero output.

    Raises:
        ValueError: not a PaiNN energy model, or ``num_layers`` not larger.
    """
    deep, layers_old = _larger_copy(model, "num_layers", num_layers, "deepened")
    missing, unexpected = deep.load_state_dict(model.state_dict(), strict=False)
    if unexpected or any(not _in_new_block(key, layers_old) for key in missing):
        raise ValueError(f"cannot deepen: unmatched weights {sorted(unexpected)} / {sorted(missing)}")
    for k in range(layers_old, num_layers):
        for last in (deep.encoder.messages[k].phi[-1], deep.encoder.updates[k].mlp[-1]):
            last.weight.zero_()
            last.bias.zero_()
    return deep


def _in_new_block(key: str, layers_old: int) -> bool:
    parts = key.split(".")
    return parts[:2] in (["encoder", "messages"], ["encoder", "updates"]) and int(parts[2]) >= layers_old
