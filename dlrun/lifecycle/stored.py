"""Read a recorded run back from MLflow: its config, checkpoints and model.

A stored config may come from a shared server that others write to, so it is
parsed with yaml.safe_load (no python tags), may call no resolver beyond the config
itself, and passes the same validation as a config typed on the command line. Nothing
read from a run leads code or writes elsewhere: a checkpoint must load with
weights_only=True, the model tag must name the run's own model, whose files must be
as dlrun train logs them, and output_dir may not climb out with '..'.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlrun.config.compose import contains_itself, refuse_resolvers
from dlrun.database import hide_passwords
from dlrun.errors import ConfigError, DlrunError

RUN_ID = re.compile(r"^[0-9a-f]{32}$")
MODEL_ID = re.compile(r"^m-[0-9a-f]{32}$")  # an MLflow 3 LoggedModel id


class RunNotFound(DlrunError):
    """The run id is malformed, unknown, or names a run dlrun did not make."""


def open_store(uri: str | None = None):
    """An MlflowClient for uri (default: as dlrun train would choose), never creating a store."""
    from mlflow.tracking import MlflowClient

    from dlrun.tracking.store import tracking_uri

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keep stdout for dlrun's answer
    uri = tracking_uri(uri)
    from dlrun.tracking.server import check_reachable

    check_reachable(uri)
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.is_file():
            raise RunNotFound(f"no MLflow store at {path}. Run this where `dlrun train` ran, or set "
                              "MLFLOW_TRACKING_URI (or --tracking-uri) to the store that holds the run.")
    from mlflow.exceptions import MlflowException

    try:
        return MlflowClient(tracking_uri=uri), uri
    except MlflowException as error:  # an unknown scheme, or a plain path (MLflow's retired file store)
        reason = " ".join(str(error).split()).split(". ")[0]
        raise ConfigError(f"cannot open the MLflow store '{hide_passwords(uri)}' (--tracking-uri or MLFLOW_TRACKING_URI): {reason}. "
                          "Give sqlite:///FILE.db (dlrun's own store is sqlite:///mlflow.db where `dlrun train` ran) "
                          "or a tracking server's http://HOST:PORT.") from None


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

    def run_config(self, overrides: list[str] | None = None, uri: str | None = None):
        """The validated RunConfig of this run, with KEY=VALUE overrides applied.

        Args:
            overrides: KEY=VALUE changes (a derived run).
            uri: the store the user named (--tracking-uri) to read this run from: a run trained from this
                config goes there too, rather than where the stored tracking.uri (often unset) points.
        """
        from dlrun.config.compose import Composed
        from dlrun.config.validate import validate

        self.plugin_drift()  # a plugin the run used and that is not loaded: named, never imported from the run
        config = apply_overrides(self.config, overrides or [], f"the config of run {self.run_id}")
        if uri:
            config["tracking"]["uri"] = uri
        _refuse_climbing_output_dir(config, self.run_id)
        groups = {k: v for k, v in self.run.data.params.items() if "." not in k and isinstance(self.config.get(k), dict)}
        try:
            return validate(Composed(config=config, choices=groups, overrides=list(overrides or [])))
        except ConfigError as error:  # name the run: the culprit is its config.yaml, or the overrides on it
            changed = f" with {' '.join(overrides)}" if overrides else ""
            raise ConfigError(f"the config.yaml of run {self.run_id}{changed}: {error}") from None

    def plugin_drift(self) -> list[tuple[str, str, str]]:
        """(plugin NAME, version then, version now) for each plugin of the run whose version changed.

        Raises:
            PluginError: a plugin the run was trained with is not loaded here.
        """
        from dlrun.plugin_loading import TAG, check_recorded

        return check_recorded(self.run.data.tags.get(TAG), self.run_id)

    def served_model(self):
        """The run's logged MLflow model as a pyfunc; for a run that skipped it on purpose (a sweep's trial
        other than the best), the same model rebuilt from best.ckpt; RunNotFound if it logged none."""
        import mlflow.pyfunc

        from dlrun.tracking.store import active_store

        tags = self.run.data.tags
        if not tags.get("dlrun.model_uri") and tags.get("dlrun.served_from") == "checkpoint":
            from dlrun.lifecycle.checkpoint_model import CheckpointModel

            return CheckpointModel(self)
        model_uri = self.own_model_uri()
        with active_store(self.uri):
            self._refuse_foreign_model_code(model_uri)
            folder = self._download_model(model_uri)
        # the files checked are the files loaded: a text model's loader checks its own program
        if (folder / "data" / "model.pt2").is_file():
            from dlrun.serving.safe_program import refuse_pickled_program

            refuse_pickled_program(folder / "data" / "model.pt2", f"the model {model_uri} of run {self.run_id}")
        return mlflow.pyfunc.load_model(str(folder))

    def _download_model(self, model_uri: str) -> Path:
        """A local copy of the run's model, which is checked and then loaded (never fetched twice)."""
        import mlflow.artifacts

        target = tempfile.mkdtemp(prefix="dlrun-model-")
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=target))

    def _refuse_foreign_model_code(self, model_uri: str) -> None:
        """An MLflow model names the module that loads it and may carry code; the run's model must be as
        dlrun train logs it (mlflow.pytorch's loader, no code, a torch.export program; a text run's: dlrun's
        own loader and a data folder of the program and JSON) before it loads."""
        from mlflow.models import Model

        from dlrun.serving.text_files import FILES as TEXT_FILES, FOLDER as TEXT_FOLDER, LOADER_MODULE as TEXT_LOADER

        model_id = model_uri.removeprefix("models:/")
        try:
            flavors = Model.load(model_uri).flavors
        except Exception as error:  # no MLmodel file, or not YAML that MLflow reads
            raise ConfigError(f"the model {model_uri} of run {self.run_id} cannot be read: "
                              f"{str(error).strip().splitlines()[0]}") from None
        pyfunc, pytorch = flavors.get("python_function", {}), flavors.get("pytorch", {})
        files = sorted(a.path for a in self.client.list_logged_model_artifacts(model_id, "data"))
        if pyfunc.get("loader_module") == TEXT_LOADER and files == [f"data/{TEXT_FOLDER}"]:
            files = sorted(a.path for a in self.client.list_logged_model_artifacts(model_id, f"data/{TEXT_FOLDER}"))
            expected = not pyfunc.get("code") and pyfunc.get("data") == f"data/{TEXT_FOLDER}" and \
                files == [f"data/{TEXT_FOLDER}/{name}" for name in TEXT_FILES]
        else:
            expected = pyfunc.get("loader_module") == "mlflow.pytorch" and not pyfunc.get("code") and \
                not pytorch.get("code") and files == ["data/model.pt2"]
        if not expected:
            raise ConfigError(f"the model {model_uri} of run {self.run_id} is not as dlrun train logs it (loader "
                              f"{pyfunc.get('loader_module')!r}, code {pyfunc.get('code') or pytorch.get('code')!r}, "
                              f"data {files}); dlrun loads only its own kind of model, which runs no code of its "
                              "own. Its files were altered.")

    def own_model_uri(self) -> str:
        """The dlrun.model_uri tag, if it names a model this run logged. A tag edited to a path (../../),
        a folder or another run's model would load a model, and its code, from elsewhere."""
        model_uri = self.run.data.tags.get("dlrun.model_uri")
        if not model_uri:
            raise RunNotFound(f"run {self.run_id} logged no model (it ran with tracking.log_model=false).")
        model_id = model_uri.removeprefix("models:/")
        source = None
        if model_uri.startswith("models:/") and MODEL_ID.match(model_id):
            source = _source_run_of_model(self.client, model_id)
        if source != self.run_id:
            raise ConfigError(f"the dlrun.model_uri tag of run {self.run_id} ('{model_uri}') does not name a model "
                              "that run logged; dlrun loads only a run's own model (models:/m-..., set by dlrun "
                              "train). The tag was altered.")
        return model_uri

    def data_info(self) -> dict:
        """What the run's data looked like: task and class names (data.json, logged by dlrun train)."""
        try:
            folder = tempfile.mkdtemp(prefix="dlrun-data-")
            return json.loads(Path(self.client.download_artifacts(self.run_id, "data.json", folder)).read_text())
        except Exception:
            return {"task": self.run.data.tags.get("dlrun.task", "classification"), "class_names": []}

    def checkpoint(self, which: str = "best") -> Path:
        """A local path to the run's best or last checkpoint (downloaded if not on this disk), checked to
        hold tensors and plain values only."""
        path = self._find_checkpoint(which)
        refuse_pickled_objects(path, self.run_id)
        return path

    def _find_checkpoint(self, which: str) -> Path:
        output_dir = Path(str(self.config.get("output_dir", "outputs")))
        local = output_dir / self.run_id / "checkpoints" / f"{which}.ckpt"
        if ".." not in output_dir.parts and local.is_file():  # a climbing path: the MLflow artifact only
            return local
        try:
            target = tempfile.mkdtemp(prefix="dlrun-ckpt-")
            return Path(self.client.download_artifacts(self.run_id, f"checkpoints/{which}.ckpt", target))
        except Exception as error:  # missing, or a store that did not answer: the cause says which
            raise RunNotFound(f"run {self.run_id} has no checkpoints/{which}.ckpt, neither in {local.parent} "
                              f"nor among its MLflow artifacts ({_cause(error)}).") from None


