"""Everything a run needs before it trains: data, model, loss, optimizer, loaders.

Shared by `dlrun train` and the commands that rebuild a recorded run (eval,
reproduce). Every check that can fail on bad input runs here, before any MLflow
run exists.
"""

from __future__ import annotations

import functools
import logging
import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dlrun.config.validate import RunConfig
from dlrun.errors import ConfigError, PluginError

if TYPE_CHECKING:
    from dlrun.data.prepare import DataBundle
    from dlrun.training.module import DlrunModule


@dataclass
class Prepared:
    """The data and the LightningModule of one run, ready to fit."""

    data: "DataBundle"
    module: "DlrunModule"
    augment: object  # the training-batch augmentation, or None


def prepare(run: RunConfig) -> Prepared:
    """Seed, load and split the data, build the model and its training module."""
    import pytorch_lightning as pl

    from dlrun.components.losses import LOSSES, check_fits, output_size
    from dlrun.data.prepare import load_data
    from dlrun.models.build import build_model
    from dlrun.training.module import DlrunModule
    from dlrun.training.ranks import ranks_on_this_node

    quiet_lightning()
    pl.seed_everything(run.seed, verbose=False)
    data = load_data(run.data, run.seed, ranks_on_this_node(int(run.trainer.get("num_nodes", 1))))
    augment = _augmentation(run, data.sample_shape, data.tokenizer is not None)  # one that does not fit fails here
    loss_name, loss_options = run.loss
    check_fits(loss_name, data.task, data.num_classes)
    net = build_model(run.config["model"]["layers"], data.sample_shape, output_size(loss_name, data),
                      run.activation, run.regularization["dropout"],
                      vocab_size=len(data.tokenizer.vocab) if data.tokenizer is not None else None)
    module = DlrunModule(
        net, LOSSES.get(loss_name).builder(data.num_classes, **loss_options), _optimizer_factory(run), data.task,
        l1=run.regularization["l1"], l2=run.regularization["l2"],
        target_scale=getattr(data.postprocess, "scale", None),
        make_scheduler=_scheduler_factory(run, data), extra_metrics=_extra_metrics(run, data),
    )
    _check_optimization(module)
    return Prepared(data, module, augment)


def make_loaders(run: RunConfig, prepared: Prepared, progress=None) -> dict:
    """Train (shuffled, seeded, augmented), val and test batch loaders; `progress` is what the
    training loop tells the training loader (its position, for checkpoints and resume)."""
    from dlrun.data.loader import BatchLoader
    from dlrun.data.streaming import LazySplit, StreamingLoader, resolve_num_workers

    data, batch_size = prepared.data, run.data["batch_size"]
    loader, streamed = BatchLoader, {}
    if isinstance(data.x_train, LazySplit):  # streamed from disk by workers; data in memory needs none
        loader = StreamingLoader
        ranks_here = progress.shard()[1] // max(1, int(run.trainer.get("num_nodes", 1))) if progress else 1
        streamed = {"num_workers": resolve_num_workers(run.data.get("num_workers"), ranks_here),
                    "pin_memory": _on_gpu(run)}
    return {
        "train": loader(data.x_train, data.y_train, batch_size, shuffle=True, seed=run.seed,
                        augment=prepared.augment, progress=progress, **streamed),
        "val": loader(data.x_val, data.y_val, batch_size, shuffle=False, **streamed),
        "test": loader(data.x_test, data.y_test, batch_size, shuffle=False, **streamed),
    }


def _on_gpu(run: RunConfig) -> bool:
    """Whether the trainer trains on a CUDA GPU (pinned memory pays off only there)."""
    import torch

    accelerator = str(run.trainer.get("accelerator", "auto"))
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def _check_optimization(module) -> None:
    """Build the optimizer and schedule once and discard them, so that keys that clash
    (nesterov without momentum, or with dampening) stop the command before
    the MLflow run exists rather than at the start of fit."""
    try:
        module.configure_optimizers()
    except ValueError as error:
        raise ConfigError(f"the optim and scheduler configs do not work together: {error} "
                          "Fix the optim.* or scheduler.* override.") from None


