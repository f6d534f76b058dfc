"""Races on one shared tracking store: an experiment created by two processes at once, and
SQLite's "database is locked" when many processes write."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from mlflow.entities import DatasetInput
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from dlrun.tracking import record, store
from dlrun.tracking.store import experiment_id_of, retry_while_locked


def test_the_loser_of_an_experiment_creation_race_takes_the_winners_experiment(tmp_path):
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    winner = client.create_experiment("dlrun")
    real_lookup = client.get_experiment_by_name
    lookups = []

    def missing_at_first(name):  # this process looked before the other one created it
        lookups.append(name)
        return None if len(lookups) == 1 else real_lookup(name)

    client.get_experiment_by_name = missing_at_first
    assert experiment_id_of(client, "dlrun") == winner
    assert len(lookups) == 2
    assert [e.name for e in client.search_experiments()].count("dlrun") == 1


def test_an_experiment_is_created_when_missing(tmp_path):
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    created = experiment_id_of(client, "fresh")
    assert client.get_experiment_by_name("fresh").experiment_id == created


def test_a_locked_database_is_tried_again_until_it_answers(monkeypatch):
    pauses = []
    monkeypatch.setattr("time.sleep", pauses.append)
    answers = iter([sqlite3.OperationalError("database is locked"),
                    sqlite3.OperationalError("database is locked"), "written"])

    def write():
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert retry_while_locked(write) == "written"
    assert pauses == list(store.LOCKED_RETRY_DELAYS_S[:2])  # a growing pause between tries


def test_a_store_locked_for_good_fails_after_the_last_try(monkeypatch):
    monkeypatch.setattr("time.sleep", lambda s: None)
    tries = []

    def write():
        tries.append(1)
        raise sqlite3.OperationalError("database is locked")

    with pytest.raises(sqlite3.OperationalError):
        retry_while_locked(write)
    assert len(tries) == len(store.LOCKED_RETRY_DELAYS_S) + 1


def test_other_errors_are_not_retried(monkeypatch):
    monkeypatch.setattr("time.sleep", lambda s: pytest.fail("no pause for an error that is not a lock"))

    def write():
        raise ValueError("bad metric")

    with pytest.raises(ValueError):
        retry_while_locked(write)


LOCKED = "(sqlite3.OperationalError) database is locked"


def locked_once(call):
    """call, failing the first time as a store another process holds locked."""
    calls = []

    def wrapped(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise MlflowException(LOCKED)
        return call(*args, **kwargs)

    wrapped.calls = calls
    return wrapped


@pytest.fixture
def run_record(tmp_path, monkeypatch):
    """A RunRecord with one created run in a fresh SQLite store; pauses between retries skipped."""
    monkeypatch.setattr("time.sleep", lambda s: None)
    monkeypatch.chdir(tmp_path)
    run = record.RunRecord(f"sqlite:///{tmp_path / 'mlflow.db'}", "dlrun")
    run.create("r", {}, {}, source="test")
    return run


@pytest.fixture
def run_record_with_folder(tmp_path, monkeypatch):
    """As run_record, for a run whose local folder is OUTPUT_DIR/RUN_ID under tmp_path/outputs."""
    monkeypatch.setattr("time.sleep", lambda s: None)
    monkeypatch.chdir(tmp_path)
    run = record.RunRecord(f"sqlite:///{tmp_path / 'mlflow.db'}", "dlrun", output_dir=tmp_path / "outputs")
    run.create("r", {}, {}, source="test")
    return run


def test_reopening_a_run_and_reading_its_metrics_wait_for_a_locked_store(run_record):
    run_record.log_metrics({"val/loss": 0.5}, step=0)
    client = run_record.client
    client.get_run, client.get_metric_history = locked_once(client.get_run), locked_once(client.get_metric_history)
    assert run_record.reopen(run_record.run_id) == run_record.run_id
    assert run_record.metric_history(["val/loss"]) == [{"val/loss": 0.5}]
    assert len(client.get_run.calls) == 2 and len(client.get_metric_history.calls) == 2


def test_a_sweep_trials_tags_wait_for_a_locked_store(run_record, monkeypatch):
    from mlflow.tracking import MlflowClient

    from dlrun.tuning import budget, trial
    from dlrun.tuning.states import TrialState

    for name in ("set_tag", "set_terminated"):
        monkeypatch.setattr(MlflowClient, name, locked_once(getattr(MlflowClient, name)))
    trial._tag_state(run_record.run_id, "pruned", run_record.uri)
    assert run_record.client.get_run(run_record.run_id).data.tags["dlrun.trial_state"] == "pruned"
    MlflowClient.set_tag.calls.clear()
    budget._close_child_run(run_record.run_id, run_record.uri)
    closed = run_record.client.get_run(run_record.run_id)
    assert closed.data.tags["dlrun.trial_state"] == TrialState.CRASHED and closed.info.status == "KILLED"


def small_model():
    import numpy as np
    import torch

    return torch.nn.Linear(4, 2).eval(), np.zeros((1, 4), dtype=np.float32)


def test_a_model_the_locked_store_refuses_is_saved_locally_as_pt2_and_logged_once(run_record_with_folder, tmp_path, monkeypatch):
    import mlflow.pytorch

    run_record = run_record_with_folder

    attempts = []

    def log_model(*args, **kwargs):  # each call would make a new LoggedModel: it must not be retried
        attempts.append(kwargs)
        raise MlflowException(LOCKED)

    monkeypatch.setattr(mlflow.pytorch, "log_model", log_model)
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "15.4")  # where MLflow would pickle the model by default
    model, example = small_model()
    saved = run_record.log_model(model, example, ["torch"])
    assert len(attempts) == 1 and attempts[0]["serialization_format"] == "pt2"
    assert saved == str(run_record.local_dir / "model")
    assert sorted(p.name for p in (Path(saved) / "data").iterdir()) == ["model.pt2"]  # as `dlrun predict` loads it
    assert run_record.refused == ["model"] and "database is locked" in run_record.refusal


def test_a_model_saved_without_a_run_folder_leaves_the_users_model_folder_alone(run_record, tmp_path, monkeypatch):
    import mlflow.pytorch

    monkeypatch.setattr(mlflow.pytorch, "log_model", locked_forever)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "mine.txt").write_text("the user's own file")
    model, example = small_model()
    saved = Path(run_record.log_model(model, example, ["torch"]))
    assert (tmp_path / "model" / "mine.txt").read_text() == "the user's own file"
    assert saved.parent.name.startswith("dlrun-model-") and (saved / "MLmodel").is_file()
    assert str(saved) in run_record.note()  # the user is told where the model went


def locked_forever(*args, **kwargs):
    raise MlflowException(LOCKED)


def test_a_dataset_inserted_by_another_process_meanwhile_is_logged_again_and_shared(tmp_path):
    import mlflow.data
    import numpy as np

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("dlrun")
    runs = [client.create_run(experiment).info.run_id for _ in range(2)]
    dataset = mlflow.data.from_numpy(np.zeros((3, 2)), name="train")._to_mlflow_entity()
    inputs = [DatasetInput(dataset)]
    client.log_inputs(runs[0], datasets=inputs)  # the other process won the race
    real, calls = client.log_inputs, []

    def lost_the_race(run_id, datasets):
        calls.append(run_id)
        if len(calls) == 1:  # what SQLite answers the second insert of one dataset
            raise MlflowException("(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, "
                                  "datasets.name, datasets.digest")
        return real(run_id, datasets=datasets)

    client.log_inputs = lost_the_race
    record._log_inputs(client, runs[1], inputs)
    assert calls == [runs[1], runs[1]]
    logged = client.get_run(runs[1]).inputs.dataset_inputs
    assert [d.dataset.digest for d in logged] == [dataset.digest]


def test_other_refusals_of_dataset_inputs_are_not_tried_again(tmp_path):
    calls = []

    class Refusing:
        def log_inputs(self, run_id, datasets):
            calls.append(run_id)
            raise MlflowException("INVALID_PARAMETER_VALUE: the dataset's schema is too long")

    with pytest.raises(MlflowException, match="too long"):
        record._log_inputs(Refusing(), "run", [])
    assert calls == ["run"]
