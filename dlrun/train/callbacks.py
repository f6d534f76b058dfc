"""Lightning callbacks: per-epoch MLflow metrics and a checkpoint on interruption."""

from __future__ import annotations

import random
import signal
import threading
from pathlib import Path

import pytorch_lightning as pl


class EpochMetricsToMlflow(pl.Callback):
    """Logs the epoch's metrics to the run in one batch, step = epoch.

    One round trip per epoch, none per step; the history is kept for the summary.
    `lr` is the rate of the epoch's first optimizer step: read at the epoch's start,
    because Lightning steps epoch schedules before the epoch-end hooks run.
    """

    def __init__(self, record):
        self.record = record  # the run's RunRecord (a NullRecord on DDP ranks other than 0)
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


class AgreeToStop(pl.Callback):
    """Under DDP, a stop asked for on one rank (a sweep's pruner reports on rank 0 only) stops them all.

    Lightning does not share `trainer.should_stop` among ranks; a rank that stops alone leaves
    the others waiting. Runs after every other callback's epoch end, on every rank."""

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.world_size > 1:
            trainer.should_stop = bool(trainer.strategy.reduce_boolean_decision(trainer.should_stop, all=False))


class StopOnSignal(pl.Callback):
    """Ctrl-C or SIGTERM: finish the current batch, save last.ckpt there, stop.

    Stopping at a batch boundary keeps the checkpoint consistent (weights,
    optimizer, loop counters and data position all after the same step), which
    is what makes `dlrun resume` exact. A second signal stops at once.
    """

    def __init__(self, path: Path):
        self.path = path  # where the checkpoint of the step it stops at goes: the run's last.ckpt
        self.requested = False
        self.interrupted = False

    def request(self, *_signal_args) -> None:
        """The signal handler: ask for a stop at the next batch boundary."""
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def on_sanity_check_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._take_sigterm()

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._take_sigterm()

    def _take_sigterm(self) -> None:
        # Lightning installs its own SIGTERM handler when fit starts, which ends fit with
        # exit status 0 and no checkpoint (during the sanity check too); SIGTERM must stop
        # the way Ctrl-C does.
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.request)

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, outputs, batch, batch_idx) -> None:
        if batch_idx + 1 < trainer.num_training_batches:  # after the last batch, validation comes first
            self._stop_if_requested(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        # ModelCheckpoint has just written last.ckpt after this epoch's validation; keep that one.
        saved = getattr(trainer.checkpoint_callback, "_last_global_step_saved", None) == trainer.global_step
        self._stop_if_requested(trainer, save=not saved)

    def _stop_if_requested(self, trainer: pl.Trainer, save: bool = True) -> None:
        requested = self.requested
        if trainer.world_size > 1:  # every rank stops at the same step, or the others would wait forever
            requested = trainer.strategy.reduce_boolean_decision(requested, all=False)
        if requested and not self.interrupted:
            if save:
                trainer.save_checkpoint(self.path)
            self.interrupted = True
            raise KeyboardInterrupt  # Lightning's graceful shutdown path

    def on_exception(self, trainer: pl.Trainer, module: pl.LightningModule, exception: BaseException) -> None:
        from pytorch_lightning.trainer.states import TrainerFn

        # In test the module holds the best weights, not the last: last.ckpt from fit stays as it is.
        fitting = trainer.state.fn == TrainerFn.FITTING
        if isinstance(exception, KeyboardInterrupt) and not self.interrupted and fitting:
            self.interrupted = True  # a second signal mid-step: keep what there is
            trainer.save_checkpoint(self.path)


class RandomState(pl.Callback):
    """Saves and restores the global random generators with each checkpoint.

    Lightning's checkpoints hold no random state, so dropout after a resume would
    draw other numbers than the uninterrupted run did.
    """

    def state_dict(self) -> dict:
        import numpy as np
        import torch

        kind, keys, position, has_gauss, gauss = np.random.get_state()
        return {"torch": torch.get_rng_state(), "python": random.getstate(),
                "numpy": {"keys": torch.from_numpy(keys.astype("int64")), "position": int(position),
                          "has_gauss": int(has_gauss), "gauss": float(gauss)}}

    def load_state_dict(self, state: dict) -> None:
        import numpy as np
        import torch

        torch.set_rng_state(state["torch"])
        version, internal, gauss_next = state["python"]
        random.setstate((version, tuple(internal), gauss_next))
        saved = state["numpy"]
        np.random.set_state(("MT19937", saved["keys"].numpy().astype("uint32"), saved["position"],
                             saved["has_gauss"], saved["gauss"]))