def _optimizer_factory(run: RunConfig):
    from dlrun.components.optimizers import OPTIMIZERS, unfused

    name, options = run.optim
    builder = OPTIMIZERS.get(name).builder
    # Lightning refuses to clip gradients under mixed precision with a fused optimizer; the choice follows
    # the config alone, so a run and its reproduction still build the same optimizer.
    mixed = "mixed" in str(run.trainer.get("precision", "32"))
    if mixed and run.trainer.get("gradient_clip_val"):
        return lambda parameters: _built_unfused(unfused, builder, parameters, options)
    return lambda parameters: builder(parameters, **options)


def _built_unfused(unfused, builder, parameters, options):
    with unfused():
        return builder(parameters, **options)


def _scheduler_factory(run: RunConfig, data):
    from dlrun.components.schedulers import SCHEDULERS, ScheduleContext

    name, options = run.scheduler
    builder = SCHEDULERS.get(name).builder
    steps = math.ceil(math.ceil(len(data.x_train) / run.data["batch_size"]) / run.trainer.get("accumulate_grad_batches", 1))
    context = ScheduleContext(max_epochs=run.trainer["max_epochs"], steps_per_epoch=steps)
    return lambda optimizer: builder(optimizer, context, **options)


def _extra_metrics(run: RunConfig, data) -> dict:
    """name -> a function making the metric, for each of `metrics: [...]`; a ConfigError for one that does
    not fit the data's task."""
    from dlrun.components.metrics import METRICS, MetricContext

    context = MetricContext(data.task, data.num_classes)
    factories = {}
    for name, options in run.metrics:
        entry = METRICS.get(name)
        if data.task not in entry.details["fits"]:
            raise ConfigError(f"the metric '{name}' in metrics fits {', '.join(sorted(entry.details['fits']))} "
                              f"data, and this data set is {data.task}. Drop it, or pick one of: "
                              f"{', '.join(n for n in METRICS.names() if data.task in METRICS.get(n).details['fits'])}.")
        factories[name] = functools.partial(_checked_metric, name, entry, context, options)
    return factories


def _checked_metric(name: str, entry, context, options: dict):
    """One metric object from its builder; the module logs it through Lightning, which takes torchmetrics only."""
    import torchmetrics

    metric = entry.builder(context, **options)
    if not isinstance(metric, torchmetrics.Metric):
        origin = f"the plugin '{entry.plugin.name}'" if entry.plugin else "dlrun"
        raise PluginError(f"the metric '{name}' (from {origin}) made a {type(metric).__name__}, not a "
                          "torchmetrics.Metric. Its builder must return one.")
    return metric


def _augmentation(run: RunConfig, sample_shape: tuple[int, ...], tokenized: bool = False):
    """The training batches' augmentation for samples of sample_shape; a ConfigError if it does not fit them."""
    from dlrun.data.augment import AUGMENTS

    name, options = run.augment
    if tokenized and name != "none":  # noise on token ids would make other tokens, not noisy ones
        raise ConfigError(f"augment={name} changes feature values, but text data's samples are token ids. "
                          "Use augment=none for data=text.")
    return AUGMENTS.get(name).builder(sample_shape, **options)


def quiet_lightning() -> None:
    """Keep the terminal for dlrun's own output: no hardware banners or tips."""
    # mlflow.pyfunc and mlflow.models: "Validating input example..." as a text run's model is logged
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning", "mlflow.store.db.utils",
                 "mlflow.pyfunc", "mlflow.models"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in (".*does not have many workers.*", ".*train_dataloader.*", ".*val_dataloader.*",
                    ".*test_dataloader.*", ".*LitLogger.*", ".*litlogger.*", ".*Checkpoint directory.*exists.*",
                    ".*LeafSpec.*", ".*dirpath has changed.*",
                    # torch.export of an RNN: RNNBase refreshes its plain list of weights at each forward;
                    # the program still holds them as parameters (its outputs equal the module's)
                    ".*_flat_weights.*were assigned during export.*"):
        warnings.filterwarnings("ignore", message=pattern)
