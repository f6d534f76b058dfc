"""The MLflow record of one dlrun train: created after validation, closed with a status.

The run is created only once the config is valid, the data loaded and the model
built, so that bad input never leaves a half-written run behind.
"""

from __future__ import annotations

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


class RunRecord:
    """One MLflow run, written through MlflowClient so nothing depends on global state."""

    def __init__(self, uri: str, experiment: str):
        from mlflow.tracking import MlflowClient

        _create_sqlite_store_whole(uri)
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(experiment)
        self.experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        self.run_id: str | None = None

    def start(self, name: str, params: dict[str, str], tags: dict[str, str], config_yaml: str,
              overrides: list[str]) -> str:
        self.create(name, params, tags, source="dlrun train")
        self.log_text(config_yaml, "config.yaml")
        self.log_text("\n".join(overrides) + ("\n" if overrides else ""), "overrides.txt")
        return self.run_id

    def create(self, name: str, params: dict[str, str], tags: dict[str, str], source: str) -> str:
        """A new RUNNING run with its params and tags; `source` names the dlrun command."""
        from mlflow.entities import Param, RunTag

        run = self.client.create_run(self.experiment_id, tags=tags, run_name=name)
        self.run_id = run.info.run_id
        items = [Param(k, v) for k, v in params.items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params a batch
            self.client.log_batch(self.run_id, params=items[start : start + 100])
        self.client.log_batch(self.run_id, tags=[RunTag("mlflow.source.name", source)])
        return self.run_id

    def reopen(self, run_id: str) -> str:
        """Continue an existing run: its status goes back to RUNNING."""
        self.run_id = run_id
        self.client.update_run(run_id, status="RUNNING")
        return run_id

    @property
    def run_name(self) -> str:
        return self.client.get_run(self.run_id).info.run_name

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric
        from mlflow.utils.time import get_current_time_millis

        now = get_current_time_millis()
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_file(self, path: Path | str, artifact_path: str | None = None) -> None:
        """One local file as an artifact, under artifact_path (plots/learning_curves.png)."""
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def metric_history(self, keys: list[str]) -> list[dict[str, float]]:
        """The run's per-epoch values of keys as stored (index = step = epoch, {} where none was logged);
        a resumed run's epochs from before the interruption included. The latest value wins a step."""
        by_step: dict[int, dict[str, float]] = {}
        for key in keys:
            for metric in sorted(self.client.get_metric_history(self.run_id, key), key=lambda m: m.timestamp):
                by_step.setdefault(metric.step, {})[key] = metric.value
        return [by_step.get(step, {}) for step in range(max(by_step) + 1)] if by_step else []

    def log_checkpoints(self, folder: Path) -> None:
        if folder.is_dir() and any(folder.iterdir()):
            self.client.log_artifacts(self.run_id, str(folder), "checkpoints")

    def log_model(self, model: Any, input_example, requirements: list[str]) -> str:
        """Log the serving module as an MLflow 3 LoggedModel named 'model'; its URI."""
        import mlflow
        import mlflow.pytorch

        with active_store(self.uri), mlflow.start_run(run_id=self.run_id):
            info = mlflow.pytorch.log_model(
                model, name="model", input_example=input_example, pip_requirements=requirements
            )
        self.set_tags({"dlrun.model_uri": info.model_uri})
        return info.model_uri

    def end(self, status: str) -> None:
        """Close the run as FINISHED, FAILED or KILLED."""
        self.client.set_terminated(self.run_id, status=status)
