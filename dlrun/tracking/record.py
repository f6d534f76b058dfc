"""The MLflow record of one dlrun train: created after validation, closed with a status.

The run is created only once the config is valid, the data loaded and the model
built, so that bad input never leaves a half-written run behind.
"""

from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any

def tracking_uri(configured: str | None) -> str:
    """tracking.uri, else $MLFLOW_TRACKING_URI, else the embedded SQLite store here.

    The default is MLflow's own (sqlite:///mlflow.db) made absolute: MLflow caches
    stores by URI, so a relative one would follow the first folder a process used.
    """
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


@contextmanager
def active_store(uri: str):
    """Point MLflow's fluent API at uri for a moment, then restore what was there.

    mlflow.set_tracking_uri also writes $MLFLOW_TRACKING_URI, which would leak into
    every later run of the same process (tests, sweeps); so both are put back.
    """
    import mlflow
    from mlflow.tracking._tracking_service import utils

    previous, environment = utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
        if environment is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = environment


PROCESS_TAG = "dlrun.process"  # the process that writes the run (dlrun.processes.this_process)


def experiment_id_of(client, name: str) -> str:
    """The id of the experiment called name, created if missing. Two processes may both find it
    missing and both create it: the loser's create fails, and the winner's experiment is taken."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


LOCKED_RETRY_DELAYS_S = (0.5, 1, 2, 4, 8, 16)


def is_database_locked(error: BaseException) -> bool:
    return "database is locked" in str(error)


def retry_while_locked(call, *args, **kwargs):
    """call(*args, **kwargs), tried again with a growing pause while SQLite says "database is locked".

    MLflow's SQLite store waits 20 s for a lock (busy_timeout) and then fails; many processes
    writing to one store (a sweep with n_jobs, concurrent runs) can wait longer than that.
    """
    import sys
    import time

    for delay in LOCKED_RETRY_DELAYS_S:
        try:
            return call(*args, **kwargs)
        except Exception as error:
            if not is_database_locked(error):
                raise
            print(f"dlrun: the tracking store is locked by another process; trying again in {delay} s.",
                  file=sys.stderr)
            time.sleep(delay)
    return call(*args, **kwargs)


def _create_sqlite_store_whole(uri: str) -> None:
    """Create a new SQLite store aside and move it in place once its tables exist.

    MLflow builds a new store through a dozen schema migrations; a Ctrl-C among
    them would leave a store that every later command fails on.
    """
    if not uri.startswith("sqlite:///"):
        return
    path = Path(uri.removeprefix("sqlite:///"))
    if path.exists():
        return
    from mlflow.tracking import MlflowClient

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    MlflowClient(tracking_uri=f"sqlite:///{partial}").search_experiments(max_results=1)
    try:
        os.link(partial, path)  # atomic, and never replaces a store another process made meanwhile
    except FileExistsError:
        pass
    finally:
        partial.unlink()


STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}
STORAGE_MESSAGES = ("No space left on device", "Disk quota exceeded", "Permission denied", "Read-only file system")


def is_storage_error(error: BaseException) -> bool:
    """True for a write the storage refused: a full disk, a quota, no permission, a read-only file system
    (locally, as OSError; from a tracking server's artifact store, in its message)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:  # MLflow may wrap the OSError
        if isinstance(error, OSError) and error.errno in STORAGE_ERRNOS:
            return True
        if any(mark in str(error) for mark in STORAGE_MESSAGES):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200] if text else ''}"


