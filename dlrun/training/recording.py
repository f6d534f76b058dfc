"""What a training run writes to its MLflow run: at the start (name, params, tags, config.yaml,
data.json) and at the end (test metrics, plots, checkpoints, the serving model).

Whether the writes were stored, and so how the run ends, is `dlrun.training.outcome`'s to decide.
"""

from __future__ import annotations

import copy
import json
import secrets
from importlib.metadata import version
from pathlib import Path

from omegaconf import OmegaConf

from dlrun.config.validate import RunConfig
from dlrun.plugin_loading import TAG as PLUGINS_TAG, recorded_plugins
from dlrun.tracking.datasets import dataset_inputs
from dlrun.tracking.env import environment_tags
from dlrun.tracking.params import run_params
from dlrun.training.ranks import NullRecord

# The tag of a run that logged no served model on purpose: predict and eval build it from best.ckpt.
SERVED_FROM_CHECKPOINT = "dlrun.served_from"


def new_record(run: RunConfig, rank: int, rank_run_id: str | None):
    """The record of this run, before its MLflow run exists: the store opened (created whole when new);
    on a DDP rank other than 0, a record that writes nothing, under rank 0's run id."""
    if rank:
        return NullRecord(rank_run_id or f"rank-{rank}")
    from dlrun.tracking.record import RunRecord
    from dlrun.tracking.store import tracking_uri

    return RunRecord(tracking_uri(run.tracking["uri"]), run.tracking["experiment"],
                     output_dir=Path(run.config["output_dir"]))


def start_record(record, run: RunConfig, data, reopen_run_id: str | None, extra_tags: dict | None) -> None:
    """The MLflow run created with its name, params, tags, config.yaml, overrides.txt, data.json and its
    splits as dataset inputs, or reopened (reopen_run_id) to resume it; then, when tracking.system_metrics,
    watched for system metrics until it ends."""
    if isinstance(record, NullRecord):
        return
    if reopen_run_id:
        record.reopen(reopen_run_id)
    else:
        config = recorded_config(run)
        inputs = dataset_inputs(run.data, data)  # described before the run exists, so a failure leaves none
        record.start(_run_name(run), run_params(config, run.choices), {**_tags(data), **(extra_tags or {})},
                     OmegaConf.to_yaml(OmegaConf.create(config)), run.overrides)
        record.log_text(_data_info(data), "data.json")
        record.log_inputs(inputs)
    if run.tracking.get("system_metrics", False):  # a config recorded before the key existed had none
        record.watch_system(resume=bool(reopen_run_id))


def recorded_config(run: RunConfig) -> dict:
    """The config as the run used it, for config.yaml and the params: a group option that a user's file
    gives in part is recorded whole, with the values validation took from the shipped files, so that
    reproducing the run does not depend on the shipped files of another version."""
    config = copy.deepcopy(run.config)
    for group, (_, options) in run.components().items():
        given = config[group]
        given.update({key: list(value) if isinstance(value, tuple) else value
                      for key, value in options.items() if key not in given})
    return config


def record_results(record, run: RunConfig, prepared, history: list[dict[str, float]],
                   test_metrics: dict[str, float], epochs: int, checkpoint_dir: Path, log_model: bool = True,
                   plots: bool = True, test_loader=None) -> str | None:
    """Test metrics, plots (when plots), checkpoints and (when tracking.log_model and log_model) the serving
    model; returns the model's URI, or None when none was logged. A run that skips its model only because
    log_model is False (a sweep's trial that is not the best so far) is tagged SERVED_FROM_CHECKPOINT: predict
    and eval build its served model from best.ckpt. A failed plot only warns; refused writes are noted.
    The confusion matrix predicts the batches of `test_loader` (the test's loader) where given."""
    data, net = prepared.data, prepared.module.net
    record.log_metrics(test_metrics, step=epochs)
    if plots:
        from dlrun.tracking.plots import log_plots

        log_plots(record, history, data, net, run.choices, test_metrics, run.data["batch_size"], test_loader)
    record.log_checkpoints(checkpoint_dir)
    if not run.tracking["log_model"]:
        return None
    if not log_model:
        record.set_tags({SERVED_FROM_CHECKPOINT: "checkpoint"})
        return None
    if data.tokenizer is not None:  # a text run: a pyfunc model that tokenizes raw strings
        from dlrun.serving.text_model import TextServing
        from dlrun.version import __version__

        return record.log_model(_serving_model(data, net), list(data.text_example), [*_requirements(),
                                f"dlrun=={__version__}"], text=TextServing.of(data))
    return record.log_model(_serving_model(data, net), data.raw_example, _requirements())


def _serving_model(data, net):
    """Preprocessing, the trained net and the output transform in one module that takes raw features."""
    from dlrun.models.modules import ServingModel

    return ServingModel(copy.deepcopy(data.preprocess), copy.deepcopy(net), copy.deepcopy(data.postprocess)).eval()


def _requirements() -> list[str]:
    return [f"torch=={version('torch').split('+')[0]}", f"mlflow=={version('mlflow')}", "numpy"]


def _run_name(run: RunConfig) -> str:
    """model-data-xxxxxx: readable in MLflow's UI, unique without a global RNG (which is seeded)."""
    return f"{run.choices.get('model', 'model')}-{run.choices.get('data', 'data')}-{secrets.token_hex(3)}"


def _tags(data) -> dict[str, str]:
    tags = environment_tags()
    tags["dlrun.data_fingerprint"] = data.fingerprint
    tags["dlrun.task"] = data.task
    tags[PLUGINS_TAG] = recorded_plugins()
    return tags


def _data_info(data) -> str:
    """What predict and eval need to know of the data without loading it again."""
    info = {"task": data.task, "class_names": data.class_names, "num_classes": data.num_classes,
            "sample_shape": list(data.sample_shape), "fingerprint": data.fingerprint}
    if data.text_column:  # a text run: predict reads this column of a CSV
        info["text_column"] = data.text_column
    return json.dumps(info, indent=2)
