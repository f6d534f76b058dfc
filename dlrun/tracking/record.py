"""The MLflow record of one dlrun train: created after validation, closed with a status.

The run is created only once the config is valid, the data loaded and the model
built, so that bad input never leaves a half-written run behind. Writes go through
`MlflowClient`; a server that stops answering is handled by tracking/offline.py, and
the store's own troubles (locks, refused writes) are named by tracking/store.py.
"""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dlrun.database import hide_passwords
from dlrun.processes import this_process
from dlrun.tracking.offline import OfflineBuffer
from dlrun.tracking.server import check_reachable, is_connection_error
from dlrun.tracking.store import (
    active_store,
    create_sqlite_store_whole,
    experiment_id_of,
    is_database_locked,
    is_storage_error,
    retry_while_locked,
)

PROCESS_TAG = "dlrun.process"  # the process that writes the run (dlrun.processes.this_process)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200] if text else ''}"


class RunRecord:
    """One MLflow run, written through MlflowClient so nothing depends on global state.

    Once the run exists, a tracking server that stops answering does not stop training: the
    record goes offline (an OfflineBuffer keeps each epoch's metrics and sends them when the
    server answers again); what is still unsent at the end is written to the run's local
    folder (`local_dir`, beside its checkpoints), and the model is saved there too.
    """

    def __init__(self, uri: str, experiment: str, run_id: str | None = None, output_dir: Path | None = None):
        """Open the store at uri (a SQLite one is created whole) and the experiment, created if missing.

        Args:
            uri: the tracking URI.
            experiment: the experiment's name.
            run_id: an existing run to write to (a sweep's parent, for its workers); None until
                `create` or `reopen`.
            output_dir: the folder of the runs' local folders (output_dir), where a run's own
                folder OUTPUT_DIR/RUN_ID keeps what a tracking server that went away missed;
                None for a record without one (a sweep's parent).
        """
        from mlflow.tracking import MlflowClient

        check_reachable(uri)
        create_sqlite_store_whole(uri)
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        self.experiment_id = retry_while_locked(experiment_id_of, self.client, experiment)
        self.run_id: str | None = run_id
        self._run_name = ""
        self.buffer = OfflineBuffer(uri, self.client)
        self._output_dir = Path(output_dir).resolve() if output_dir is not None else None
        self.ended: str | None = None  # the status the run was closed with
        self.refused: list[str] = []  # artifacts the artifact store refused (disk full, no permission)
        self.refusal: str | None = None  # the first such error, as the user should read it
        self._system = None  # the SystemMetrics monitor while the run is watched

    @property
    def local_dir(self) -> Path | None:
        """The run's local folder (OUTPUT_DIR/RUN_ID): where what the server missed is saved."""
        return self.buffer.local_dir

    def _now_writing(self, run_id: str) -> None:
        self.run_id = run_id
        if self._output_dir is not None:
            self.buffer.local_dir = self._output_dir / run_id

    @property
    def offline_since(self) -> str | None:
        """Why the tracking server stopped answering, while it does not; None while it answers."""
        return self.buffer.offline_since

    def start(self, name: str, params: dict[str, str], tags: dict[str, str], config_yaml: str,
              overrides: list[str]) -> str:
        """A new run of `dlrun train` with its config.yaml and overrides.txt; its id."""
        self.create(name, params, tags, source="dlrun train")
        self.log_text(hide_passwords(config_yaml), "config.yaml")
        self.log_text(hide_passwords("\n".join(overrides) + ("\n" if overrides else "")), "overrides.txt")
        return self.run_id

    def create(self, name: str, params: dict[str, str], tags: dict[str, str], source: str) -> str:
        """A new RUNNING run with its params and tags; `source` names the dlrun command. A database URL's
        password (in tracking.uri, a sweep's storage, the command line) is recorded as ***."""
        from mlflow.entities import Param, RunTag

        params = {key: hide_passwords(str(value)) for key, value in params.items()}
        tags = {key: hide_passwords(str(value)) for key, value in tags.items()}
        tags[PROCESS_TAG] = this_process()  # tells `dlrun runs` when a RUNNING run lost its process
        run = retry_while_locked(self.client.create_run, self.experiment_id, tags=tags, run_name=name)
        self._now_writing(run.info.run_id)
        self._run_name = run.info.run_name
        items = [Param(k, v) for k, v in params.items()]
        source_tag = [RunTag("mlflow.source.name", source)]  # with the first params: one write fewer
        for start in range(0, max(len(items), 1), 100):  # MLflow takes at most 100 params a batch
            retry_while_locked(self.client.log_batch, self.run_id, params=items[start : start + 100],
                               tags=source_tag if start == 0 else [])
        return self.run_id

    def reopen(self, run_id: str) -> str:
        """Continue an existing run: its status goes back to RUNNING."""
        self._now_writing(run_id)
        retry_while_locked(self.client.update_run, run_id, status="RUNNING")
        retry_while_locked(self.client.set_tag, run_id, PROCESS_TAG, this_process())
        self._run_name = retry_while_locked(self.client.get_run, run_id).info.run_name
        return run_id

    @property
    def run_name(self) -> str:
        """Known from the start, so that the summary needs no server at the end."""
        return self._run_name

    def log_text(self, text: str, artifact_file: str) -> None:
        self._store(artifact_file, self.client.log_text, self.run_id, text, artifact_file)

    def log_inputs(self, inputs: list) -> None:
        """The run's dataset inputs (tracking/datasets.py); noted as not sent while the server is gone."""
        self.buffer.send("dataset inputs", _log_inputs, self.client, self.run_id, inputs)

    def watch_system(self, resume: bool) -> None:
        """Log MLflow's system metrics (CPU, memory, GPU where present) until the run ends; `resume`: the run
        is continued, so that its steps follow the ones it has."""
        from dlrun.tracking.system_metrics import SystemMetrics

        if self.buffer.server_answers():
            self._system = SystemMetrics(self.run_id, self.uri, resume)

    def log_metrics(self, metrics: dict[str, float], step: int, send: bool = True) -> None:
        """One step's metrics; kept and sent later while the server does not answer, or until
        `flush_metrics` when send is False."""
        self.buffer.add_metrics(self.run_id, metrics, step, send=send)

    def flush_metrics(self) -> None:
        """Send the metrics kept so far (in as few batches as MLflow takes)."""
        self.buffer.flush()

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self.buffer.send("tags " + ", ".join(tags), self.client.log_batch, self.run_id,
                         tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_file(self, path: Path | str, artifact_path: str | None = None) -> None:
        """One local file as an artifact, under artifact_path (plots/learning_curves.png)."""
        self._store(f"{artifact_path or '.'}/{Path(path).name}", self.client.log_artifact, self.run_id, str(path),
                    artifact_path)

    def metric_history(self, keys: list[str]) -> list[dict[str, float]]:
        """The run's per-epoch values of keys as stored (index = step = epoch, {} where none was logged);
        a resumed run's epochs from before the interruption included. The latest value wins a step."""
        by_step: dict[int, dict[str, float]] = {}
        for key in keys:
            history = retry_while_locked(self.client.get_metric_history, self.run_id, key)
            for metric in sorted(history, key=lambda m: m.timestamp):
                by_step.setdefault(metric.step, {})[key] = metric.value
        return [by_step.get(step, {}) for step in range(max(by_step) + 1)] if by_step else []

    def log_checkpoints(self, folder: Path) -> None:
        if folder.is_dir() and any(folder.iterdir()):
            self._store("checkpoints/", self.client.log_artifacts, self.run_id, str(folder), "checkpoints")

    def log_model(self, model: Any, input_example, requirements: list[str], text=None) -> str | None:
        """Log the serving module as an MLflow 3 LoggedModel named 'model'; its URI. With the server
        gone, the artifact store refusing it (disk full, no permission) or the store still locked, the
        model is saved in the run's local folder instead and that path returned; None if that fails too.

        Not retried while locked: each call makes a new LoggedModel. The format is pt2 (a torch.export
        program) everywhere: MLflow would pickle it for a Databricks store, which dlrun never loads.

        Args:
            model: the ServingModel.
            input_example: a few raw rows (a text run: a few raw texts).
            requirements: the model's pip requirements.
            text: a text run's TextServing (dlrun.serving.text_model): the model is then a pyfunc model
                that tokenizes strings (dlrun.serving.text_logging), not mlflow.pytorch's.
        """
        import mlflow

        if self.buffer.server_answers():
            try:
                with active_store(self.uri), mlflow.start_run(run_id=self.run_id), _requirements_unchecked():
                    info = _log_served(model, input_example, requirements, text)
                self.set_tags({"dlrun.model_uri": info.model_uri})
                return info.model_uri
            except Exception as error:
                if is_storage_error(error) or is_database_locked(error):
                    self._refuse("model", error)
                elif is_connection_error(error):
                    self.buffer.go_offline(error)
                else:
                    raise
        return self._save_model_locally(model, input_example, requirements, text)

    def _save_model_locally(self, model: Any, input_example, requirements: list[str], text=None) -> str | None:
        if self.local_dir is None:  # never a folder of the user's: a fresh one, named where it is reported
            local = Path(tempfile.mkdtemp(prefix="dlrun-model-")) / "model"
        else:
            local = self.local_dir / "model"
            shutil.rmtree(local, ignore_errors=True)  # a model saved by an earlier, failed attempt of this run
        try:
            with _requirements_unchecked():
                _save_served(model, input_example, requirements, text, local)
        except Exception as error:
            if not is_storage_error(error):
                raise
            self._refuse(f"a local copy of the model in {local} ({_first_line(error)})", error)
            return None
        self.buffer.saved_locally.append(f"the model in {local}")
        return str(local)

    def end(self, status: str) -> None:
        """Close the run as FINISHED, FAILED or KILLED; with the server still gone, the unsent metrics
        are written to the run's local folder."""
        self.ended = status
        self.buffer.try_now()
        if self._system is not None:  # before the status: a closed run takes no more metrics
            self._system.stop(wait=self.buffer.server_answers())
            self._system = None
        if self.buffer.server_answers():
            self.buffer.send("the run's status", self.client.set_terminated, self.run_id, status=status)
        if self.buffer.offline_since is not None:
            self.buffer.save_unsent(self.run_id, status)

    def note(self) -> str | None:
        """What did not reach the tracking server, and where it is instead; None when all did."""
        return self.buffer.note()

    def artifact_location(self) -> str:
        """Where the run's artifacts go (its artifact URI), for messages."""
        try:
            return self.client.get_run(self.run_id).info.artifact_uri
        except Exception:  # a message must not fail on the server that refused
            return "the run's artifact store"

    def _store(self, what: str, call, *args, **kwargs) -> None:
        """An artifact write: an artifact store that refuses it (disk full, no permission) does not stop
        training; the refusal is kept (`refused`, `refusal`) and the caller decides the run's status."""
        try:
            self.buffer.send(what, call, *args, **kwargs)
        except Exception as error:
            if not is_storage_error(error):
                raise
            self._refuse(what, error)

    def _refuse(self, what: str, error: BaseException) -> None:
        self.refused.append(what)
        if self.refusal is None:
            self.refusal = _first_line(error)


def _log_inputs(client, run_id: str, inputs: list) -> None:
    """Two processes that log the same new dataset at once (the first trials of a sweep with n_jobs) can
    both find it missing and both insert it; the second insert breaks the store's unique constraint and
    is rolled back. Tried again, the dataset is found and shared."""
    try:
        client.log_inputs(run_id, datasets=inputs)
    except Exception as error:
        if not _is_duplicate_dataset(error):
            raise
        client.log_inputs(run_id, datasets=inputs)


def _is_duplicate_dataset(error: BaseException) -> bool:
    text = str(error)
    return "datasets" in text and ("UNIQUE constraint failed" in text or "duplicate key value" in text)


@contextmanager
def _requirements_unchecked():
    """Saving a model, MLflow compares its pip requirements with the installed packages to warn of a
    mismatch, scanning every installed distribution (about 0.6 s, once a process). dlrun's requirements
    are the installed versions themselves, so the check is skipped while dlrun saves a model."""
    import mlflow.utils.environment as environment

    check = getattr(environment, "warn_dependency_requirement_mismatches", None)
    if check is None:  # another MLflow version: its own check runs
        yield
        return
    environment.warn_dependency_requirement_mismatches = lambda requirements: None
    try:
        yield
    finally:
        environment.warn_dependency_requirement_mismatches = check


def _log_served(model: Any, input_example, requirements: list[str], text):
    """The served model in the active MLflow run: mlflow.pytorch's pt2 model, or a text run's pyfunc model."""
    if text is not None:
        from dlrun.serving.text_logging import log_text_model

        return log_text_model(model, text, input_example, requirements)
    import mlflow.pytorch

    # MLflow's check of the input example loads the saved program again and predicts it (about 0.7 s a
    # model, and only a warning if it fails); dlrun's tests load and predict the served model instead.
    return mlflow.pytorch.log_model(model, name="model", input_example=input_example, pip_requirements=requirements,
                                    serialization_format="pt2", validate_serving_input=False)


def _save_served(model: Any, input_example, requirements: list[str], text, path: Path) -> None:
    """The same model saved in the local folder path."""
    if text is not None:
        from dlrun.serving.text_logging import save_text_model

        save_text_model(model, text, input_example, requirements, path)
        return
    import mlflow.pytorch

    mlflow.pytorch.save_model(model, str(path), input_example=input_example, pip_requirements=requirements,
                              serialization_format="pt2")
