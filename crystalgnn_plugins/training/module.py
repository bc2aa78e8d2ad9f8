"""The Lightning module wrapping a crystal model and a loss."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from crystalgnn_plugins.models.base import CrystalModel
from crystalgnn_plugins.models.energy import EnergyModel


class CrystalModule(L.LightningModule):
    """Trains a :class:`CrystalModel` with a registered loss; Adam with a
    reduce-on-plateau (``lr_schedule="plateau"``) or a per-step cosine decay to
    ``lr/100`` over the whole run (``lr_schedule="cosine"``, for a fixed budget)."""

    def __init__(
        self,
        model: CrystalModel,
        loss: Any,
        *,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        forces: bool = False,
        stress: bool = False,
        lr_patience: int = 10,
        lr_schedule: str = "plateau",
    ):
        super().__init__()
        self.model = model
        self.loss = loss
        if lr_schedule not in ("plateau", "cosine"):
            raise ValueError(f"lr_schedule must be 'plateau' or 'cosine', got {lr_schedule!r}")
        self.lr, self.weight_decay, self.lr_patience = lr, weight_decay, lr_patience
        self.lr_schedule = lr_schedule
        self.forces, self.stress = forces, stress

    def forward(self, graph, create_graph: bool = False) -> dict[str, torch.Tensor]:
        if isinstance(self.model, EnergyModel):
            return self.model(
                graph, compute_forces=self.forces, compute_stress=self.stress, create_graph=create_graph
            )
        return self.model(graph)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        graph, targets = batch
        return graph.to(device=device), {k: v.to(device) for k, v in targets.items()}

    def _step(self, batch, stage: str) -> torch.Tensor:
        graph, targets = batch
        with torch.enable_grad():
            pred = self(graph, create_graph=stage == "train" and (self.forces or self.stress))
            loss = self.loss(pred, targets)
        self.log(f"{stage}_loss", loss.detach(), on_step=False, on_epoch=True, prog_bar=True, batch_size=graph.num_graphs)
        if stage == "val" and hasattr(self.loss, "terms"):  # unweighted terms: runs with other weights compare
            for name, value in self.loss.terms(pred, targets).items():
                self.log(f"val_{name}", value.detach(), on_step=False, on_epoch=True, batch_size=graph.num_graphs)
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        if self.lr_schedule == "cosine":
            steps = max(1, int(self.trainer.estimated_stepping_batches))
            cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=self.lr / 100)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": cosine, "interval": "step"}}
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=self.lr_patience)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val_loss"}}
