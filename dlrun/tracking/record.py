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


class RunRecord:
    """One MLflow run, written through MlflowClient so nothing depends on global state."""

    def __init__(self, uri: str, experiment: str):
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(experiment)
        self.experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        self.run_id: str | None = None

    def start(self, name: str, params: dict[str, str], tags: dict[str, str], config_yaml: str,
              overrides: list[str]) -> str:
        from mlflow.entities import Param, RunTag

        run = self.client.create_run(self.experiment_id, tags=tags, run_name=name)
        self.run_id = run.info.run_id
        items = [Param(k, v) for k, v in params.items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params a batch
            self.client.log_batch(self.run_id, params=items[start : start + 100])
        self.log_text(config_yaml, "config.yaml")
        self.log_text("\n".join(overrides) + ("\n" if overrides else ""), "overrides.txt")
        self.client.log_batch(self.run_id, tags=[RunTag("mlflow.source.name", "dlrun train")])
        return self.run_id

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
