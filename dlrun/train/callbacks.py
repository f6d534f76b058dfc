"""Lightning callbacks: per-epoch MLflow metrics and a checkpoint on interruption."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl


class EpochMetricsToMlflow(pl.Callback):
    """Logs the epoch's metrics to the run in one batch, step = epoch.

    One round trip per epoch, none per step; the history is kept for the summary.
    `lr` is the rate of the epoch's first optimizer step: read at the epoch's start,
    because Lightning steps epoch schedules before the epoch-end hooks run.
    """

    def __init__(self, record=None):
        self.record = record  # a RunRecord, set before fit
        self.history: list[dict[str, float]] = []
        self._epoch_lr = float("nan")

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._epoch_lr = float(trainer.optimizers[0].param_groups[0]["lr"])

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("train/", "val/"))}
        metrics["lr"] = self._epoch_lr
        self.history.append(metrics)
        self.record.log_metrics(metrics, step=trainer.current_epoch)


class CheckpointOnInterrupt(pl.Callback):
    """On Ctrl-C or SIGTERM, saves the training state at that step as last.ckpt."""

    def __init__(self, path: Path | None = None):
        self.path = path  # set before fit
        self.interrupted = False

    def on_exception(self, trainer: pl.Trainer, module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):
            self.interrupted = True
            trainer.save_checkpoint(self.path)
