"""Lightning callbacks: per-epoch MLflow metrics, checkpoints written on an interval, a checkpoint on
interruption, the random state in every checkpoint."""

from __future__ import annotations

import copy
import random
import signal
import threading
import time
from pathlib import Path
from typing import Callable

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint

from dlrun.training.hooks import SkipsUnusedHooks

# How often best.ckpt, last.ckpt and the buffered metrics reach the disk and the store while training:
# the most training a SIGKILL can lose (a signal or the end of training writes them at once).
PERSIST_EVERY_S = 30.0


class EpochMetricsToMlflow(SkipsUnusedHooks, pl.Callback):
    """Keeps each epoch's metrics (step = epoch) and sends them to the run when `flush` is called.

    The checkpoint callback flushes whenever it writes (the first epoch, then every PERSIST_EVERY_S),
    so the stored metrics always reach the epoch of the checkpoint on disk; the end of training and an
    exception flush too. One `log_batch` per flush rather than one per epoch (about 8 ms each on SQLite).
    `lr` is the rate of the epoch's first optimizer step: read at the epoch's start,
    because Lightning steps epoch schedules before the epoch-end hooks run.
    """

    def __init__(self, record):
        self.record = record  # the run's RunRecord (a NullRecord on DDP ranks other than 0)
        self.history: list[dict[str, float]] = []
        self._epoch_lr = float("nan")

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._epoch_lr = float(trainer.optimizers[0].param_groups[0]["lr"])

    # A run resumed mid-epoch does not start that epoch again: its lr comes from the checkpoint.
    def state_dict(self) -> dict:
        return {"epoch_lr": self._epoch_lr}

    def load_state_dict(self, state_dict: dict) -> None:
        self._epoch_lr = float(state_dict.get("epoch_lr", float("nan")))

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("train/", "val/"))}
        metrics["lr"] = self._epoch_lr
        self.history.append(metrics)
        self.record.log_metrics(metrics, step=trainer.current_epoch, send=False)

    def flush(self) -> None:
        """Send every epoch kept so far, in one batch."""
        self.record.flush_metrics()

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.flush()

    def on_exception(self, trainer: pl.Trainer, module: pl.LightningModule, exception: BaseException) -> None:
        self.flush()


class IntervalCheckpoint(SkipsUnusedHooks, ModelCheckpoint):
    """best.ckpt (lowest val/loss) and last.ckpt, kept as ModelCheckpoint keeps them but written on an interval.

    A new best is held in memory (a copy of the checkpoint) rather than written at once; both files are
    written together after the first epoch, then at the first epoch end or batch end PERSIST_EVERY_S after
    the last write, and when training ends. Written together, last.ckpt's record of the best score always
    matches best.ckpt, so a resume from either moment is consistent. On a signal StopOnSignal writes
    last.ckpt at the step it stops at and this callback the best held in memory; a SIGKILL loses at most
    the training since the last write. `on_write` (the metrics' flush) runs after each write.
    """

    def __init__(self, dirpath: Path, on_write: Callable[[], None], every_s: float | None = None):
        self._state_key: str | None = None
        super().__init__(filename="best", monitor="val/loss", mode="min", save_top_k=1, save_last=True,
                         enable_version_counter=False)
        # Given to the constructor, the folder would be made absolute; a checkpoint stores it, and a resume
        # restores the best-model tracking only where it matches: kept as given (OUTPUT_DIR/RUN_ID/checkpoints),
        # a run resumes the same from another folder and from checkpoints written before.
        self.dirpath = str(dirpath)
        self.on_write = on_write
        self.every_s = PERSIST_EVERY_S if every_s is None else every_s
        self.last_written_step: int | None = None  # the global step of the last.ckpt on disk
        # Whether the first epoch is written at once, so that a run in progress soon has a checkpoint to
        # resume from; a sweep's trial needs none (a trial whose process dies is run again from the start).
        self.write_first_epoch = True
        self._best: tuple[str, dict] | None = None  # (path, checkpoint) of a best not yet written
        self._written_at: float | None = None  # monotonic time of the last write; None: nothing written yet
        self._started_at = time.monotonic()  # where the interval counts from before the first write

    @property
    def state_key(self) -> str:
        # ModelCheckpoint's key: a checkpoint written before this class existed resumes with its best-model
        # tracking, and one written now resumes under a plain ModelCheckpoint too. Built once: Lightning
        # reads it at every hook of every batch.
        if self._state_key is None:
            self._state_key = super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)
        return self._state_key

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        # ModelCheckpoint calls this for a new best and for last: the best is copied, last waits for the
        # write, which takes the trainer's state at that moment.
        if Path(filepath).name != f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}":
            state = trainer._checkpoint_connector.dump_checkpoint(self.save_weights_only)
            self._best = (filepath, _cloned(state))  # the live weights and optimizer state move on
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        # Mid-epoch writes only in one process: under DDP the decision would cost a collective per batch.
        if trainer.world_size == 1 and batch_idx + 1 < trainer.num_training_batches and self._due():
            self._write(trainer)

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._started_at = time.monotonic()

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, module)
        if trainer.sanity_checking:
            return
        ending = trainer.should_stop or (trainer.max_epochs not in (None, -1)
                                         and trainer.current_epoch + 1 >= trainer.max_epochs)
        due = ending or (self._written_at is None and self.write_first_epoch) or self._due()
        if trainer.world_size > 1:  # every rank writes (and waits) at the same epoch, or none does
            due = trainer.strategy.broadcast(due)
        if due:
            self._write(trainer)

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if self.last_written_step != trainer.global_step or self._best is not None:
            self._write(trainer)

    def on_exception(self, trainer: pl.Trainer, module: pl.LightningModule, exception: BaseException) -> None:
        # On a stop (a signal, data that cannot be read) StopOnSignal writes last.ckpt at the step it stopped
        # at, which names the best held in memory: that best goes now. After any other error (a non-finite
        # loss) the files of the last write stay, a consistent pair.
        stoppers = [c for c in trainer.callbacks if isinstance(c, StopOnSignal)]
        if isinstance(exception, KeyboardInterrupt) or any(s.is_stop(trainer, exception) for s in stoppers):
            self._write_best(trainer)

    def _due(self) -> bool:
        since = self._started_at if self._written_at is None else self._written_at
        return time.monotonic() - since >= self.every_s

    def _write(self, trainer: pl.Trainer) -> None:
        self._write_best(trainer)
        self.last_model_path = str(Path(self.dirpath) / f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}")
        trainer.save_checkpoint(self.last_model_path)
        self.last_written_step = trainer.global_step
        self._written_at = time.monotonic()
        self.on_write()

    def _write_best(self, trainer: pl.Trainer) -> None:
        if self._best is not None:
            path, state = self._best
            trainer.strategy.save_checkpoint(state, path)
            trainer.strategy.barrier("IntervalCheckpoint.write_best")
            self._best = None


