"""One `dlrun train`: data, model, MLflow run, fit, test, record, summary.

`train()` reads top to bottom in the order things happen. Everything that can fail on bad
input (data, model shapes, loss fit, trainer options) happens before the MLflow run is
created; how the run ends in every other case is `dlrun.training.outcome`'s.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytorch_lightning as pl

from dlrun.config.validate import RunConfig
from dlrun.data.streaming import LazySplit
from dlrun.training import setup
from dlrun.training.callbacks import EpochMetricsToMlflow, StopOnSignal
from dlrun.training.module import tested_metrics
from dlrun.training.outcome import run_outcome
from dlrun.training.ranks import global_rank, ranks_launched_for
from dlrun.training.recording import new_record, record_results, start_record
from dlrun.training.trainer import TrainerProgress, build_trainer, check_trainer


@dataclass(frozen=True)
class Resume:
    """Where a resumed training continues: a checkpoint (None: from step 0, for a run stopped before its
    first checkpoint), and the MLflow run to continue (None: a new run)."""

    checkpoint: Path | None
    run_id: str | None


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    run_name: str
    tracking_uri: str
    test_metrics: dict[str, float]
    epochs: int
    checkpoint_dir: Path
    model_uri: str | None
    data_fingerprint: str
    choices: dict[str, str]  # group -> option, for the summary
    history: list[dict[str, float]] = field(default_factory=list)
    fit_seconds: float = 0.0  # time in trainer.fit: training and validation, no setup, test or logging
    rank: int = 0  # the global rank of this process; only rank 0 records and reports
    world_size: int = 1  # processes training together (DDP); data.batch_size is per process
    batch_size: int = 0  # data.batch_size: per process
    record_note: str | None = None  # what did not reach a tracking server that went away, and where it is

    @property
    def final_metrics(self) -> dict[str, float]:
        """Each metric's last value, as MLflow shows it for the run."""
        return {**(self.history[-1] if self.history else {}), **self.test_metrics}


def train(run: RunConfig, extra_tags: dict[str, str] | None = None, resume: Resume | None = None,
          callbacks: list | None = None, on_start: Callable[[str], None] | None = None,
          rank_run_id: str | None = None, log_model: Callable[[], bool] | None = None,
          plots: bool = True) -> TrainResult:
    """Train and test the configured model, recording everything in one MLflow run.

    Args:
        run: the validated config.
        extra_tags: more tags for the run (e.g. dlrun.reproduced_from).
        resume: continue from a checkpoint: in the same MLflow run (resume.run_id),
            or in a new one when resume.run_id is None.
        callbacks: more Lightning callbacks (a sweep's trial reporter).
        on_start: called with the run id as soon as the MLflow run exists.
        rank_run_id: on a DDP rank other than 0 started by Lightning, rank 0's run id.
        log_model: asked once training is done whether to log the served model (a sweep's trial:
            only the best so far); None logs it as tracking.log_model says.
        plots: draw and log the plots (a sweep's trials skip them unless asked).
    """
    rank = global_rank()
    with run_outcome(Path(run.config["output_dir"])) as outcome:
        prepared = setup.prepare(run)
        task = prepared.data.task
        check_trainer(run, task)
        if rank:  # the model is built, identical on every rank; dropout and augmentation differ per rank
            pl.seed_everything(run.seed + rank, verbose=False)

        record = outcome.open(new_record(run, rank, rank_run_id), lambda record: start_record(
            record, run, prepared.data, resume and resume.run_id, extra_tags))
        if on_start is not None and not rank:
            on_start(record.run_id)
        checkpoint_dir = outcome.checkpoint_dir
        metrics, stopper = EpochMetricsToMlflow(record), StopOnSignal(checkpoint_dir / "last.ckpt")
        trainer = build_trainer(run, task, checkpoint_dir, metrics, stopper, callbacks,
                                streamed=isinstance(prepared.data.x_train, LazySplit))
        loaders = setup.make_loaders(run, prepared, TrainerProgress(trainer))

        with ranks_launched_for(trainer, run, record.run_id, resume and resume.checkpoint, checkpoint_dir.parent):
            started = time.perf_counter()
            with outcome.fitting(trainer, stopper):
                trainer.fit(prepared.module, loaders["train"], loaders["val"], weights_only=True,
                            ckpt_path=str(resume.checkpoint) if resume and resume.checkpoint else None)
            fit_seconds = time.perf_counter() - started
            best = trainer.checkpoint_callback.best_model_path or None
            trainer.test(prepared.module, loaders["test"], ckpt_path=best, verbose=False, weights_only=True)
        test_metrics = tested_metrics(trainer)

        model_uri = None
        if not rank:  # only rank 0 records
            model_uri = record_results(record, run, prepared, metrics.history, test_metrics, trainer.current_epoch,
                                       checkpoint_dir, log_model=log_model is None or log_model(), plots=plots,
                                       test_loader=loaders["test"])
            outcome.finish(model_uri)
        return TrainResult(
            run_id=record.run_id, run_name=record.run_name, tracking_uri=record.uri, test_metrics=test_metrics,
            epochs=trainer.current_epoch, checkpoint_dir=checkpoint_dir, model_uri=model_uri,
            data_fingerprint=prepared.data.fingerprint, choices=run.choices, history=metrics.history,
            fit_seconds=fit_seconds, rank=rank, world_size=trainer.world_size, batch_size=run.data["batch_size"],
            record_note=record.note())
