"""A run id is enough: eval, reproduce, diff, and the safety of stored configs."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from dlrun.cli import app
from dlrun.tracking.system_metrics import model_metrics
from tests.conftest import mlflow_runs, run_dlrun

runner = CliRunner()
TRAIN = ("train", "data=iris", "trainer.max_epochs=4", "trainer.enable_progress_bar=false")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lifecycle")
    done = run_dlrun(*TRAIN, cwd=folder)
    assert done.returncode == 0, done.stderr[-2000:]
    return folder, done.stdout.strip().splitlines()[-1].removeprefix("run_id: ")


def test_eval_equals_the_logged_test_metrics(recorded, monkeypatch):
    folder, run_id = recorded
    monkeypatch.chdir(folder)
    result = runner.invoke(app, ["eval", run_id])
    assert result.exit_code == 0, result.output
    scored = dict(item.split("=") for item in result.output.split())
    _, runs = mlflow_runs(folder / "mlflow.db")
    logged = next(r for r in runs if r.info.run_id == run_id).data.metrics
    assert float(scored["test/acc"]) == pytest.approx(logged["test/acc"], abs=1e-6)
    assert float(scored["test/loss"]) == pytest.approx(logged["test/loss"], abs=1e-6)


def test_eval_on_other_data_uses_the_served_model(recorded, monkeypatch):
    import pandas as pd
    from sklearn.datasets import load_iris

    folder, run_id = recorded
    monkeypatch.chdir(folder)
    load_iris(as_frame=True).frame.to_csv(folder / "iris.csv", index=False)
    result = runner.invoke(app, ["eval", run_id, "data=csv", "data.path=iris.csv", "data.target=target"])
    assert result.exit_code == 0, result.output
    scored = dict(item.split("=") for item in result.output.split())
    assert float(scored["rows"]) == 150 and 0.0 <= float(scored["acc"]) <= 1.0
    assert pd.read_csv(folder / "iris.csv").shape == (150, 5)


def test_reproduce_gives_identical_metrics_in_a_tagged_run(recorded):
    folder, run_id = recorded
    done = run_dlrun("reproduce", run_id, cwd=folder)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert "metrics identical: yes" in done.stdout
    new_id = done.stdout.strip().splitlines()[-1].removeprefix("run_id: ")
    _, runs = mlflow_runs(folder / "mlflow.db")
    by_id = {r.info.run_id: r for r in runs}
    assert by_id[new_id].data.tags["dlrun.reproduced_from"] == run_id
    assert model_metrics(by_id[new_id].data.metrics) == model_metrics(by_id[run_id].data.metrics)


def test_reproduce_with_overrides_is_a_derived_run_that_differs(recorded):
    folder, run_id = recorded
    done = run_dlrun("reproduce", run_id, "trainer.max_epochs=6", cwd=folder)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "metrics identical" not in done.stdout
    new_id = done.stdout.strip().splitlines()[-1].removeprefix("run_id: ")
    _, runs = mlflow_runs(folder / "mlflow.db")
    derived = next(r for r in runs if r.info.run_id == new_id)
    assert derived.data.tags["dlrun.derived_from"] == run_id
    assert derived.data.params["trainer.max_epochs"] == "6"
    diff = runner.invoke(app, ["diff", run_id, new_id], env={"MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"})
    assert diff.exit_code == 0, diff.output
    assert "trainer.max_epochs" in diff.output and "metric train/loss" in diff.output


def _forged_run(folder, config_text: str) -> str:
    """A run in the store whose config.yaml someone else wrote."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    run = client.create_run(client.get_experiment_by_name("dlrun").experiment_id)
    client.log_text(run.info.run_id, config_text, "config.yaml")
    client.set_terminated(run.info.run_id)
    return run.info.run_id


