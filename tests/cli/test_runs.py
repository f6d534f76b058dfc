"""`dlrun runs`: the table of recorded runs, and its errors."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from dlrun.cli import app
from tests.conftest import run_dlrun

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