class RunRecord:
    """One MLflow run, written through MlflowClient so nothing depends on global state.

    Once the run exists, a tracking server that stops answering does not stop training: the
    record goes offline, keeps each epoch's metrics and sends them when the server answers
    again (tried every 30 s); what is still unsent at the end is written to the run's local
    folder (`local_dir`, beside its checkpoints), and the model is saved there too.
    """

    RETRY_EVERY_S = 30.0

    def __init__(self, uri: str, experiment: str):
        from mlflow.tracking import MlflowClient

        from dlrun.tracking.server import check_reachable

        check_reachable(uri)
        _create_sqlite_store_whole(uri)
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        self.experiment_id = retry_while_locked(experiment_id_of, self.client, experiment)
        self.run_id: str | None = None
        self._run_name = ""
        self.local_dir: Path | None = None  # the run's local folder (OUTPUT_DIR/RUN_ID), set by train
        self.offline_since: str | None = None  # why the server stopped answering, while it does not
        self._unsent: list[tuple[int, int, dict[str, float]]] = []  # (step, time ms, metrics)
        self._not_sent: list[str] = []  # artifacts and tags given up on
        self._retry_at = 0.0
        self._saved_locally: list[str] = []
        self.ended: str | None = None  # the status the run was closed with
        self.refused: list[str] = []  # artifacts the artifact store refused (disk full, no permission)
        self.refusal: str | None = None  # the first such error, as the user should read it

    def start(self, name: str, params: dict[str, str], tags: dict[str, str], config_yaml: str,
              overrides: list[str]) -> str:
        self.create(name, params, tags, source="dlrun train")
        self.log_text(config_yaml, "config.yaml")
        self.log_text("\n".join(overrides) + ("\n" if overrides else ""), "overrides.txt")
        return self.run_id

    def create(self, name: str, params: dict[str, str], tags: dict[str, str], source: str) -> str:
        """A new RUNNING run with its params and tags; `source` names the dlrun command."""
        from mlflow.entities import Param, RunTag

        from dlrun.processes import this_process

        tags = {**tags, PROCESS_TAG: this_process()}  # tells `dlrun runs` when a RUNNING run lost its process
        run = retry_while_locked(self.client.create_run, self.experiment_id, tags=tags, run_name=name)
        self.run_id, self._run_name = run.info.run_id, run.info.run_name
        items = [Param(k, v) for k, v in params.items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params a batch
            retry_while_locked(self.client.log_batch, self.run_id, params=items[start : start + 100])
        retry_while_locked(self.client.log_batch, self.run_id, tags=[RunTag("mlflow.source.name", source)])
        return self.run_id

    def reopen(self, run_id: str) -> str:
        """Continue an existing run: its status goes back to RUNNING."""
        from dlrun.processes import this_process

        self.run_id = run_id
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

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.utils.time import get_current_time_millis

        self._unsent.append((step, get_current_time_millis(), {k: float(v) for k, v in metrics.items()}))
        if self._back_online():
            self._send_metrics()

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self._send("tags " + ", ".join(tags), self.client.log_batch, self.run_id,
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

    def log_model(self, model: Any, input_example, requirements: list[str]) -> str | None:
        """Log the serving module as an MLflow 3 LoggedModel named 'model'; its URI. With the server
        gone, the artifact store refusing it (disk full, no permission) or the store still locked, the
        model is saved in the run's local folder instead and that path returned; None if that fails too.

        Not retried while locked: each call makes a new LoggedModel. The format is pt2 (a torch.export
        program) everywhere: MLflow would pickle it for a Databricks store, which dlrun never loads."""
        import mlflow
        import mlflow.pytorch

        from dlrun.tracking.server import is_connection_error

        if self._back_online():
            try:
                with active_store(self.uri), mlflow.start_run(run_id=self.run_id):
                    info = mlflow.pytorch.log_model(model, name="model", input_example=input_example,
                                                    pip_requirements=requirements, serialization_format="pt2")
                self.set_tags({"dlrun.model_uri": info.model_uri})
                return info.model_uri
            except Exception as error:
                if is_storage_error(error) or is_database_locked(error):
                    self._refuse("model", error)
                elif is_connection_error(error):
                    self._go_offline(error)
                else:
                    raise
        return self._save_model_locally(model, input_example, requirements)

    def _save_model_locally(self, model: Any, input_example, requirements: list[str]) -> str | None:
        import shutil
        import tempfile

        import mlflow.pytorch

        if self.local_dir is None:  # never a folder of the user's: a fresh one, named where it is reported
            local = Path(tempfile.mkdtemp(prefix="dlrun-model-")) / "model"
        else:
            local = self.local_dir / "model"
            shutil.rmtree(local, ignore_errors=True)  # a model saved by an earlier, failed attempt of this run
        try:
            mlflow.pytorch.save_model(model, str(local), input_example=input_example, pip_requirements=requirements,
                                      serialization_format="pt2")
        except Exception as error:
            if not is_storage_error(error):
                raise
            self._refuse(f"a local copy of the model in {local} ({_first_line(error)})", error)
            return None
        self._saved_locally.append(f"the model in {local}")
        return str(local)

    def end(self, status: str) -> None:
        """Close the run as FINISHED, FAILED or KILLED; with the server still gone, the unsent metrics
        are written to the run's local folder."""
        self.ended = status
        self._retry_at = 0.0
        if self._back_online():
            self._send("the run's status", self.client.set_terminated, self.run_id, status=status)
        if self.offline_since is not None:
            self._save_unsent(status)

    def note(self) -> str | None:
        """What did not reach the tracking server, and where it is instead; None when all did."""
        if not (self._saved_locally or self._not_sent):
            return None
        parts = [f"the tracking server at {self.uri} stopped answering ({self.offline_since or 'then came back'})"]
        parts += [f"saved locally: {', '.join(self._saved_locally)}"] if self._saved_locally else []
        parts += [f"not sent: {', '.join(self._not_sent)}"] if self._not_sent else []
        return "; ".join(parts)

    def _send(self, what: str, call, *args, **kwargs) -> None:
        """A write that must not stop training: while the server is gone, it is noted as not sent."""
        from dlrun.tracking.server import is_connection_error

        if not self._back_online():
            self._not_sent.append(what)
            return
        try:
            retry_while_locked(call, *args, **kwargs)
        except Exception as error:
            if not is_connection_error(error):
                raise
            self._go_offline(error)
            self._not_sent.append(what)

    def _store(self, what: str, call, *args, **kwargs) -> None:
        """An artifact write: an artifact store that refuses it (disk full, no permission) does not stop
        training; the refusal is kept (`refused`, `refusal`) and the caller decides the run's status."""
        try:
            self._send(what, call, *args, **kwargs)
        except Exception as error:
            if not is_storage_error(error):
                raise
            self._refuse(what, error)

    def artifact_location(self) -> str:
        """Where the run's artifacts go (its artifact URI), for messages."""
        try:
            return self.client.get_run(self.run_id).info.artifact_uri
        except Exception:  # a message must not fail on the server that refused
            return "the run's artifact store"

    def _refuse(self, what: str, error: BaseException) -> None:
        self.refused.append(what)
        if self.refusal is None:
            self.refusal = _first_line(error)

    def _send_metrics(self) -> None:
        from mlflow.entities import Metric

        from dlrun.tracking.server import is_connection_error

        try:
            while self._unsent:
                step, when, metrics = self._unsent[0]
                retry_while_locked(self.client.log_batch, self.run_id,
                                   metrics=[Metric(k, v, when, step) for k, v in metrics.items()])
                self._unsent.pop(0)
        except Exception as error:
            if not is_connection_error(error):
                raise
            self._go_offline(error)

    def _back_online(self) -> bool:
        """True while the server answers; offline, one attempt every RETRY_EVERY_S to send what waits."""
        import sys
        import time

        if self.offline_since is None:
            return True
        if time.monotonic() < self._retry_at:
            return False
        reason, self.offline_since = self.offline_since, None
        self._send_metrics()
        if self.offline_since is None:
            print(f"dlrun: the tracking server at {self.uri} answers again; the kept metrics are sent.",
                  file=sys.stderr)
            return True
        self.offline_since = reason
        return False

    def _go_offline(self, error: BaseException) -> None:
        import sys
        import time

        if self.offline_since is None:
            print(f"dlrun: warning: the tracking server at {self.uri} stopped answering "
                  f"({type(error).__name__}). Training goes on; metrics are kept and sent when it answers "
                  f"again; checkpoints stay in {self.local_dir or 'the output folder'}.", file=sys.stderr)
        self.offline_since = f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"
        self._retry_at = time.monotonic() + self.RETRY_EVERY_S

    def _save_unsent(self, status: str) -> None:
        import json

        folder = self.local_dir or Path.cwd()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "unsent_record.json"
        path.write_text(json.dumps({"tracking_uri": self.uri, "run_id": self.run_id, "status": status,
                                    "metrics": [{"step": s, "timestamp": t, "values": m} for s, t, m in self._unsent],
                                    "not_sent": self._not_sent}, indent=2))
        self._saved_locally.append(f"{len(self._unsent)} epochs of metrics and the run's status ({status}) in {path}")
