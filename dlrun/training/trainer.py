"""The Lightning Trainer of a run: its options from the config, its callbacks, what it tells the loader.

`check_trainer` builds one and discards it before the MLflow run exists, so that a bad
trainer option (an accelerator this machine lacks, an unknown precision) leaves no run
behind; `build_trainer` builds the one that trains, complete, once the run's folder is known.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import pytorch_lightning as pl
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning.callbacks import EarlyStopping
from pytorch_lightning.profilers import PassThroughProfiler

from dlrun.config.validate import RunConfig
from dlrun.errors import ConfigError, PluginError
from dlrun.training.callbacks import (AgreeToStop, EndSanityCheckPass, EpochMetricsToMlflow, IntervalCheckpoint,
                                      RandomState, StopOnSignal)
from dlrun.training.metrics import direction, epoch_metrics
from dlrun.training.ranks import ddp_strategy


def check_trainer(run: RunConfig, task: str) -> None:
    """Raise ConfigError now for trainer options that would fail once the run exists. Options that passed once
    in this process pass again without a Trainer built (a sweep's trials mostly share them)."""
    early_stopping(run.trainer.get("early_stopping"), task)
    key = json.dumps([run.trainer, run.callbacks, run.config["output_dir"]], sort_keys=True, default=str)
    if key not in _CHECKED:
        _lightning_trainer(run, callbacks=configured_callbacks(run))
        _CHECKED.add(key)


_CHECKED: set[str] = set()  # the trainer options check_trainer built a Trainer from without an error


def build_trainer(run: RunConfig, task: str, checkpoint_dir: Path, metrics: EpochMetricsToMlflow,
                  stopper: StopOnSignal, extra_callbacks: list | None = None, streamed: bool = False) -> pl.Trainer:
    """The Trainer that fits and tests the run.

    Args:
        run: the validated config.
        task: the data's task, for early stopping's metric.
        checkpoint_dir: where best.ckpt and last.ckpt go.
        metrics: the callback that logs each epoch's metrics to the run.
        stopper: the callback that stops at a batch boundary on a signal, with a checkpoint.
        extra_callbacks: more callbacks (a sweep's trial reporter), after dlrun's own.
        streamed: whether the data is read from disk by worker processes (their passes need ending).
    """
    checkpoints = IntervalCheckpoint(checkpoint_dir, on_write=metrics.flush)  # best.ckpt, last.ckpt
    # AgreeToStop last: it shares, under DDP, the stop that an earlier callback (a pruner) asked for.
    # Only where it has work: Lightning calls every callback at every hook of every batch.
    readers = [EndSanityCheckPass()] if streamed else []
    callbacks = [metrics, checkpoints, stopper, RandomState(), *readers, *configured_callbacks(run),
                 *(extra_callbacks or []), AgreeToStop()]
    stopping = early_stopping(run.trainer.get("early_stopping"), task)
    if stopping is not None:
        callbacks.append(stopping)
    return _lightning_trainer(run, callbacks)


def configured_callbacks(run: RunConfig) -> list[pl.Callback]:
    """The callbacks that `callbacks: [...]` names, built from the callback registry."""
    from dlrun.components.callbacks import CALLBACKS

    built = []
    for name, options in run.callbacks:
        entry = CALLBACKS.get(name)
        callback = entry.builder(**options)
        if not isinstance(callback, pl.Callback):
            origin = f"the plugin '{entry.plugin.name}'" if entry.plugin else "dlrun"
            raise PluginError(f"the callback '{name}' (from {origin}) made a {type(callback).__name__}, not a "
                              "pytorch_lightning.Callback. Its builder must return a Callback.")
        built.append(callback)
    return built


def early_stopping(options: dict | None, task: str) -> EarlyStopping | None:
    """Lightning's EarlyStopping for trainer.early_stopping, or None while its patience is unset."""
    if not options or options.get("patience") is None:
        return None
    monitor = options.get("monitor", "val/loss")
    metrics = epoch_metrics(task)
    if monitor not in metrics:
        raise ConfigError(f"trainer.early_stopping.monitor={monitor} is not logged for a {task} task. "
                          f"Monitor one of: {', '.join(metrics)}.")
    mode = options.get("mode") or direction(monitor)[:3]  # "max" or "min"
    return EarlyStopping(monitor=monitor, mode=mode, patience=options["patience"],
                         min_delta=options.get("min_delta", 0.0))


class TrainerProgress:
    """What the training loader asks the trainer (dlrun.data.loader.Progress)."""

    def __init__(self, trainer: pl.Trainer):
        self._trainer = trainer

    def position(self) -> tuple[int, int]:
        return self._trainer.current_epoch, self._trainer.fit_loop.epoch_loop.batch_progress.current.ready

    def epoch(self) -> int:
        return self._trainer.current_epoch

    def shard(self) -> tuple[int, int]:
        return self._trainer.global_rank, self._trainer.world_size


class NoProfiler(PassThroughProfiler):
    """Lightning's default profiler enters a generator-made context around every hook it calls, dozens a
    batch; this one hands out one shared no-op context. (`trainer.profiler` is not a config key.)"""

    _nothing = contextlib.nullcontext()

    def profile(self, action_name: str):
        return self._nothing


def _lightning_trainer(run: RunConfig, callbacks: list) -> pl.Trainer:
    options = {"enable_model_summary": False, **{k: v for k, v in run.trainer.items() if k != "early_stopping"}}
    if options.get("enable_progress_bar") is None:  # a bar only where someone watches
        options["enable_progress_bar"] = sys.stdout.isatty()
    if options.get("strategy") == "ddp":
        options["strategy"] = ddp_strategy()
    try:
        return pl.Trainer(**options, logger=False, callbacks=callbacks, profiler=NoProfiler(),
                          default_root_dir=run.config["output_dir"])
    except (MisconfigurationException, ValueError, TypeError, RuntimeError) as error:
        raise ConfigError(f"the trainer config does not work here: {error} "
                          "Pick another trainer option (dlrun configs trainer) or fix the trainer.* override.") from None
