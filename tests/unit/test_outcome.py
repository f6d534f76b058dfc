"""run_outcome, the one owner of how a run ends, driven in-process with a record that only remembers."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from dlrun.errors import TrainingFailed
from dlrun.training.outcome import Interrupted, run_outcome


class FakeRecord:
    """What RunOutcome uses of a RunRecord; `signal_in` names a method that sends this process SIGINT."""

    def __init__(self, signal_in: str | None = None, refuse: bool = False):
        self.run_id = None
        self.ended = None
        self.refused: list[str] = []
        self.refusal = None
        self.uploads: list[Path] = []
        self.ends: list[str] = []
        self._signal_in, self._refuse = signal_in, refuse

    def start(self) -> None:
        self.run_id = "r1"
        if self._refuse:
            self.refused.append("config.yaml")
            self.refusal = "No space left on device"
        self._maybe_signal("start")

    def log_checkpoints(self, folder: Path) -> None:
        self.uploads.append(folder)

    def end(self, status: str) -> None:
        self.ended = status
        self.ends.append(status)
        self._maybe_signal("end")

    def artifact_location(self) -> str:
        return "file:///artifacts"

    def note(self) -> None:
        return None

    def _maybe_signal(self, where: str) -> None:
        if self._signal_in == where:
            os.kill(os.getpid(), signal.SIGINT)


def test_a_finished_run_is_closed_once_and_uploads_nothing_more(tmp_path):
    record = FakeRecord()
    with run_outcome(tmp_path) as outcome:
        outcome.open(record, FakeRecord.start)
        outcome.finish(model_uri=None)
    assert record.ends == ["FINISHED"] and record.uploads == []


def test_a_signal_while_the_run_is_closed_waits_for_the_close_then_stops_the_command(tmp_path):
    record = FakeRecord(signal_in="end")
    with pytest.raises(Interrupted, match="while run r1 was closed; it is marked FINISHED"):
        with run_outcome(tmp_path) as outcome:
            outcome.open(record, FakeRecord.start)
            outcome.finish(model_uri=None)
    assert record.ends == ["FINISHED"]


def test_refused_writes_at_the_end_fail_the_run_and_name_each_artifact_once(tmp_path):
    record = FakeRecord()
    with pytest.raises(TrainingFailed, match=r"\(not stored: checkpoints/, model\)"):
        with run_outcome(tmp_path) as outcome:
            outcome.open(record, FakeRecord.start)
            record.refused += ["checkpoints/", "model"]  # as record_results left it
            record.refusal = "No space left on device"
            outcome.finish(model_uri=None)
    assert record.ends == ["FAILED"] and record.uploads == []  # not uploaded again


def test_a_refused_config_fails_the_run_before_training_and_a_signal_then_names_that_state(tmp_path):
    record = FakeRecord(refuse=True)
    with pytest.raises(TrainingFailed, match="Run r1 is marked FAILED before training"):
        with run_outcome(tmp_path) as outcome:
            outcome.open(record, FakeRecord.start)
    assert record.ends == ["FAILED"]

    record = FakeRecord(refuse=True, signal_in="start")
    with pytest.raises(Interrupted, match="after run r1 was marked FAILED"):
        with run_outcome(tmp_path) as outcome:
            outcome.open(record, FakeRecord.start)
    assert record.ends == ["FAILED"]


def test_a_run_that_fails_halfway_through_its_creation_is_not_left_running(tmp_path):
    def start_then_fail(record: FakeRecord) -> None:
        record.start()
        raise RuntimeError("the store went away after the run was created")

    record = FakeRecord()
    with pytest.raises(RuntimeError, match="went away"):
        with run_outcome(tmp_path) as outcome:
            outcome.open(record, start_then_fail)
    assert record.ends == ["FAILED"]


def test_a_signal_before_the_run_exists_records_nothing(tmp_path):
    record = FakeRecord()
    with pytest.raises(Interrupted, match="no run was recorded"):
        with run_outcome(tmp_path):
            os.kill(os.getpid(), signal.SIGINT)
    assert record.ends == []


def test_a_signal_once_the_run_exists_kills_it_with_its_checkpoints_uploaded(tmp_path):
    record = FakeRecord()
    with pytest.raises(Interrupted, match="run r1 is marked KILLED, with no checkpoint yet"):
        with run_outcome(tmp_path) as outcome:
            outcome.open(record, FakeRecord.start)
            os.kill(os.getpid(), signal.SIGINT)
    assert record.ends == ["KILLED"] and record.uploads == [tmp_path / "r1" / "checkpoints"]


def test_an_unforeseen_error_fails_the_run_and_is_raised_as_it_was(tmp_path):
    record = FakeRecord()
    with pytest.raises(ZeroDivisionError):
        with run_outcome(tmp_path) as outcome:
            outcome.open(record, FakeRecord.start)
            1 / 0
    assert record.ends == ["FAILED"]
