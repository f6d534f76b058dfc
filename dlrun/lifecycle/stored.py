"""Read a recorded run back from MLflow: its config, checkpoints and model.

A stored config may come from a shared server that others write to, so it is
parsed with yaml.safe_load (no python tags) and passes the same validation as a
config typed on the command line; checkpoints load with weights_only=True.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlrun.errors import ConfigError, DlrunError

RUN_ID = re.compile(r"^[0-9a-f]{32}$")


class RunNotFound(DlrunError):
    """The run id is malformed, unknown, or names a run dlrun did not make."""


def open_store(uri: str | None = None):
    """An MlflowClient for uri (default: as dlrun train would choose), never creating a store."""
    from mlflow.tracking import MlflowClient

    from dlrun.tracking.record import tracking_uri

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keep stdout for dlrun's answer
    uri = tracking_uri(uri)
    from dlrun.tracking.server import check_reachable

    check_reachable(uri)
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.is_file():
            raise RunNotFound(f"no MLflow store at {path}. Run this where `dlrun train` ran, or set "
                              "MLFLOW_TRACKING_URI (or --tracking-uri) to the store that holds the run.")
    return MlflowClient(tracking_uri=uri), uri


@dataclass
class StoredRun:
    """One run as recorded: MLflow's run object and its resolved config."""

    client: Any
    uri: str
    run: Any
    config: dict

    @property
    def run_id(self) -> str:
        return self.run.info.run_id

    def run_config(self, overrides: list[str] | None = None):
        """The validated RunConfig of this run, with KEY=VALUE overrides applied."""
        from dlrun.config.compose import Composed
        from dlrun.config.validate import validate

        config = apply_overrides(self.config, overrides or [])
        groups = {k: v for k, v in self.run.data.params.items() if "." not in k and isinstance(self.config.get(k), dict)}
        return validate(Composed(config=config, choices=groups, overrides=list(overrides or [])))

    def served_model(self):
        """The run's logged MLflow model as a pyfunc; RunNotFound if it logged none."""
        import mlflow.pyfunc

        from dlrun.tracking.record import active_store

        model_uri = self.run.data.tags.get("dlrun.model_uri")
        if not model_uri:
            raise RunNotFound(f"run {self.run_id} logged no model (it ran with tracking.log_model=false).")
        with active_store(self.uri):
            return mlflow.pyfunc.load_model(model_uri)

    def data_info(self) -> dict:
        """What the run's data looked like: task and class names (data.json, logged by dlrun train)."""
        import json

        try:
            folder = tempfile.mkdtemp(prefix="dlrun-data-")
            return json.loads(Path(self.client.download_artifacts(self.run_id, "data.json", folder)).read_text())
        except Exception:
            return {"task": self.run.data.tags.get("dlrun.task", "classification"), "class_names": []}

    def checkpoint(self, which: str = "best") -> Path:
        """A local path to the run's best or last checkpoint (downloaded if not on this disk)."""
        local = Path(self.config.get("output_dir", "outputs")) / self.run_id / "checkpoints" / f"{which}.ckpt"
        if local.is_file():
            return local
        try:
            target = tempfile.mkdtemp(prefix="dlrun-ckpt-")
            return Path(self.client.download_artifacts(self.run_id, f"checkpoints/{which}.ckpt", target))
        except Exception:
            raise RunNotFound(f"run {self.run_id} has no checkpoints/{which}.ckpt, neither in {local.parent} "
                              "nor among its MLflow artifacts.") from None


def check_feature_count(model, features, source: str, run_id: str) -> None:
    """A DataError unless features has as many columns as the served model takes."""
    from dlrun.errors import DataError

    expected = model.metadata.get_input_schema().inputs[0].shape[-1]
    if features.shape[1] != expected:
        raise DataError(f"{source} has {features.shape[1]} feature columns; the model of run {run_id} takes "
                        f"{expected} (the features of its data set, in the same order, without the target).")


def load_run(run_id: str, uri: str | None = None) -> StoredRun:
    """Fetch a run dlrun made, with its config.yaml; RunNotFound (exit 2) otherwise."""
    import yaml
    from mlflow.exceptions import MlflowException

    if not RUN_ID.match(run_id or ""):
        raise RunNotFound(f"'{run_id}' is not an MLflow run id (32 hex digits, as printed after `run_id:`).")
    client, uri = open_store(uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise RunNotFound(f"no run {run_id} in the MLflow store {uri}. `dlrun runs` lists the runs there.") from None
    try:
        folder = tempfile.mkdtemp(prefix="dlrun-config-")
        text = Path(client.download_artifacts(run_id, "config.yaml", folder)).read_text(encoding="utf-8")
    except Exception:
        raise RunNotFound(f"run {run_id} has no config.yaml: it was not made by `dlrun train`.") from None
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"the config.yaml of run {run_id} is not plain YAML (python tags are refused): "
                          f"{str(error).splitlines()[0]}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"the config.yaml of run {run_id} is not a mapping.")
    _refuse_targets(config, "config.yaml")
    return StoredRun(client, uri, run, config)


def apply_overrides(config: dict, overrides: list[str]) -> dict:
    """KEY=VALUE overrides on a stored config (group changes need a new `dlrun train`)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    base = OmegaConf.create(config)
    OmegaConf.set_struct(base, True)
    for override in overrides:
        key, sep, _ = override.partition("=")
        if not sep:
            raise ConfigError(f"'{override}' is not an override; write KEY=VALUE, e.g. trainer.max_epochs=30.")
        if "." not in key and isinstance(config.get(key), dict):
            raise ConfigError(f"'{override}' picks another {key} option; a stored run takes KEY=VALUE overrides "
                              f"only (e.g. {key}.something=...). Start a new `dlrun train` to change groups.")
        try:
            base.merge_with_dotlist([override])
        except OmegaConfBaseException as error:
            raise ConfigError(f"cannot apply '{override}' to the stored config: {str(error).splitlines()[0]}") from None
    return OmegaConf.to_container(base, resolve=True)


def _refuse_targets(node: Any, where: str) -> None:
    """Refuse Hydra instantiation keys: a stored config never names code to import."""
    if isinstance(node, dict):
        for key, value in node.items():
            if str(key) in ("_target_", "_partial_", "_args_"):
                raise ConfigError(f"{where} holds '{key}': dlrun configs name registered components only "
                                  "and never import code.")
            _refuse_targets(value, f"{where}:{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            _refuse_targets(value, f"{where}[{index}]")
