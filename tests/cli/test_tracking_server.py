"""dlrun against a real `mlflow server` (SQLite backend, proxied artifacts) on 127.0.0.1:
train, a sweep, reproduce and eval through MLFLOW_TRACKING_URI; a server that cannot be
reached; a server that goes away in the middle of a run."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import dlrun_command, run_dlrun

FAST = ["data=iris", "trainer.enable_progress_bar=false"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """An `mlflow server` in its own folder (its backend store: server.db there, or `backend`), stopped with stop()."""

    def __init__(self, folder: Path, backend: str | None = None):
        self.folder = folder
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        mlflow = shutil.which("mlflow") or "mlflow"
        self.process = subprocess.Popen(
            [mlflow, "server", "--backend-store-uri", backend or f"sqlite:///{folder / 'server.db'}",
             "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", "1"],
            cwd=folder, stdout=open(folder / "server.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_until_up()

    def _wait_until_up(self) -> None:
        import requests

        deadline = time.time() + 180
        while time.time() < deadline:
            assert self.process.poll() is None, (self.folder / "server.log").read_text()[-2000:]
            try:
                if requests.get(f"{self.uri}/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise AssertionError("the mlflow server did not start")

    def stop(self) -> None:
        import os
        import signal

        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)  # the server and its worker processes
            self.process.wait(timeout=30)

    def client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.uri)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    running = Server(tmp_path_factory.mktemp("mlflow-server"))
    yield running
    running.stop()


def run_id_of(stdout: str) -> str:
    last = stdout.strip().splitlines()[-1]
    assert last.startswith("run_id: "), stdout
    return last.removeprefix("run_id: ")


def test_train_reproduce_eval_and_a_sweep_against_a_tracking_server(server, workdir):
    env = {"MLFLOW_TRACKING_URI": server.uri}
    trained = run_dlrun("train", *FAST, "trainer.max_epochs=3", cwd=workdir, env=env)
    assert trained.returncode == 0, trained.stderr
    run_id = run_id_of(trained.stdout)
    assert not (workdir / "mlflow.db").exists()  # everything went to the server
    run = server.client().get_run(run_id)
    assert run.info.status == "FINISHED" and "test/acc" in run.data.metrics
    artifacts = {a.path for a in server.client().list_artifacts(run_id)}
    assert {"config.yaml", "checkpoints"} <= artifacts

    reproduced = run_dlrun("reproduce", run_id, cwd=workdir, env=env)
    assert reproduced.returncode == 0, reproduced.stdout + reproduced.stderr
    assert "metrics identical: yes" in reproduced.stdout

    evaluated = run_dlrun("eval", run_id, cwd=workdir, env=env)
    assert evaluated.returncode == 0, evaluated.stderr
    assert f"test/acc={run.data.metrics['test/acc']:.6g}" in evaluated.stdout

    (workdir / "small.yaml").write_text(
        "overrides: [data=iris, trainer.max_epochs=2, tracking.log_model=false]\n"
        "n_trials: 2\nsampler: random\nparams:\n  model.width: choice(8, 16)\n")
    swept = run_dlrun("sweep", "small.yaml", cwd=workdir, env=env)
    assert swept.returncode == 0, swept.stderr
    parent_id = run_id_of(swept.stdout)
    found = server.client().search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    assert len(found) == 2
    assert (workdir / "optuna" / "small.journal").is_file()  # a remote store: the study's journal is local


def test_an_unreachable_server_is_a_clear_error_before_training(workdir):
    started = time.time()
    result = run_dlrun("train", *FAST, cwd=workdir, env={"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"})
    elapsed = time.time() - started
    assert result.returncode == 2, result.stderr
    assert "cannot reach the MLflow tracking server at http://127.0.0.1:" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (workdir / "outputs").exists() and not (workdir / "mlflow.db").exists()
    assert elapsed < 60  # not MLflow's minutes of retries (the check itself gives up after 5 s)
    for command in (["runs"], ["eval", "0" * 32]):
        other = run_dlrun(*command, cwd=workdir, env={"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"})
        assert other.returncode == 2 and "cannot reach the MLflow tracking server" in other.stderr


def test_a_server_that_goes_away_loses_nothing_trained(tmp_path, workdir):
    server = Server(tmp_path)
    try:
        epochs = 200  # enough to go on well after the server is stopped
        process = subprocess.Popen([*dlrun_command(), "train", *FAST, f"trainer.max_epochs={epochs}"], cwd=workdir,
                                   env={**_clean_env(), "MLFLOW_TRACKING_URI": server.uri},
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 300
        while not list((workdir / "outputs").glob("*/checkpoints/last.ckpt")):  # some epochs are recorded
            assert time.time() < deadline and process.poll() is None, process.communicate()
            time.sleep(0.2)
        run_id = next((workdir / "outputs").iterdir()).name
        # The epochs' metrics are sent right after the checkpoint is written: wait for that first send.
        while not (recorded := len(server.client().get_metric_history(run_id, "val/loss"))):
            assert time.time() < deadline and process.poll() is None, process.communicate()
            time.sleep(0.2)
    finally:
        server.stop()
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, out + err
    assert "stopped answering" in err and "Training goes on" in err
    local = workdir / "outputs" / run_id
    assert (local / "checkpoints" / "best.ckpt").is_file() and (local / "checkpoints" / "last.ckpt").is_file()
    assert (local / "model" / "MLmodel").is_file()
    unsent = json.loads((local / "unsent_record.json").read_text())
    assert unsent["status"] == "FINISHED" and unsent["run_id"] == run_id
    steps = [m["step"] for m in unsent["metrics"]]
    assert steps and max(steps) >= epochs - 2 and min(steps) >= recorded - 1  # the epochs after the server left
    assert f"warning: the tracking server at {server.uri} stopped answering" in out
    assert str(local / "model") in out and str(local / "unsent_record.json") in out
    assert run_id_of(out) == run_id

    import mlflow.pyfunc
    from sklearn.datasets import load_iris

    predictions = mlflow.pyfunc.load_model(str(local / "model")).predict(load_iris().data.astype("float32"))
    assert len(predictions) == 150


def _clean_env() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
