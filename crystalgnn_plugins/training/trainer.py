"""``train``: fit a crystal model on records with Lightning (checkpoints every
epoch, ``resume``, early stopping, fixed seeds) and write a JSON report."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from crystalgnn_plugins._atomic import atomic_write_json
from crystalgnn_plugins.models.base import CrystalModel
from crystalgnn_plugins.models.energy import EnergyModel
from crystalgnn_plugins.models.io import save_model

ENERGY_KEYS = ("energy", "forces", "stress")
#: per-atom energies train an energy model only when asked for (they are no observable)
ENERGY_TARGETS = (*ENERGY_KEYS, "energies")


@dataclass
class TrainResult:
    """The trained model (best validation checkpoint), its report and where it was saved."""

    model: CrystalModel
    report: dict[str, Any]
    model_dir: Path | None


def last_epoch_checkpoint(ckpt_dir: str | os.PathLike):
    """A Lightning callback writing ``ckpt_dir/last.ckpt`` after every epoch.

    ``ModelCheckpoint(save_last=True)`` of Lightning >= 2.4 refreshes ``last.ckpt`` only
    when a monitored checkpoint is saved, i.e. when the validation loss improves; a
    resumed run would then lose every epoch since the best one.
    """
    from lightning.pytorch.callbacks import ModelCheckpoint

    return ModelCheckpoint(dirpath=ckpt_dir, filename="last", monitor=None, save_top_k=1, every_n_epochs=1,
                           enable_version_counter=False)


def _elements(records) -> set[str]:
    return {s for r in records for s in r.atoms.get_chemical_symbols()}


def _default_loss(model: CrystalModel, targets: Sequence[str], weights: dict[str, float], extra: dict[str, Any]):
    from crystalgnn_plugins.training.losses import build_loss

    if isinstance(model, EnergyModel):
        return build_loss(
            "energy_force_stress",
            energy_weight=weights.get("energy", 1.0),
            force_weight=weights.get("forces", 1.0) if "forces" in targets else 0.0,
            stress_weight=weights.get("stress", 0.1) if "stress" in targets else 0.0,
            site_energy_weight=weights.get("energies", 1.0) if "energies" in targets else 0.0,
            scale=float(model.scale),
            **extra,
        )
    return build_loss(extra.pop("kind", "mse"), key=model.target, scale=float(model.std), **extra)


def train(
    train_records: Sequence[Any],
    val_records: Sequence[Any],
    test_records: Sequence[Any] = (),
    *,
    model: CrystalModel,
    targets: Sequence[str] | None = None,
    loss: str | Any | None = None,
    loss_kwargs: dict[str, Any] | None = None,
    weights: dict[str, float] | None = None,
    epochs: int = 100,
    batch_size: int = 32,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    patience: int = 20,
    lr_patience: int = 10,
    lr_schedule: str = "plateau",
    seed: int = 0,
    out_dir: str | os.PathLike | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool | float = True,
    accelerator: str = "auto",
    devices: int | str = "auto",
    strategy: str = "auto",
    num_nodes: int = 1,
    max_time: str | None = None,
    fit_normalisation: bool = True,
    checkpoint_minutes: float | None = 10.0,
    ema_decay: float | None = None,
) -> TrainResult:
    """Train ``model`` on labelled records.

    Args:
        train_records, val_records, test_records: records from
            :mod:`crystalgnn_plugins.data`; validation drives early stopping and
            the best checkpoint, the test split is only evaluated.
        model: an untrained :class:`PropertyModel` or :class:`EnergyModel`.
        targets: for an energy model a subset of ``("energy", "forces",
            "stress", "energies")`` (default: those of the first three present in
            the training set; per-atom ``energies``, e.g. a teacher's site energies,
            only when listed); a property model trains on its ``target``.
        loss: a registered loss name or a callable (default: ``mse`` on the
            normalised property, or ``energy_force_stress`` with ``weights``;
            ``loss_kwargs`` such as ``{"kind": "huber"}`` are passed to the default too).
        epochs, batch_size, lr, weight_decay, patience (early stopping, epochs),
            lr_patience (reduce-on-plateau), lr_schedule (``"plateau"`` or
            ``"cosine"`` over all ``epochs``): optimisation settings.
        seed: seeds Python, numpy and torch (data order and initialisation).
        out_dir: where the model (``out_dir/model``), ``report.json`` and logs go.
        checkpoint_dir: checkpoints every epoch (``last.ckpt``, ``best.ckpt``);
            default ``out_dir/checkpoints``.
        resume: continue from ``checkpoint_dir/last.ckpt`` (same settings required).
        progress: ``True``: Lightning's progress bar; ``False``: none; a number of
            minutes: no bar, a log line that often (step, running loss, steps per
            minute, time left in the epoch) and one per epoch with the validation
            metrics, for runs whose output goes to a file
            (:class:`~crystalgnn_plugins.training.progress.ProgressLines`).
        checkpoint_minutes: also write ``last.ckpt`` every this many minutes of
            training (``None``/0: only after each epoch); on one device a run resumed
            from such a mid-epoch checkpoint continues the epoch with the batches it had
            not seen (:class:`~crystalgnn_plugins.training.resumable.ResumableLoader`).
        accelerator, devices, strategy, num_nodes: passed to ``lightning.Trainer``
            (e.g. ``strategy="ddp"`` on several GPUs or nodes).
        fit_normalisation: fit the per-element reference energies and the energy
            scale (or the property mean/std) on the training set. ``False`` keeps
            those of an already trained ``model``: fine-tuning, e.g. of the shipped
            default potential on your own frames.
        ema_decay: keep an exponential moving average of the weights (updated after
            every optimiser step, e.g. ``0.999``; Lightning's ``EMAWeightAveraging``):
            validation, the checkpoints' ``state_dict`` (so ``best.ckpt``) and the
            returned model use the averaged weights; training continues on the raw
            ones, which the checkpoints also keep for ``resume``. ``None``: off.

    Returns:
        :class:`TrainResult`; the report has MAE, RMSE, R² per split, training time (s)
        and the number of parameters.
    """
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from crystalgnn_plugins.training.dataset import GraphDataset, collate
    from crystalgnn_plugins.training.evaluate import evaluate
    from crystalgnn_plugins.training.module import CrystalModule
    from crystalgnn_plugins.training.progress import quiet_lightning
    from crystalgnn_plugins.training.resumable import ResumableLoader, settings_changes

    if not train_records or not val_records:
        raise ValueError("train() needs non-empty training and validation sets")
    if ema_decay is not None and not 0.0 < ema_decay < 1.0:
        raise ValueError(f"ema_decay must lie strictly between 0 and 1 (e.g. 0.999), got {ema_decay}")
    progress_lines = None
    if not isinstance(progress, bool):
        from crystalgnn_plugins.training.progress import ProgressLines

        progress_lines = ProgressLines(progress)  # checks the number of minutes
    L.seed_everything(seed, workers=True, verbose=False)
    weights = dict(weights or {})

    if isinstance(model, EnergyModel):
        available = [k for k in ENERGY_KEYS if all(r.targets.get(k) is not None for r in train_records[:1])]
        targets = list(targets or available)
        if "energy" not in targets:
            raise ValueError("an energy model needs 'energy' labels")
        unknown = [k for k in targets if k not in ENERGY_TARGETS]
        if unknown:
            raise ValueError(f"an energy model trains on {list(ENERGY_TARGETS)}, not {unknown}")
        if "energies" in targets and not any(r.targets.get("energies") is not None for r in train_records):
            raise ValueError("targets include per-atom 'energies' but no training record has them")
        if model.elements is None:
            model.set_elements(_elements(train_records))
        if fit_normalisation:
            model.fit_normalisation([r.atoms.numbers for r in train_records], [r.targets["energy"] for r in train_records])
    else:
        targets = [model.target]
        if model.elements is None:
            model.set_elements(_elements([*train_records, *val_records, *test_records]))
        if fit_normalisation:
            model.fit_normalisation(
                [float(r.targets[model.target]) for r in train_records], [len(r.atoms) for r in train_records]
            )

    for rec in test_records:  # fail now, not after training, on elements the model cannot know
        model.check_elements(rec.atoms.numbers, f"{rec.id} ({rec.source})")

    if loss is None:
        loss_fn = _default_loss(model, targets, weights, loss_kwargs or {})
    elif isinstance(loss, str):
        from crystalgnn_plugins.training.losses import build_loss

        loss_fn = build_loss(loss, **(loss_kwargs or {}))
    else:
        loss_fn = loss

    out_dir = Path(out_dir) if out_dir is not None else None
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else (out_dir / "checkpoints" if out_dir else None)
    settings = {
        "model_type": model.model_type,
        "model": model.get_config(),
        "targets": targets,
        "loss": loss if isinstance(loss, str) else type(loss_fn).__name__,
        "loss_kwargs": loss_kwargs,
        "weights": weights,
        "batch_size": batch_size,
        "lr": lr,
        "lr_schedule": lr_schedule,
        "epochs": epochs if lr_schedule == "cosine" else None,
        "weight_decay": weight_decay,
        "seed": seed,
        "num_train": len(train_records),
        "num_val": len(val_records),
        **({} if fit_normalisation else {"fit_normalisation": False}),
        **({"ema_decay": ema_decay} if ema_decay is not None else {}),
    }
    fingerprint = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]
    ckpt_path = None
    if ckpt_dir is not None:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        stamp = ckpt_dir / "settings.json"
        if resume:
            last = ckpt_dir / "last.ckpt"
            if not last.exists():
                raise FileNotFoundError(f"--resume: no checkpoint {last}")
            stored = json.loads(stamp.read_text()) if stamp.exists() else None
            if stored is not None and stored.get("fingerprint") != fingerprint:
                changes = settings_changes(stored["settings"], settings) if "settings" in stored else ""
                raise ValueError(
                    f"--resume: the settings differ from those of the checkpoints in {ckpt_dir} "
                    f"({'changed since the checkpoints: ' + changes + '; ' if changes else ''}see {stamp}); "
                    "resume with the same data and options"
                )
            ckpt_path = str(last)
        elif (ckpt_dir / "last.ckpt").exists():
            raise FileExistsError(f"{ckpt_dir} already holds checkpoints: pass resume=True (--resume) or another directory")
        atomic_write_json(stamp, {"fingerprint": fingerprint, "settings": settings})

    model.train()  # a loaded (fine-tuned) model comes in eval mode
    module = CrystalModule(
        model, loss_fn, lr=lr, weight_decay=weight_decay, lr_patience=lr_patience, lr_schedule=lr_schedule,
        forces="forces" in targets, stress="stress" in targets,
    )
    val_loader = torch.utils.data.DataLoader(
        GraphDataset(val_records, model, targets), batch_size=batch_size, collate_fn=collate
    )
    callbacks = [EarlyStopping(monitor="val_loss", patience=patience, mode="min")]
    if progress_lines is not None:
        callbacks.append(progress_lines)
    if ema_decay is not None:
        from lightning.pytorch.callbacks import EMAWeightAveraging

        # the averaged copy keeps the model's fixed buffers (element references, scale)
        callbacks.append(EMAWeightAveraging(decay=ema_decay, use_buffers=False))
    checkpoint = None
    if ckpt_dir is not None:
        checkpoint = ModelCheckpoint(
            dirpath=ckpt_dir, filename="best", monitor="val_loss", mode="min", save_top_k=1,
            every_n_epochs=1, enable_version_counter=False,
        )
        callbacks += [checkpoint, last_epoch_checkpoint(ckpt_dir)]
        if checkpoint_minutes:
            callbacks.append(ModelCheckpoint(
                dirpath=ckpt_dir, filename="last", monitor=None, save_top_k=1, enable_version_counter=False,
                train_time_interval=timedelta(minutes=checkpoint_minutes),
            ))
    quiet = quiet_lightning() if progress is False else contextlib.nullcontext()
    with quiet:  # no progress shown: no Lightning advert or LeafSpec warning either
        trainer = L.Trainer(
            max_epochs=epochs,
            max_time=max_time,
            accelerator=accelerator,
            devices=devices,
            strategy=strategy,
            num_nodes=num_nodes,
            callbacks=callbacks,
            enable_progress_bar=progress is True,
            enable_model_summary=False,
            logger=L.pytorch.loggers.CSVLogger(out_dir, name="logs") if out_dir else False,
            inference_mode=False,
            log_every_n_steps=max(1, min(50, math.ceil(len(train_records) / batch_size))),
            default_root_dir=out_dir,
            enable_checkpointing=checkpoint is not None,
        )
        train_data = GraphDataset(train_records, model, targets)
        if trainer.world_size == 1:
            # continues a mid-epoch checkpoint where it stopped
            train_loader = ResumableLoader(train_data, batch_size, seed=seed, collate_fn=collate)
        else:  # Lightning shards the data with a DistributedSampler
            train_loader = torch.utils.data.DataLoader(
                train_data, batch_size=batch_size, shuffle=True, collate_fn=collate,
                generator=torch.Generator().manual_seed(seed),
            )
        start = time.perf_counter()
        with warnings.catch_warnings():
            # our settings.json lives beside the checkpoints; that is expected
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
            trainer.fit(module, train_loader, val_loader, ckpt_path=ckpt_path, weights_only=True)
    train_time = time.perf_counter() - start

    if checkpoint is not None and checkpoint.best_model_path:
        state = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state)
    model = module.model.cpu().eval()

    report: dict[str, Any] = {
        "model_type": model.model_type,
        "encoder": model.encoder_name,
        "targets": targets,
        "num_parameters": model.num_parameters,
        "training_time_s": train_time,
        "epochs_run": trainer.current_epoch,
        "best_val_loss": float(checkpoint.best_model_score) if checkpoint is not None and checkpoint.best_model_score is not None else None,
        "num_train": len(train_records),
        "num_val": len(val_records),
        "num_test": len(test_records),
        "seed": seed,
        "metrics": {
            "val": evaluate(model, val_records, targets),
            **({"test": evaluate(model, test_records, targets)} if test_records else {}),
        },
        "settings": settings,
    }
    model_dir = None
    if out_dir is not None:
        model_dir = save_model(model, out_dir / "model", extra={"report": "../report.json"})
        atomic_write_json(out_dir / "report.json", report)
    return TrainResult(model=model, report=report, model_dir=model_dir)
