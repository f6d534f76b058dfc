"""Check a composed config against dlrun's schema and registries: a RunConfig.

Runs before any data is loaded or any MLflow run is created, and imports no
torch, so that bad input fails fast and leaves nothing behind.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Annotated, Any, Optional, Union
from urllib.parse import urlparse

from dlrun.components.activations import ACTIVATIONS
from dlrun.components.callbacks import CALLBACKS
from dlrun.components.losses import LOSSES
from dlrun.components.metrics import METRICS
from dlrun.components.optimizers import OPTIMIZERS
from dlrun.components.schedulers import SCHEDULERS
from dlrun.config.compose import Composed
from dlrun.data.augment import AUGMENTS
from dlrun.data.sources import COMMON_KEYS, DATASETS
from dlrun.database import hide_passwords
from dlrun.errors import ConfigError, did_you_mean
from dlrun.models.build import check_layer_specs
from dlrun.plugin_loading import load_plugins
from dlrun.registry import BadValue, Choice, Range, check_value
from dlrun.training.metrics import every_epoch_metric

Fraction = Annotated[float, Range(gt=0, lt=1)]
NonNegative = Annotated[float, Range(ge=0)]

TOP_LEVEL = {
    "data": dict, "model": dict, "activation": dict, "loss": dict, "optim": dict,
    "regularization": dict, "scheduler": dict, "augment": dict, "trainer": dict, "tracking": dict,
    "seed": Annotated[int, Range(ge=0)], "output_dir": str,
}
# Keys a config may leave out: runs recorded before they existed have none.
OPTIONAL_TOP_LEVEL = {"metrics": list, "callbacks": list}
DATA_COMMON = {"batch_size": Annotated[int, Range(ge=1)], "val_fraction": Fraction, "test_fraction": Fraction}
# Common data keys a config may leave out (runs recorded before they existed have none): "auto" or a type.
OPTIONAL_DATA_COMMON = {"num_workers": Annotated[int, Range(ge=0)]}
REGULARIZATION = {"l1": NonNegative, "l2": NonNegative, "dropout": Annotated[float, Range(ge=0, lt=1)]}
TRACKING = {"uri": Optional[str], "experiment": str, "log_model": bool, "system_metrics": bool}
# The stores MLflow opens by URI (a plain path would be its retired file store).
TRACKING_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks", "databricks-uc", "uc")
# MLflow 3 refuses its file store (file:///...) unless this variable is true or 1.
ALLOW_FILE_STORE = "MLFLOW_ALLOW_FILE_STORE"
# Lightning Trainer arguments a config may set, with the checks dlrun applies to them.
# Callbacks, loggers and checkpoint folders are dlrun's to configure.
TRAINER = {
    "accelerator": str, "strategy": str, "devices": Any, "num_nodes": Annotated[int, Range(ge=1)],
    "precision": Union[str, int], "max_epochs": Annotated[int, Range(ge=1)],
    "min_epochs": Optional[Annotated[int, Range(ge=0)]], "max_steps": Annotated[int, Range(ge=-1)],
    "max_time": Optional[str], "limit_train_batches": Optional[NonNegative],
    "limit_val_batches": Optional[NonNegative], "limit_test_batches": Optional[NonNegative],
    "val_check_interval": Optional[NonNegative], "check_val_every_n_epoch": Optional[Annotated[int, Range(ge=1)]],
    "num_sanity_val_steps": Annotated[int, Range(ge=-1)], "log_every_n_steps": Annotated[int, Range(ge=1)],
    "accumulate_grad_batches": Annotated[int, Range(ge=1)], "gradient_clip_val": Optional[NonNegative],
    "gradient_clip_algorithm": Optional[str], "deterministic": Union[bool, str], "benchmark": Optional[bool],
    "enable_progress_bar": Optional[bool], "enable_model_summary": bool, "detect_anomaly": bool,
    "overfit_batches": NonNegative, "sync_batchnorm": bool, "inference_mode": bool,
    "early_stopping": Optional[dict],  # dlrun's own: becomes Lightning's EarlyStopping callback
}
# trainer.early_stopping; off while patience is null. Whether the monitored metric exists
# for the task (val/acc or val/mae) is checked once the data are loaded (training/trainer.py, check_trainer).
EARLY_STOPPING = {
    "patience": Optional[Annotated[int, Range(ge=1)]],
    "monitor": Annotated[str, Choice(*every_epoch_metric())],
    "mode": Optional[Annotated[str, Choice("min", "max")]],
    "min_delta": NonNegative,
}


@dataclass(frozen=True)
class RunConfig:
    """A validated config: the resolved tree plus each component's checked options."""

    config: dict[str, Any]  # the resolved config, as logged to config.yaml
    choices: dict[str, str]  # group -> option, as logged to params
    overrides: list[str]
    activation: tuple[str, dict]  # (registry name, builder options)
    loss: tuple[str, dict]
    optim: tuple[str, dict]
    scheduler: tuple[str, dict]
    augment: tuple[str, dict]
    metrics: tuple[tuple[str, dict], ...] = ()  # more metrics to log: (registry name, builder options)
    callbacks: tuple[tuple[str, dict], ...] = ()  # more Lightning callbacks: (registry name, builder options)

    def components(self) -> dict[str, tuple[str, dict]]:
        """Each group option a registry builds: group -> (registry name, bound options)."""
        return {"activation": self.activation, "loss": self.loss, "optim": self.optim,
                "scheduler": self.scheduler, "augment": self.augment}

    @property
    def seed(self) -> int:
        return self.config["seed"]

    @property
    def data(self) -> dict:
        return self.config["data"]

    @property
    def trainer(self) -> dict:
        return self.config["trainer"]

    @property
    def regularization(self) -> dict:
        return self.config["regularization"]

    @property
    def tracking(self) -> dict:
        return self.config["tracking"]