def _source_run_of_model(client, model_id: str) -> str | None:
    """The run that logged the model, None if the store has no such model. Any other error (a server that
    does not answer) is raised as it is, not taken for a tag that names no model."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

    try:
        return client.get_logged_model(model_id).source_run_id
    except MlflowException as error:
        if error.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            raise
        return None


def _refuse_climbing_output_dir(config: dict, run_id: str) -> None:
    """A stored config may not lead a new run's writes (checkpoints, model) out of the folder with '..'."""
    output_dir = str(config.get("output_dir", "outputs"))
    if ".." in Path(output_dir).parts:
        raise ConfigError(f"the config of run {run_id} sets output_dir '{output_dir}', which climbs out of its "
                          "folder with '..'; dlrun does not write where a stored config points that way. Give "
                          "output_dir=outputs (or another folder without '..').")


def refuse_pickled_objects(path: Path, run_id: str) -> None:
    """A ConfigError unless the checkpoint loads with weights_only=True: a pickled object (a class, a
    function call) would run code as it loads. Checked before any run is opened, whatever loads it later."""
    import torch

    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # mmap: a large file is not read twice
    except Exception as error:  # UnpicklingError for a refused object; others for a damaged file
        reason = next((line.strip() for line in str(error).splitlines() if "GLOBAL" in line),
                      str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__).rstrip(".")
        raise ConfigError(f"the checkpoint {path} of run {run_id} is refused: it does not load as tensors and "
                          f"plain values only ({reason}). dlrun never unpickles objects from a checkpoint; it was "
                          "not written by dlrun, or it was altered.") from None


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
        raise RunNotFound(f"no run {run_id} in the MLflow store {hide_passwords(uri)}. `dlrun runs` lists the runs there.") from None
    try:
        folder = tempfile.mkdtemp(prefix="dlrun-config-")
        text = Path(client.download_artifacts(run_id, "config.yaml", folder)).read_text(encoding="utf-8")
    except Exception as error:  # missing, or a store that did not answer: the cause says which
        raise RunNotFound(f"run {run_id} has no config.yaml: it was not made by `dlrun train` "
                          f"({_cause(error)}).") from None
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"the config.yaml of run {run_id} is not plain YAML (python tags are refused): "
                          f"{str(error).splitlines()[0]}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"the config.yaml of run {run_id} is not a mapping.")
    if contains_itself(config):  # a YAML alias inside its own anchor: every walk below would never end
        raise ConfigError(f"the config.yaml of run {run_id} holds a value that contains itself (a YAML alias "
                          "inside its own anchor); dlrun never writes one.")
    _refuse_targets(config, "config.yaml")
    refuse_resolvers(config, f"the config.yaml of run {run_id}")
    return StoredRun(client, uri, run, config)


def apply_overrides(config: dict, overrides: list[str], source: str = "the stored config") -> dict:
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
            from dlrun.config.compose import _dotted_keys
            from dlrun.errors import did_you_mean

            hint = did_you_mean(key, _dotted_keys(config))
            raise ConfigError(f"cannot apply '{override}' to the stored config: {str(error).splitlines()[0]}.{hint}") from None
    refuse_resolvers(OmegaConf.to_container(base, resolve=False), source)  # the stored values and the overrides
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


def _cause(error: BaseException) -> str:
    """The first line of an error, as a reason in parentheses."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0][:200].rstrip('.')}" if text else type(error).__name__

