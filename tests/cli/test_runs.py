"""`dlrun runs`: the table of recorded runs, and its errors."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
from typer.testing import CliRunner

from dlrun.cli import app
from tests.conftest import dlrun_command, mlflow_runs, run_dlrun

runner = CliRunner()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("runs")
    for model in ("linear", "mlp"):
        done = run_dlrun("train", "data=iris", f"model={model}", "trainer.max_epochs=1",
                         "trainer.enable_progress_bar=false", "tracking.log_model=false", cwd=folder)
        assert done.returncode == 0, done.stderr[-2000:]
    return folder


def test_runs_lists_each_run_with_choices_and_metrics(store, monkeypatch):
    monkeypatch.chdir(store)
    result = runner.invoke(app, ["runs"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].split()[:4] == ["run_id", "status", "start", "duration"]
    assert len(lines) == 3
    assert "model=mlp" in lines[1] and "model=linear" in lines[2], "newest first"
    assert all("FINISHED" in line and "test/acc=" in line for line in lines[1:])


def test_runs_filter_sort_and_limit(store, monkeypatch):
    monkeypatch.chdir(store)
    only_linear = runner.invoke(app, ["runs", "--filter", "params.model = 'linear'"]).output
    assert "model=linear" in only_linear and "model=mlp" not in only_linear
    oldest = runner.invoke(app, ["runs", "--sort", "start_time ASC", "--limit", "1"]).output.strip().splitlines()
    assert len(oldest) == 2 and "model=linear" in oldest[1]


@pytest.mark.parametrize("args, message", [
    (["--filter", "params.model ="], "bad --filter or --sort"),
    (["--experiment", "nope"], "no experiment 'nope'"),
])
def test_runs_bad_input_exits_2(store, monkeypatch, args, message):
    monkeypatch.chdir(store)
    result = runner.invoke(app, ["runs", *args])
    assert result.exit_code == 2 and message in result.output


def test_runs_without_a_store_creates_none(workdir):
    result = runner.invoke(app, ["runs"])
    assert result.exit_code == 2 and "no MLflow store" in result.output
    assert not (workdir / "mlflow.db").exists()


def test_a_run_whose_process_was_killed_outright_shows_as_lost_and_resumes_once_it_is_gone(workdir):
    process = subprocess.Popen([*dlrun_command(), "train", "trainer.max_epochs=8",
                                "trainer.enable_progress_bar=false", "tracking.log_model=false"],
                               cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not list((workdir / "outputs").glob("*/checkpoints/last.ckpt")):
            assert process.poll() is None and time.monotonic() < deadline, "no checkpoint was written"
            time.sleep(0.2)
        process.send_signal(signal.SIGSTOP)  # alive but paused: it cannot finish while it is checked
        alive = run_dlrun("runs", cwd=workdir)
        assert "RUNNING" in alive.stdout and "LOST" not in alive.stdout  # its process still runs
        run_id = alive.stdout.splitlines()[1].split()[0]
        twice = run_dlrun("resume", run_id, cwd=workdir)  # a second writer of the same run is refused
        assert twice.returncode == 2 and "is still running, in process" in twice.stderr, twice.stderr
    finally:
        process.kill()  # SIGKILL: the run cannot close itself
        process.wait(timeout=60)
    _, (run,) = mlflow_runs(workdir / "mlflow.db")
    assert run.info.status == "RUNNING"

    shown = run_dlrun("runs", cwd=workdir)
    assert shown.returncode == 0, shown.stderr
    (row,) = [line for line in shown.stdout.splitlines() if line.startswith(run.info.run_id)]
    assert row.split()[1] == "LOST"
    assert "dlrun resume RUN_ID" in shown.stdout

    resumed = run_dlrun("resume", run.info.run_id, cwd=workdir)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    _, (run,) = mlflow_runs(workdir / "mlflow.db")
    assert run.info.status == "FINISHED"
    assert " FINISHED " in run_dlrun("runs", cwd=workdir).stdout
