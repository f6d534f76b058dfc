"""One `dlrun train`: data, model, MLflow run, fit, test, record, summary.

Reads top to bottom in the order things happen. Everything that can fail on bad
input (data, model shapes, loss fit) happens before the MLflow run is created.
"""

from __future__ import annotations

import logging
import signal
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from dlrun.config.validate import RunConfig
from dlrun.errors import ConfigError, DlrunError, TrainingFailed


class Interrupted(DlrunError):
    """Ctrl-C or SIGTERM stopped training; the run is KILLED with a checkpoint."""

    exit_code = 130


@dataclass
class TrainResult:
    run_id: str
    run_name: str
    tracking_uri: str
    test_metrics: dict[str, float]
    epochs: int
    checkpoint_dir: Path
    model_uri: str | None
    history: list[dict[str, float]] = field(default_factory=list)


def train(run: RunConfig) -> TrainResult:
    """Train and test the configured model, recording everything in one MLflow run."""
    import pytorch_lightning as pl

    _quiet_lightning()

    from dlrun.components.losses import LOSSES, check_fits
    from dlrun.data.loader import BatchLoader
    from dlrun.data.prepare import load_data
    from dlrun.models.build import build_model
    from dlrun.tracking.record import RunRecord, tracking_uri
    from dlrun.train.module import DlrunModule

    pl.seed_everything(run.seed, verbose=False)
    data = load_data(run.data, run.seed)
    loss_name, _ = run.loss
    check_fits(loss_name, data.task)
    net = build_model(run.config["model"]["layers"], data.sample_shape, data.out_features,
                      run.activation, run.regularization["dropout"])
    module = DlrunModule(
        net, LOSSES.get(loss_name).builder(data.num_classes), _optimizer_factory(run), data.task,
        data.num_classes, l1=run.regularization["l1"], l2=run.regularization["l2"],
        target_scale=getattr(data.postprocess, "scale", None),
        make_scheduler=_scheduler_factory(run, data),
    )

    trainer, epoch_logger, interrupt_saver = _trainer(pl, run)
    record = RunRecord(tracking_uri(run.tracking["uri"]), run.tracking["experiment"])
    run_id = record.start(_run_name(run), _params(run), _tags(run, data), _config_yaml(run), run.overrides)
    checkpoint_dir = Path(run.config["output_dir"]) / run_id / "checkpoints"
    epoch_logger.record = record
    trainer.checkpoint_callback.dirpath = str(checkpoint_dir)
    interrupt_saver.path = checkpoint_dir / "last.ckpt"
    batch_size = run.data["batch_size"]
    loaders = {
        "train": BatchLoader(data.x_train, data.y_train, batch_size, shuffle=True, seed=run.seed,
                             augment=_augmentation(run)),
        "val": BatchLoader(data.x_val, data.y_val, batch_size, shuffle=False),
        "test": BatchLoader(data.x_test, data.y_test, batch_size, shuffle=False),
    }
    try:
        with _sigterm_as_interrupt():
            trainer.fit(module, loaders["train"], loaders["val"])
    except TrainingFailed as failure:
        record.log_checkpoints(checkpoint_dir)
        record.end("FAILED")
        raise TrainingFailed(f"{failure} The run {run_id} is marked FAILED; checkpoints so far: {checkpoint_dir}") from None
    except SystemExit:
        # Lightning turns Ctrl-C into sys.exit(1) after its on_exception hooks ran.
        if not interrupt_saver.interrupted:
            raise
        record.log_checkpoints(checkpoint_dir)
        record.end("KILLED")
        raise Interrupted(f"interrupted at step {trainer.global_step}; run {run_id} is marked KILLED, "
                          f"its checkpoint is {interrupt_saver.path}.") from None
    except BaseException:
        record.end("FAILED")
        raise

    best = trainer.checkpoint_callback.best_model_path or None
    (test_metrics,) = trainer.test(module, loaders["test"], ckpt_path=best, verbose=False, weights_only=True)
    test_metrics = {k: float(v) for k, v in test_metrics.items()}
    record.log_metrics(test_metrics, step=trainer.current_epoch)
    record.log_checkpoints(checkpoint_dir)
    model_uri = None
    if run.tracking["log_model"]:
        model_uri = record.log_model(_serving_model(data, module.net), data.raw_example, _requirements())
    record.end("FINISHED")
    return TrainResult(run_id, record.run_name, record.uri, test_metrics, trainer.current_epoch,
                       checkpoint_dir, model_uri, epoch_logger.history)


def _trainer(pl, run: RunConfig):
    """The Lightning Trainer, built before the MLflow run so that a bad trainer option
    (an accelerator this machine lacks, an unknown precision) leaves no run behind.
    Its checkpoint folder is set once the run id is known."""
    from lightning_fabric.utilities.exceptions import MisconfigurationException
    from pytorch_lightning.callbacks import ModelCheckpoint

    from dlrun.train.callbacks import CheckpointOnInterrupt, EpochMetricsToMlflow

    epoch_logger = EpochMetricsToMlflow()
    interrupt_saver = CheckpointOnInterrupt()
    checkpoints = ModelCheckpoint(
        filename="best", monitor="val/loss", mode="min", save_top_k=1, save_last=True, enable_version_counter=False,
    )
    options = {"enable_model_summary": False, **run.trainer}
    try:
        trainer = pl.Trainer(**options, logger=False, callbacks=[epoch_logger, checkpoints, interrupt_saver],
                             default_root_dir=run.config["output_dir"])
    except (MisconfigurationException, ValueError, TypeError, RuntimeError) as error:
        raise ConfigError(f"the trainer config does not work here: {error} "
                          "Pick another trainer option (dlrun configs trainer) or fix the trainer.* override.") from None
    return trainer, epoch_logger, interrupt_saver


def _optimizer_factory(run: RunConfig):
    from dlrun.components.optimizers import OPTIMIZERS

    name, options = run.optim
    builder = OPTIMIZERS.get(name).builder
    return lambda parameters: builder(parameters, **options)


def _scheduler_factory(run: RunConfig, data):
    import math

    from dlrun.components.schedulers import SCHEDULERS, ScheduleContext

    name, options = run.scheduler
    builder = SCHEDULERS.get(name).builder
    steps = math.ceil(math.ceil(len(data.x_train) / run.data["batch_size"]) / run.trainer.get("accumulate_grad_batches", 1))
    context = ScheduleContext(max_epochs=run.trainer["max_epochs"], steps_per_epoch=steps)
    return lambda optimizer: builder(optimizer, context, **options)


def _augmentation(run: RunConfig):
    from dlrun.data.augment import AUGMENTS

    name, options = run.augment
    return AUGMENTS.get(name).builder(**options)


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


def _config_yaml(run: RunConfig) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.create(run.config))


class _sigterm_as_interrupt:
    """SIGTERM raises KeyboardInterrupt, so both stop training the same way."""

    def __enter__(self):
        def handler(signum, frame):
            raise KeyboardInterrupt

        try:
            self.previous = signal.signal(signal.SIGTERM, handler)
        except ValueError:  # not the main thread: leave signals alone
            self.previous = None
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        return False


def _quiet_lightning() -> None:
    """Keep the terminal for dlrun's own output: no hardware banners or tips."""
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning", "mlflow.store.db.utils"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in (".*does not have many workers.*", ".*train_dataloader.*", ".*val_dataloader.*",
                    ".*test_dataloader.*", ".*LitLogger.*", ".*litlogger.*", ".*Checkpoint directory.*exists.*",
                    ".*LeafSpec.*"):
        warnings.filterwarnings("ignore", message=pattern)
