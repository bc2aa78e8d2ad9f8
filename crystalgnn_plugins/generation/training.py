"""Train a :class:`CrystalFlow` with Lightning (checkpoints every epoch, resume)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from crystalgnn_plugins.generation.flow import CrystalBatch, CrystalFlow, collate_crystals


def _singletons(batch: CrystalBatch) -> list[CrystalBatch]:
    out, start = [], 0
    for k, n in enumerate(batch.num_atoms.tolist()):
        out.append(CrystalBatch(
            batch.species[start : start + n], batch.frac[start : start + n], batch.lattice[k : k + 1],
            batch.num_atoms[k : k + 1], batch.condition[k : k + 1], batch.ids[k : k + 1],
        ))
        start += n
    return out


def _energy_kwargs(energy_loss: dict[str, Any] | None, conditions: Sequence[str]) -> dict[str, Any]:
    """``CrystalFlow.loss`` arguments of the training energy term described by
    ``{"model", "weight", "conditions" (None: all), "min_time"}``."""
    if not energy_loss:
        return {}
    unknown = sorted(set(energy_loss) - {"model", "weight", "conditions", "min_time"})
    if unknown or "model" not in energy_loss:
        raise ValueError(f"energy_loss takes model, weight, conditions, min_time; got {sorted(energy_loss)}")
    from crystalgnn_plugins.generation.guidance import EnergyTerm

    wanted = energy_loss.get("conditions")
    if wanted is not None and not set(wanted) <= set(conditions):
        raise ValueError(f"energy_loss conditions {sorted(set(wanted) - set(conditions))} are not conditions "
                         f"of the flow ({list(conditions)})")
    # conditions left out get weight 0: the term is not active for them (their crystals never reach the model)
    term = EnergyTerm(energy_loss["model"], condition_weights=None if wanted is None else
                      {c: 1.0 if c in wanted else 0.0 for c in conditions})
    for p in term.model.parameters():
        p.requires_grad_(False)
    return {"energy_term": term, "energy_weight": float(energy_loss.get("weight", 1.0)),
            "energy_min_time": float(energy_loss.get("min_time", 0.5))}


def _module(flow: CrystalFlow, lr: float, epochs: int, loss_kwargs: dict[str, Any],
            energy_loss: dict[str, Any] | None = None):
    import lightning as L

    loss_kwargs = {**loss_kwargs, **_energy_kwargs(energy_loss, flow.conditions)}

    class FlowModule(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.flow = flow

        def _step(self, batch, stage):
            terms = self.flow.loss(batch, **loss_kwargs)
            for k, v in terms.items():
                self.log(f"{stage}_{k}", v.detach(), on_step=False, on_epoch=True, prog_bar=k == "loss",
                         batch_size=len(batch.num_atoms))
            return terms["loss"]

        def on_fit_start(self):
            term = loss_kwargs.get("energy_term")
            if term is not None:  # not a submodule (frozen, not saved): follow the flow's device by hand
                term.model.to(self.device)

        def training_step(self, batch, batch_idx):
            return self._step(batch, "train")

        def validation_step(self, batch, batch_idx):
            with torch.random.fork_rng():
                torch.manual_seed(1234 + batch_idx)  # the same noise every epoch: comparable val losses
                self._step(batch, "val")

        def configure_optimizers(self):
            opt = torch.optim.AdamW(self.flow.parameters(), lr=lr, weight_decay=1e-4)
            steps = max(1, int(self.trainer.estimated_stepping_batches))
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

        def on_before_optimizer_step(self, optimizer):
            torch.nn.utils.clip_grad_norm_(self.flow.parameters(), 1.0)

    return FlowModule()


def train_generator(
    train_structures: Sequence[Any],
    train_conditions: Sequence[str],
    val_structures: Sequence[Any],
    val_conditions: Sequence[str],
    *,
    flow: CrystalFlow | None = None,
    flow_kwargs: dict[str, Any] | None = None,
    loss_kwargs: dict[str, Any] | None = None,
    epochs: int = 100,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    max_time: str | None = None,
    progress: bool = False,
    energy_loss: dict[str, Any] | None = None,
) -> tuple[CrystalFlow, dict[str, Any]]:
    """Fit a :class:`CrystalFlow` on pymatgen ``Structure``s, each with a dataset condition.

    Checkpoints go to ``out_dir/checkpoints`` every epoch (``resume=True``
    continues from ``last.ckpt`` with the same settings); the final model is
    saved to ``out_dir/model`` and a report to ``out_dir/report.json``.
    ``energy_loss`` (``{"model": name or path, "weight": w, "conditions": [...],
    "min_time": t0}``) adds the learned energy of the predicted clean crystal as a
    training term (``CrystalFlow.loss(energy_term=...)``) for the listed conditions
    (default all) at times from ``t0`` (default 0.5).

    Returns:
        The trained flow (best validation loss) and the report.
    """
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from crystalgnn_plugins._atomic import atomic_write_json
    from crystalgnn_plugins.models.io import save_model
    from crystalgnn_plugins.training.progress import quiet_lightning
    from crystalgnn_plugins.training.trainer import last_epoch_checkpoint

    if not train_structures or not val_structures:
        raise ValueError("train_generator needs non-empty training and validation structures")
    L.seed_everything(seed, workers=True, verbose=False)
    loss_kwargs = dict(loss_kwargs or {})
    if flow is None:
        elements = sorted({sp.symbol for s in train_structures for sp in s.species})
        conditions = sorted(set(train_conditions))
        flow = CrystalFlow(elements, conditions, **(flow_kwargs or {}))
    train_batch = flow.batch_from_structures(train_structures, list(train_conditions))
    val_batch = flow.batch_from_structures(val_structures, list(val_conditions))
    flow.fit_statistics(train_batch)

    out = Path(out_dir) if out_dir is not None else None
    settings = {"config": flow.get_config(), "loss_kwargs": loss_kwargs,
                **({"energy_loss": energy_loss} if energy_loss else {}), "epochs": epochs, "batch_size": batch_size,
                "lr": lr, "seed": seed, "num_train": len(train_structures), "num_val": len(val_structures)}
    fingerprint = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    ckpt_path = None
    callbacks = []
    if out is not None:
        ckpt_dir = out / "checkpoints"
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        stamp = ckpt_dir / "settings.json"
        if resume:
            if not (ckpt_dir / "last.ckpt").exists():
                raise FileNotFoundError(f"resume: no checkpoint {ckpt_dir / 'last.ckpt'}")
            if stamp.exists() and json.loads(stamp.read_text()).get("fingerprint") != fingerprint:
                raise ValueError(f"resume: settings differ from those of the checkpoints in {ckpt_dir}")
            ckpt_path = str(ckpt_dir / "last.ckpt")
        elif (ckpt_dir / "last.ckpt").exists():
            raise FileExistsError(f"{ckpt_dir} already holds checkpoints: pass resume=True or another directory")
        atomic_write_json(stamp, {"fingerprint": fingerprint, "settings": settings})
        callbacks.append(ModelCheckpoint(
            dirpath=ckpt_dir, filename="best", monitor="val_loss", mode="min", save_top_k=1,
            enable_version_counter=False,
        ))
        callbacks.append(last_epoch_checkpoint(ckpt_dir))

    generator = torch.Generator().manual_seed(seed)
    train_loader = torch.utils.data.DataLoader(
        _singletons(train_batch), batch_size=batch_size, shuffle=True, collate_fn=collate_crystals,
        generator=generator, drop_last=len(train_structures) > batch_size,
    )
    val_loader = torch.utils.data.DataLoader(_singletons(val_batch), batch_size=256, collate_fn=collate_crystals)
    flow.train()  # a loaded model comes in eval mode
    module = _module(flow, lr, epochs, loss_kwargs, energy_loss)
    quiet = quiet_lightning() if not progress else contextlib.nullcontext()
    with quiet:  # no progress shown: no Lightning advert or LeafSpec warning either
        trainer = L.Trainer(
            max_epochs=epochs, max_time=max_time, callbacks=callbacks, enable_progress_bar=progress,
            enable_model_summary=False, logger=L.pytorch.loggers.CSVLogger(out, name="logs") if out else False,
            log_every_n_steps=max(1, min(50, len(train_loader))), default_root_dir=out,
            enable_checkpointing=bool(callbacks), accelerator="auto", devices=1,
        )
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
            warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
            trainer.fit(module, train_loader, val_loader, ckpt_path=ckpt_path, weights_only=True)
    elapsed = time.perf_counter() - start
    if callbacks and callbacks[0].best_model_path:
        state = torch.load(callbacks[0].best_model_path, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state)
    flow = module.flow.cpu().eval()
    report = {
        "model_type": flow.model_type, "num_parameters": flow.num_parameters, "training_time_s": elapsed,
        "epochs_run": trainer.current_epoch,
        "best_val_loss": float(callbacks[0].best_model_score) if callbacks and callbacks[0].best_model_score is not None else None,
        "settings": settings,
    }
    if out is not None:
        save_model(flow, out / "model", extra={"report": "../report.json"})
        atomic_write_json(out / "report.json", report)
    return flow, report
