"""Common base of crystal models: an encoder plus a readout."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from crystalgnn_plugins.encoders.base import Encoder, build_encoder, encoder_name
from crystalgnn_plugins.graph import CrystalGraph, to_atoms


class UnknownElementError(ValueError):
    """The structure contains an element the model was not trained on."""


def _mlp(in_features: int, hidden: int, num_layers: int, out_features: int = 1) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = in_features
    for _ in range(num_layers):
        layers += [nn.Linear(width, hidden), nn.Softplus()]
        width = hidden
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode inside the block, its own mode restored afterwards (a
    caller's model in training mode is not left in eval mode)."""
    was_training = model.training
    if was_training:
        model.eval()
    try:
        yield model
    finally:
        if was_training:
            model.train()


class CrystalModel(nn.Module):
    """Encoder + readout. Subclasses define ``model_type`` (their registry name),
    :meth:`forward` and the readout; this class handles configuration, the set of
    known elements and graph building.

    Args:
        encoder: an :class:`Encoder` instance or the registry name of one.
        encoder_kwargs: kwargs for a named encoder.
        elements: chemical symbols the model may be applied to (set by training;
            ``None`` accepts every element).
    """

    model_type: ClassVar[str] = ""
    #: outputs of :meth:`forward` with their units
    units: ClassVar[dict[str, str]] = {}

    def __init__(
        self,
        encoder: Encoder | str = "cgcnn",
        encoder_kwargs: dict[str, Any] | None = None,
        elements: Sequence[str] | None = None,
    ):
        super().__init__()
        if isinstance(encoder, str):
            self.encoder_name = encoder
            encoder = build_encoder(encoder, **(encoder_kwargs or {}))
        else:
            self.encoder_name = encoder_name(encoder)
        self.encoder = encoder
        self.elements: list[str] | None = None
        self.set_elements(elements)

    # ------------------------------------------------------------ config
    def get_config(self) -> dict[str, Any]:
        """JSON-serialisable kwargs such that ``type(self)(**get_config())`` rebuilds the model."""
        return {
            "encoder": self.encoder_name,
            "encoder_kwargs": self.encoder.get_config(),
            "elements": self.elements,
            **self._readout_config(),
        }

    def _readout_config(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> CrystalModel:
        return cls(**config)

    @property
    def cutoff(self) -> float:
        return self.encoder.cutoff

    @property
    def max_neighbors(self) -> int | None:
        return self.encoder.max_neighbors

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # ---------------------------------------------------------- elements
    def set_elements(self, elements: Iterable[str] | None) -> None:
        """Restrict the model to these chemical symbols (``None``: any element)."""
        from ase.data import atomic_numbers

        if elements is None:
            self.elements = None
            return
        symbols = sorted(set(elements), key=lambda s: atomic_numbers[s])
        for s in symbols:
            if s not in atomic_numbers or s == "X":
                raise ValueError(f"unknown chemical symbol {s!r}")
        self.elements = symbols

    def check_elements(self, atomic_numbers: torch.Tensor | Iterable[int], structure_id: str = "") -> None:
        """Raise :class:`UnknownElementError` naming elements outside ``self.elements``."""
        if self.elements is None:
            return
        from ase.data import chemical_symbols

        present = {chemical_symbols[int(z)] for z in torch.as_tensor(atomic_numbers).unique().tolist()}
        unknown = sorted(present - set(self.elements))
        if unknown:
            where = f" in structure {structure_id!r}" if structure_id else ""
            raise UnknownElementError(
                f"element(s) {', '.join(unknown)}{where} not known to this model; "
                f"it was trained on: {', '.join(self.elements)}"
            )

    # ------------------------------------------------------------- graphs
    def graph(self, structure, *, structure_id: str | None = None) -> CrystalGraph:
        """Crystal graph of an ``Atoms``/``Structure`` with this model's cutoff, dtype and device."""
        atoms = to_atoms(structure)
        param = next(self.parameters())
        sid = structure_id if structure_id is not None else atoms.get_chemical_formula()
        self.check_elements(atoms.numbers, sid)
        g = CrystalGraph.from_atoms(
            atoms, self.cutoff, self.max_neighbors, dtype=param.dtype, structure_id=sid
        )
        return g.to(device=param.device)

    def graphs(self, structures: Iterable, ids: Sequence[str] | None = None) -> CrystalGraph:
        """One batched graph of many structures."""
        structures = list(structures)
        ids = ids if ids is not None else [None] * len(structures)
        return CrystalGraph.collate([self.graph(s, structure_id=i) for s, i in zip(structures, ids)])


def pool_mean(x: torch.Tensor, batch: torch.Tensor, num_graphs: int) -> torch.Tensor:
    """Mean of per-atom rows ``x`` over each crystal."""
    total = torch.zeros((num_graphs, *x.shape[1:]), dtype=x.dtype, device=x.device).index_add(0, batch, x)
    counts = torch.bincount(batch, minlength=num_graphs).clamp(min=1).to(x.dtype)
    return total / counts.view(-1, *([1] * (x.dim() - 1)))


def pool_sum(x: torch.Tensor, batch: torch.Tensor, num_graphs: int) -> torch.Tensor:
    """Sum of per-atom rows ``x`` over each crystal."""
    return torch.zeros((num_graphs, *x.shape[1:]), dtype=x.dtype, device=x.device).index_add(0, batch, x)
