"""One `dlrun train`: data, model, MLflow run, fit, test, record, summary.

Reads top to bottom in the order things happen. Everything that can fail on bad
input (data, model shapes, loss fit) happens before the MLflow run is created.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from dlrun.config.validate import RunConfig
from dlrun.errors import ConfigError, DlrunError, TrainingFailed
from dlrun.train.signals import Received, signals_deferred, signals_raise, stop_on_signals


class Interrupted(DlrunError):
    """Ctrl-C or SIGTERM stopped training; the run is KILLED with a checkpoint."""

    exit_code = 130


@dataclass(frozen=True)
class Resume:
    """Where a resumed training continues: a checkpoint (None: from step 0, for a run stopped before its
    first checkpoint), and the MLflow run to continue (None: a new run)."""

    checkpoint: Path | None
    run_id: str | None


@dataclass
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
          rank_run_id: str | None = None) -> TrainResult:
    """Train and test the configured model, recording everything in one MLflow run.

    Args:
        run: the validated config.
        extra_tags: more tags for the run (e.g. dlrun.reproduced_from).
        resume: continue from a checkpoint: in the same MLflow run (resume.run_id),
            or in a new one when resume.run_id is None.
        callbacks: more Lightning callbacks (a sweep's trial reporter).
        on_start: called with the run id as soon as the MLflow run exists.
        rank_run_id: on a DDP rank other than 0 started by Lightning, rank 0's run id.
    """
    import pytorch_lightning as pl

    from dlrun.train.distributed import global_rank

    rank = global_rank()
    record = trainer = None
    signals, creating = Received(), Received()
    try:
        with signals_raise(signals):  # outside fit, SIGTERM stops as Ctrl-C does
            prepared, trainer, epoch_logger, interrupt_saver = _prepare(pl, run, rank, callbacks)
            try:
                with signals_deferred(creating):  # a signal waits until the run is whole: none half-written
                    record, _ = _open_record(run, prepared.data, rank, resume, extra_tags, rank_run_id)
            finally:
                if creating.count:  # even when creating failed: the user asked to stop (a sweep must too)
                    raise KeyboardInterrupt
            return _train_recorded(pl, run, prepared, trainer, epoch_logger, interrupt_saver, record, resume,
                                   on_start, rank)
    except (KeyboardInterrupt, SystemExit) as stop:  # before fit (no checkpoint), or after it (test, model)
        if isinstance(stop, SystemExit) and not signals.count:  # Lightning turns Ctrl-C in test into exit 1
            _fail_if_open(record)
            raise
        if record is None:
            raise Interrupted("interrupted before training started; no run was recorded.") from None
        if record.ended:
            raise
        raise _killed(record, _checkpoint_dir(run, record.run_id), "before training started"
                      if trainer.global_step == 0 else f"after training, at step {trainer.global_step}") from None
    except BaseException:  # an error dlrun did not foresee: the run is FAILED, not left RUNNING
        _fail_if_open(record)
        raise


def _fail_if_open(record) -> None:
    if record is None or record.ended:
        return
    try:
        with signals_deferred(Received()):
            record.end("FAILED")
    except Exception as error:  # the error being raised matters more; say why the run stays open
        import sys

        print(f"dlrun: run {record.run_id} could not be marked FAILED ({type(error).__name__}: {error}).",
              file=sys.stderr)


def _prepare(pl, run: RunConfig, rank: int, callbacks: list | None):
    """Data, model and Trainer, all checked before any MLflow run exists."""
    from dlrun.train.setup import prepare

    prepared = prepare(run)
    if rank:  # the model is built, identical on every rank; dropout and augmentation differ per rank
        pl.seed_everything(run.seed + rank, verbose=False)
    trainer, epoch_logger, interrupt_saver = _trainer(pl, run, prepared.data.task, callbacks or [])
    return prepared, trainer, epoch_logger, interrupt_saver


def _checkpoint_dir(run: RunConfig, run_id: str) -> Path:
    return Path(run.config["output_dir"]) / run_id / "checkpoints"


def _train_recorded(pl, run: RunConfig, prepared, trainer, epoch_logger, interrupt_saver, record,
                    resume: Resume | None, on_start, rank: int) -> TrainResult:
    """Everything once the MLflow run exists: fit, test, plots, checkpoints, model, the run closed."""
    from dlrun.train.setup import make_loaders

    data, module, run_id = prepared.data, prepared.module, record.run_id
    checkpoint_dir = _checkpoint_dir(run, run_id)
    if on_start is not None and not rank:
        on_start(run_id)
    epoch_logger.record = record
    record.local_dir = checkpoint_dir.parent.resolve()
    trainer.checkpoint_callback.dirpath = str(checkpoint_dir)
    interrupt_saver.path = checkpoint_dir / "last.ckpt"
    loaders = make_loaders(run, prepared)
    loaders["train"].position = lambda: _training_position(trainer)
    loaders["train"].current_epoch = lambda: trainer.current_epoch
    loaders["train"].shard = lambda: (trainer.global_rank, trainer.world_size)
    with _ranks(trainer, run, run_id, resume, checkpoint_dir.parent, rank):
        fit_seconds = _fit(trainer, module, loaders, resume, record, interrupt_saver)
        best = trainer.checkpoint_callback.best_model_path or None
        (test_metrics,) = trainer.test(module, loaders["test"], ckpt_path=best, verbose=False, weights_only=True)
    test_metrics = {k: float(v) for k, v in test_metrics.items()}
    world_size = trainer.world_size
    if rank:
        return TrainResult(run_id, "", "", test_metrics, trainer.current_epoch, checkpoint_dir, None,
                           data.fingerprint, run.choices, epoch_logger.history, fit_seconds, rank, world_size,
                           run.data["batch_size"])
    record.log_metrics(test_metrics, step=trainer.current_epoch)
    from dlrun.tracking.plots import log_plots  # plots/*.png; a failed plot warns, never fails the run

    log_plots(record, epoch_logger.history, data, module.net, run.choices, test_metrics, run.data["batch_size"])
    record.log_checkpoints(checkpoint_dir)
    model_uri = None
    if run.tracking["log_model"]:
        model_uri = record.log_model(_serving_model(data, module.net), data.raw_example, _requirements())
    if record.refused:
        record.end("FAILED")
        raise _not_stored(record, checkpoint_dir, model_uri)
    record.end("FINISHED")
    return TrainResult(run_id, record.run_name, record.uri, test_metrics, trainer.current_epoch,
                       checkpoint_dir, model_uri, data.fingerprint, run.choices, epoch_logger.history, fit_seconds,
                       rank, world_size, run.data["batch_size"], record.note())


def _killed(record, checkpoint_dir: Path, when: str) -> Interrupted:
    """A signal outside fit: the run is closed as KILLED (ignoring further signals, which would leave it
    RUNNING), its checkpoints uploaded; the error that says where the checkpoint is and how to continue."""
    with signals_deferred(Received()):
        try:
            record.log_checkpoints(checkpoint_dir)
        finally:
            record.end("KILLED")
    last = checkpoint_dir / "last.ckpt"
    if last.is_file():
        return Interrupted(f"interrupted {when}; run {record.run_id} is marked KILLED, its checkpoint is {last}. "
                           f"Continue it: dlrun resume {record.run_id}")
    return Interrupted(f"interrupted {when}; run {record.run_id} is marked KILLED, with no checkpoint yet. "
                       f"Continue it from step 0: dlrun resume {record.run_id}")


def _not_stored(record, checkpoint_dir: Path, model_uri: str | None) -> TrainingFailed:
    """Training worked but the artifact store refused its files (disk full, no permission): the run is
    FAILED, since a FINISHED run must hold its checkpoints and model; the weights stay on this disk."""
    kept = [f"checkpoints in {checkpoint_dir.resolve()}"]
    if model_uri and Path(model_uri).is_dir():
        kept.append(f"the model in {model_uri}")
    return TrainingFailed(
        f"training finished, but the run's artifacts could not be stored: {record.refusal} "
        f"(not stored: {', '.join(record.refused)}). Run {record.run_id} is marked FAILED. The trained weights "
        f"are on this disk: {'; '.join(kept)}. Once {record.artifact_location()} takes writes again (free space, "
        f"allow writing, or let the process that locks the store finish), `dlrun resume {record.run_id}` stores "
        "them and marks the run FINISHED.")


def _open_record(run: RunConfig, data, rank: int, resume: Resume | None, extra_tags: dict | None,
                 rank_run_id: str | None):
    """The MLflow run (new, or reopened to resume), created only now that the input is known good;
    on a DDP rank other than 0, a record that writes nothing."""
    from dlrun.tracking.record import RunRecord, tracking_uri
    from dlrun.train.distributed import NullRecord

    if rank:
        record = NullRecord(rank_run_id or f"rank-{rank}")
        return record, record.run_id
    record = RunRecord(tracking_uri(run.tracking["uri"]), run.tracking["experiment"])
    if resume is not None and resume.run_id:
        return record, record.reopen(resume.run_id)
    run_id = record.start(_run_name(run), _params(run), {**_tags(run, data), **(extra_tags or {})},
                          _config_yaml(run), run.overrides)
    record.log_text(_data_info(data), "data.json")
    if record.refused:  # without its config.yaml, the run could be neither resumed nor reproduced
        record.end("FAILED")
        raise TrainingFailed(f"the run's files could not be stored: {record.refusal} (not stored: "
                             f"{', '.join(record.refused)}). Run {run_id} is marked FAILED before training. "
                             f"Free space in (or allow writing to) {record.artifact_location()} and train again.")
    return record, run_id


def _fit(trainer, module, loaders, resume: Resume | None, record, interrupt_saver) -> float:
    """trainer.fit, its outcome recorded: FAILED (a non-finite loss, a crash) or KILLED (a signal,
    with the checkpoint of that step). Returns the seconds fit took."""
    import time

    run_id, checkpoint_dir = record.run_id, interrupt_saver.path.parent
    started = time.perf_counter()
    try:
        with stop_on_signals(interrupt_saver):
            trainer.fit(module, loaders["train"], loaders["val"], weights_only=True,
                        ckpt_path=str(resume.checkpoint) if resume and resume.checkpoint else None)
    except TrainingFailed as failure:
        try:
            record.log_checkpoints(checkpoint_dir)
        finally:
            record.end("FAILED")
        last = interrupt_saver.path
        saved = (f"the last good checkpoint is {last}" if last.is_file()
                 else "no checkpoint was saved before it")
        raise TrainingFailed(f"{failure} The run {run_id} is marked FAILED; {saved}.") from None
    except SystemExit:
        # Lightning turns Ctrl-C into sys.exit(1) after its on_exception hooks ran, and its own SIGTERM
        # handler (under DDP, before StopOnSignal takes SIGTERM over) into a SystemExit: both stop the run.
        raise _killed(record, checkpoint_dir, f"at step {trainer.global_step}") from None
    except BaseException:
        record.end("FAILED")
        raise
    return time.perf_counter() - started


def _ranks(trainer, run: RunConfig, run_id: str, resume: Resume | None, folder: Path, rank: int):
    """While fit and test run: the launch file for the ranks Lightning starts, where it starts them."""
    import contextlib

    from dlrun.train.distributed import lightning_launches_ranks, uses_lightning_launcher

    if rank or not uses_lightning_launcher(trainer):
        return contextlib.nullcontext()
    return lightning_launches_ranks(run, run_id, resume.checkpoint if resume else None, folder)


def _trainer(pl, run: RunConfig, task: str, extra_callbacks: list | None = None):
    """The Lightning Trainer, built before the MLflow run so that a bad trainer option
    (an accelerator this machine lacks, an unknown precision) leaves no run behind.
    Its checkpoint folder is set once the run id is known."""
    from lightning_fabric.utilities.exceptions import MisconfigurationException
    from pytorch_lightning.callbacks import ModelCheckpoint

    from dlrun.train.callbacks import AgreeToStop, EpochMetricsToMlflow, RandomState, StopOnSignal

    epoch_logger = EpochMetricsToMlflow()
    interrupt_saver = StopOnSignal()
    checkpoints = ModelCheckpoint(
        filename="best", monitor="val/loss", mode="min", save_top_k=1, save_last=True, enable_version_counter=False,
    )
    callbacks = [epoch_logger, checkpoints, interrupt_saver, RandomState(), *(extra_callbacks or []), AgreeToStop()]
    early_stopping = _early_stopping(run.trainer.get("early_stopping"), task)
    if early_stopping is not None:
        callbacks.append(early_stopping)
    options = {"enable_model_summary": False, **{k: v for k, v in run.trainer.items() if k != "early_stopping"}}
    if options.get("enable_progress_bar") is None:
        import sys

        options["enable_progress_bar"] = sys.stdout.isatty()
    if options.get("strategy") == "ddp":
        from datetime import timedelta

        from pytorch_lightning.strategies import DDPStrategy

        from dlrun.train.distributed import ddp_timeout_seconds

        options["strategy"] = DDPStrategy(timeout=timedelta(seconds=ddp_timeout_seconds()))
    try:
        trainer = pl.Trainer(**options, logger=False, callbacks=callbacks,
                             default_root_dir=run.config["output_dir"])
    except (MisconfigurationException, ValueError, TypeError, RuntimeError) as error:
        raise ConfigError(f"the trainer config does not work here: {error} "
                          "Pick another trainer option (dlrun configs trainer) or fix the trainer.* override.") from None
    return trainer, epoch_logger, interrupt_saver


def _early_stopping(options: dict | None, task: str):
    """Lightning's EarlyStopping for trainer.early_stopping, or None while its patience is unset."""
    if not options or options.get("patience") is None:
        return None
    from pytorch_lightning.callbacks import EarlyStopping

    from dlrun.train.metrics import direction, epoch_metrics

    monitor = options.get("monitor", "val/loss")
    metrics = epoch_metrics(task)
    if monitor not in metrics:
        raise ConfigError(f"trainer.early_stopping.monitor={monitor} is not logged for a {task} task. "
                          f"Monitor one of: {', '.join(metrics)}.")
    mode = options.get("mode") or direction(monitor)[:3]
    return EarlyStopping(monitor=monitor, mode=mode, patience=options["patience"],
                         min_delta=options.get("min_delta", 0.0))


def _serving_model(data, net):
    import copy

    from dlrun.models.modules import ServingModel

    return ServingModel(copy.deepcopy(data.preprocess), copy.deepcopy(net), copy.deepcopy(data.postprocess)).eval()


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"torch=={version('torch').split('+')[0]}", f"mlflow=={version('mlflow')}", "numpy"]


