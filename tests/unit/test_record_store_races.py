"""Races on one shared tracking store: an experiment created by two processes at once, and
SQLite's "database is locked" when many processes write."""

from __future__ import annotations

import sqlite3

import pytest
from mlflow.tracking import MlflowClient

from dlrun.tracking import record
from dlrun.tracking.record import experiment_id_of, retry_while_locked


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
    assert pauses == list(record.LOCKED_RETRY_DELAYS_S[:2])  # a growing pause between tries


def test_a_store_locked_for_good_fails_after_the_last_try(monkeypatch):
    monkeypatch.setattr("time.sleep", lambda s: None)
    tries = []

    def write():
        tries.append(1)
        raise sqlite3.OperationalError("database is locked")

    with pytest.raises(sqlite3.OperationalError):
        retry_while_locked(write)
    assert len(tries) == len(record.LOCKED_RETRY_DELAYS_S) + 1


def test_other_errors_are_not_retried(monkeypatch):
    monkeypatch.setattr("time.sleep", lambda s: pytest.fail("no pause for an error that is not a lock"))

    def write():
        raise ValueError("bad metric")

    with pytest.raises(ValueError):
        retry_while_locked(write)
