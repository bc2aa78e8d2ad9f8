"""Progress as log lines: for training runs whose output goes to a file (``nohup``,
batch jobs), where a progress bar is unreadable and no bar means hours of silence."""

from __future__ import annotations

import contextlib
import logging
import math
import time
import warnings
from collections.abc import Iterator
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_info


class ProgressLines(L.Callback):
    """One line every ``every_minutes`` of training (epoch, step, running training
    loss, optimiser steps per minute, time left in the epoch) and one per epoch with
    the validation metrics. Printed on the first process only (Lightning's
    ``rank_zero_info``, the ``lightning.pytorch`` logger)."""

    def __init__(self, every_minutes: float) -> None:
        if not (isinstance(every_minutes, (int, float)) and math.isfinite(every_minutes) and every_minutes > 0):
            raise ValueError(f"progress lines need a positive number of minutes, got {every_minutes!r}")
        self.every_s = 60.0 * float(every_minutes)
        self._reset(time.perf_counter(), None)

    def _reset(self, now: float, batch: int | None) -> None:
        self._t0, self._batch0, self._loss_sum, self._loss_n = now, batch, 0.0, 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the batches done before are known at the first one: a run resumed within an
        # epoch starts there, not at batch 0
        self._reset(time.perf_counter(), None)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._batch0 is None:
            self._batch0 = batch_idx
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None:
            self._loss_sum += float(loss.detach())
            self._loss_n += 1
        now = time.perf_counter()
        if now - self._t0 < self.every_s:
            return
        done = batch_idx + 1
        rate = (done - self._batch0) / (now - self._t0) * 60.0  # batches per minute
        total = trainer.num_training_batches
        line = f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs} step {done}"
        if isinstance(total, int) and total > 0:
            left = (total - done) / rate if rate > 0 else float("inf")
            line += f"/{total} ({100.0 * done / total:.0f} %), epoch ends in {left:.0f} min"
        if self._loss_n:
            line += f", training loss {self._loss_sum / self._loss_n:.5g} (mean since last line)"
        rank_zero_info(f"{line}, {rate:.0f} steps/min")
        self._reset(now, done)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_")}
        if metrics:
            shown = ", ".join(f"{k} {v:.5g}" for k, v in sorted(metrics.items()))
            rank_zero_info(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs} validated: {shown}")


#: Lightning's advertisement, logged at every ``Trainer`` start
_LIGHTNING_TIP = "litlogger"
#: torch's FutureWarning about ``LeafSpec``, triggered by Lightning's data loading
_LEAFSPEC_WARNING = r"`isinstance\(treespec, LeafSpec\)` is deprecated"


class _DropMessage(logging.Filter):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Within the block: no litlogger tip and no ``LeafSpec`` deprecation warning
    (only those two; the filters are removed afterwards). Used by the training loops
    when they show no progress."""
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    tip = _DropMessage(_LIGHTNING_TIP)
    logger.addFilter(tip)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_LEAFSPEC_WARNING)
            yield
    finally:
        logger.removeFilter(tip)