def validate(composed: Composed) -> RunConfig:
    """Check every part of the config; a ConfigError names the first problem found.

    A bad value that came through an interpolation (out_channels: ${model.width}) is
    named together with the key the user set: "... (from model.width=0)".
    """
    try:
        return _validate(composed)
    except BadValue as error:
        raise _naming_the_source(error, composed) from None


def _validate(composed: Composed) -> RunConfig:
    load_plugins()  # a stored config validated without composing (reproduce, a DDP rank) needs them too
    cfg = composed.config
    _check_keys({k: v for k, v in cfg.items() if k not in OPTIONAL_TOP_LEVEL}, TOP_LEVEL, "", required=True)
    for key, hint in OPTIONAL_TOP_LEVEL.items():
        if key in cfg and not isinstance(cfg[key], hint):
            raise ConfigError(f"'{key}' must be a list, got {cfg[key]!r}; e.g. {key}=[NAME] or [] for none.")
    data = cfg["data"]
    _need_name(data, "data")
    DATASETS.get(data["name"], "data.name")
    for key in DATA_COMMON:
        if key not in data:
            raise ConfigError(f"'data.{key}' is missing; every data config sets it.")
        check_value(data[key], DATA_COMMON[key], f"data.{key}")
    for key in OPTIONAL_DATA_COMMON.keys() & data.keys():
        if data[key] != "auto":
            try:
                check_value(data[key], OPTIONAL_DATA_COMMON[key], f"data.{key}")
            except BadValue:
                raise BadValue(f"data.{key}", f"'data.{key}' must be auto or a count of 0 or more, got "
                                              f"{data[key]!r}.") from None
    if data["val_fraction"] + data["test_fraction"] >= 1:
        raise ConfigError(
            f"data.val_fraction ({data['val_fraction']}) + data.test_fraction ({data['test_fraction']}) "
            "leave no training data; their sum must be below 1."
        )
    DATASETS.bind(data["name"], {k: v for k, v in data.items() if k not in COMMON_KEYS}, "data")
    if "layers" not in cfg["model"]:
        raise ConfigError("the model config has no 'layers' list; see `dlrun configs model` for examples.")
    check_layer_specs(cfg["model"]["layers"], "model.layers")
    _check_keys(cfg["regularization"], REGULARIZATION, "regularization.", allow={"name"})
    _check_keys(cfg["tracking"], TRACKING, "tracking.")
    _check_tracking_uri(cfg["tracking"].get("uri"))
    _check_keys(cfg["trainer"], TRAINER, "trainer.")
    _check_early_stopping(cfg["trainer"].get("early_stopping"))
    if "max_epochs" not in cfg["trainer"]:
        raise ConfigError("'trainer.max_epochs' is missing; set trainer.max_epochs=N.")
    return RunConfig(
        config=cfg, choices=composed.choices, overrides=composed.overrides,
        activation=_component(composed, "activation", ACTIVATIONS),
        loss=_component(composed, "loss", LOSSES),
        optim=_component(composed, "optim", OPTIMIZERS),
        scheduler=_component(composed, "scheduler", SCHEDULERS),
        augment=_component(composed, "augment", AUGMENTS),
        metrics=_listed(cfg.get("metrics") or [], "metrics", METRICS),
        callbacks=_listed(cfg.get("callbacks") or [], "callbacks", CALLBACKS),
    )