def _run_name(run: RunConfig) -> str:
    """model-data-xxxxxx: readable in MLflow's UI, unique without a global RNG (which is seeded)."""
    import secrets

    return f"{run.choices.get('model', 'model')}-{run.choices.get('data', 'data')}-{secrets.token_hex(3)}"


def _params(run: RunConfig) -> dict[str, str]:
    from dlrun.tracking.params import run_params

    return run_params(run.config, run.choices)


def _tags(run: RunConfig, data) -> dict[str, str]:
    from dlrun.tracking.env import environment_tags

    tags = environment_tags()
    tags["dlrun.data_fingerprint"] = data.fingerprint
    tags["dlrun.task"] = data.task
    return tags


def _data_info(data) -> str:
    """What predict and eval need to know of the data without loading it again."""
    import json

    return json.dumps({"task": data.task, "class_names": data.class_names, "num_classes": data.num_classes,
                       "sample_shape": list(data.sample_shape), "fingerprint": data.fingerprint}, indent=2)


def _config_yaml(run: RunConfig) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.create(run.config))


def _training_position(trainer) -> tuple[int, int]:
    """(epoch, batches of it trained so far): where a checkpoint taken now resumes."""
    return trainer.current_epoch, trainer.fit_loop.epoch_loop.batch_progress.current.ready