_SCALARS = (int, float, bool, str, bytes, type(None))


def _cloned(state):
    """A copy of a checkpoint's dict whose tensors are copies: the live ones keep training. Other values
    are numbers, strings and tuples of them, which nothing changes in place (copy.deepcopy takes ten times
    as long on a small model's checkpoint); they are shared, not copied (Python's random state alone is a
    tuple of 625 numbers)."""
    import torch

    if type(state) in _SCALARS:
        return state
    if isinstance(state, torch.Tensor):  # in host memory: a copy on a GPU would take the model's room
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return type(state)((key, _cloned(value)) for key, value in state.items())
    if type(state) is tuple and all(type(value) in _SCALARS for value in state):
        return state
    if isinstance(state, (list, tuple)) and not hasattr(state, "_fields"):
        return type(state)(_cloned(value) for value in state)
    return copy.copy(state)


class EndSanityCheckPass(SkipsUnusedHooks, pl.Callback):
    """Ends the validation pass that Lightning's sanity check leaves after its first batches: the workers
    reading a streamed split (dlrun.data.streaming) would otherwise live through the first training epoch,
    beside the training pass's own."""

    def on_sanity_check_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        loaders = trainer.val_dataloaders
        for loader in loaders if isinstance(loaders, (list, tuple)) else [loaders]:
            end_pass = getattr(loader, "end_pass", None)
            if end_pass is not None:
                end_pass()


class AgreeToStop(SkipsUnusedHooks, pl.Callback):
    """Under DDP, a stop asked for on one rank (a sweep's pruner reports on rank 0 only) stops them all.

    Lightning does not share `trainer.should_stop` among ranks; a rank that stops alone leaves
    the others waiting. Runs after every other callback's epoch end, on every rank."""

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.world_size > 1:
            trainer.should_stop = bool(trainer.strategy.reduce_boolean_decision(trainer.should_stop, all=False))


class StopOnSignal(SkipsUnusedHooks, pl.Callback):
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
        # A last.ckpt written at this very step (by IntervalCheckpoint) is kept as it is.
        saved = getattr(trainer.checkpoint_callback, "last_written_step", None) == trainer.global_step
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
        if self.is_stop(trainer, exception) and not self.interrupted:
            self.interrupted = True
            trainer.save_checkpoint(self.path)

    def is_stop(self, trainer: pl.Trainer, exception: BaseException) -> bool:
        """Whether `exception` ends fit as a stop that writes last.ckpt where fit stopped (on_exception)."""
        from pytorch_lightning.trainer.states import TrainerFn

        from dlrun.data.streaming import worker_death
        from dlrun.errors import DataError

        # In test the module holds the best weights, not the last: last.ckpt from fit stays as it is.
        if trainer.state.fn != TrainerFn.FITTING:
            return False
        # A second signal mid-step: keep what there is. A file that could not be read stops fit while the
        # next batch is fetched, between two steps: the checkpoint there resumes exactly. So does whatever
        # breaks once a stop is asked for (a SIGTERM to the process group ends data workers too), and a
        # reading process that died (torch raises it wherever this process is: mostly inside a step, before
        # the optimizer changes anything).
        return (isinstance(exception, (KeyboardInterrupt, DataError)) or self.requested
                or worker_death(exception, None) is not None)


class RandomState(SkipsUnusedHooks, pl.Callback):
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