@pytest.mark.parametrize("config_text, message", [
    ("model:\n  _target_: os.system\n  layers: []\n", "_target_"),
    ("seed: !!python/object/apply:os.system ['echo pwned > pwned.txt']\n", "python tags are refused"),
    ("data: {name: digits, batch_size: 8, val_fraction: 0.2, test_fraction: 0.2}\n", "the config lacks"),
])
def test_stored_configs_cannot_run_code(recorded, monkeypatch, config_text, message):
    folder, _ = recorded
    monkeypatch.chdir(folder)
    run_id = _forged_run(folder, config_text)
    for command in ("eval", "reproduce"):
        result = runner.invoke(app, [command, run_id])
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output
    assert not (folder / "pwned.txt").exists()


@pytest.mark.parametrize("run_id, message", [
    ("not-a-run", "is not an MLflow run id"),
    ("f" * 32, "no run ffff"),
])
def test_unknown_or_malformed_run_ids(recorded, monkeypatch, run_id, message):
    folder, _ = recorded
    monkeypatch.chdir(folder)
    for command in (["eval"], ["reproduce"], ["diff", run_id]):
        result = runner.invoke(app, [*command, run_id])
        assert result.exit_code == 2 and message in result.output


def test_a_run_dlrun_did_not_make(recorded, monkeypatch):
    from mlflow.tracking import MlflowClient

    folder, _ = recorded
    monkeypatch.chdir(folder)
    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    foreign = client.create_run(client.get_experiment_by_name("dlrun").experiment_id).info.run_id
    result = runner.invoke(app, ["eval", foreign])
    assert result.exit_code == 2 and "no config.yaml" in result.output


def test_ui_serves_the_store_dlrun_uses_here(recorded, monkeypatch):
    from dlrun.lifecycle.ui import ui_command

    folder, _ = recorded
    monkeypatch.chdir(folder)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    command = ui_command("127.0.0.1", 5123)
    assert command[1:4] == ["-m", "mlflow", "ui"]
    assert command[command.index("--backend-store-uri") + 1] == f"sqlite:///{folder / 'mlflow.db'}"
    assert command[-4:] == ["--host", "127.0.0.1", "--port", "5123"]


def test_ui_without_a_store_exits_2(workdir):
    result = runner.invoke(app, ["ui"])
    assert result.exit_code == 2 and "no MLflow store" in result.output


def test_eval_of_a_run_whose_checkpoint_is_gone(recorded, monkeypatch, tmp_path):
    import shutil

    folder, _ = recorded
    monkeypatch.chdir(folder)
    done = run_dlrun(*TRAIN, "trainer.max_epochs=1", "tracking.log_model=false", cwd=folder)
    run_id = done.stdout.strip().splitlines()[-1].removeprefix("run_id: ")
    shutil.rmtree(folder / "outputs" / run_id)
    client, _ = mlflow_runs(folder / "mlflow.db")
    artifacts = client.get_run(run_id).info.artifact_uri.removeprefix("file://")
    shutil.rmtree(f"{artifacts}/checkpoints")
    result = runner.invoke(app, ["eval", run_id])
    assert result.exit_code == 2 and "has no checkpoints/best.ckpt" in result.output


def test_extending_a_finished_run_from_elsewhere_records_in_the_named_store(recorded, monkeypatch, tmp_path):
    """`dlrun resume RUN_ID trainer.max_epochs=N --tracking-uri URI`: the derived run goes to URI, not to
    ./mlflow.db of the folder it was started from (its stored config has tracking.uri unset)."""
    folder, run_id = recorded
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    store = f"sqlite:///{folder / 'mlflow.db'}"
    done = runner.invoke(app, ["resume", run_id, "trainer.max_epochs=5", "--tracking-uri", store])
    assert done.exit_code == 0, done.output
    new_id = done.stdout.strip().splitlines()[-1].removeprefix("run_id: ")
    assert not (elsewhere / "mlflow.db").exists()
    _, runs = mlflow_runs(folder / "mlflow.db")
    derived = next(r for r in runs if r.info.run_id == new_id)
    assert derived.data.tags["dlrun.derived_from"] == run_id
    assert derived.info.status == "FINISHED"