def _listed(items: list, key: str, registry) -> tuple[tuple[str, dict], ...]:
    """Each entry of a list of components (NAME, or a mapping with name and options), bound to its builder."""
    bound = []
    for index, item in enumerate(items):
        where = f"{key}[{index}]"
        if isinstance(item, str):
            item = {"name": item}
        _need_name(item, where)
        bound.append((item["name"], registry.bind(item["name"], {k: v for k, v in item.items() if k != "name"},
                                                  where)))
    names = [name for name, _ in bound]
    if len(set(names)) < len(names):
        raise ConfigError(f"'{key}' names {', '.join(sorted({n for n in names if names.count(n) > 1}))} twice; "
                          "list each once.")
    return tuple(bound)


def _naming_the_source(error: BadValue, composed: Composed) -> BadValue:
    """The error with the key its value was interpolated from, as the user set it if an override did."""
    key = next((k for k in _key_and_parents(error.key) if k in composed.references), None)
    if key is None:
        return error
    source = composed.references[key]
    given = [o for o in composed.overrides if o.split("=", 1)[0].lstrip("+") == source]
    origin = given[-1] if given else f"{source}={_lookup(composed.config, source)!r}"
    message = str(error)
    head, dot = (message[:-1], ".") if message.endswith(".") else (message, "")
    return BadValue(error.key, f"{head} (from {origin}){dot}")


def _key_and_parents(key: str) -> list[str]:
    """model.layers[0].out_channels, then model.layers[0], model.layers, model."""
    keys = [key]
    while (cut := max(key.rfind("."), key.rfind("["))) > 0:
        key = key[:cut]
        keys.append(key)
    return keys


def _lookup(config: dict, key: str) -> Any:
    """The value at a dotted key (a.b[0].c), or None where there is none."""
    node: Any = config
    for part in re.findall(r"[^.\[\]]+", key):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            node = node.get(part) if isinstance(node, dict) else None
    return node


def _check_tracking_uri(configured: str | None) -> None:
    """A store MLflow can open, named before any data is read (MLflow's own error comes after training set up)."""
    uri, where = (configured, "'tracking.uri'") if configured else (os.environ.get("MLFLOW_TRACKING_URI"),
                                                                      "$MLFLOW_TRACKING_URI")
    if not uri:
        return
    parsed = urlparse(uri)
    scheme = parsed.scheme.split("+")[0]  # postgresql+psycopg2://
    if not scheme and parsed.path in ("databricks", "databricks-uc", "uc"):
        return  # a bare Databricks URI: the profile in ~/.databrickscfg, or the workspace this runs in
    if scheme == "file" and os.environ.get(ALLOW_FILE_STORE, "").lower() in ("true", "1"):
        return
    if scheme not in TRACKING_SCHEMES:
        file_store = (" A file:// store is MLflow's retired file store; it opens only with "
                      f"{ALLOW_FILE_STORE}=true." if scheme == "file" else "")
        raise ConfigError(f"{where} {hide_passwords(uri)!r} is not an MLflow store dlrun can record in.{file_store} Give "
                          "sqlite:///FILE.db (the default, unset, is sqlite:///mlflow.db here) or a tracking "
                          "server's http://HOST:PORT.")


def _check_early_stopping(node: Any) -> None:
    if node is None:
        return
    if not isinstance(node, dict):
        raise ConfigError(f"'trainer.early_stopping' must be a mapping with {', '.join(EARLY_STOPPING)}, "
                          f"got {node!r}. Set trainer.early_stopping.patience=N instead.")
    _check_keys(node, EARLY_STOPPING, "trainer.early_stopping.")


def _need_name(node: Any, where: str) -> None:
    if not isinstance(node, dict) or "name" not in node:
        raise ConfigError(f"the '{where}' config needs a 'name' key naming what to use.")


def _component(composed: Composed, group: str, registry) -> tuple[str, dict]:
    node = composed.config[group]
    _need_name(node, group)
    name = node["name"]
    options = registry.bind(name, {k: v for k, v in node.items() if k != "name"}, group, composed.choices.get(group))
    return name, options


def _check_keys(node: dict, schema: dict, prefix: str, required: bool = False, allow=frozenset()) -> None:
    for key, value in node.items():
        if key in allow:
            continue
        if key not in schema:
            raise ConfigError(f"unknown config key '{prefix}{key}'.{did_you_mean(key, schema)} Known keys: {', '.join(schema)}.")
        hint = schema[key]
        if hint is dict:
            if not isinstance(value, dict):
                raise ConfigError(f"'{prefix}{key}' must be a mapping, got {value!r}.")
        else:
            check_value(value, hint, f"{prefix}{key}")
    if required:
        missing = [k for k in schema if k not in node]
        if missing:
            raise ConfigError(f"the config lacks {', '.join(missing)}; does your train.yaml keep the defaults list?")
