"""The Python API as a notebook uses it: two runs in one process, quiet, errors as exceptions, plugins passed in."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import numpy as np
import pytest

import dlrun
from dlrun.plugin_loading import ENV, unload_plugins
from tests.conftest import mlflow_runs

EXAMPLE_FILE = Path(__file__).resolve().parents[2] / "examples" / "plugin" / "my_layers.py"
QUICK = ["data=iris", "trainer.max_epochs=1", "data.batch_size=64"]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two trainings one after the other in this process, the first with a plugin passed as an argument;
    what they printed and the signal handlers around them."""
    import os

    folder = tmp_path_factory.mktemp("api")
    previous_dir, previous_env = Path.cwd(), os.environ.pop(ENV, None)
    os.chdir(folder)
    handlers = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    capture = pytest.MonkeyPatch()
    printed = []
    capture.setattr(sys, "stdout", _Recorder(printed, sys.stdout))
    capture.setattr(sys, "stderr", _Recorder(printed, sys.stderr))
    try:
        first = dlrun.train([*QUICK, "model.layers=[{type: scaled_tanh}, {type: linear}]"], plugins=[str(EXAMPLE_FILE)])
        second = dlrun.train(QUICK)
        after = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    finally:
        capture.undo()
        os.chdir(previous_dir)
        unload_plugins()
        os.environ.pop(ENV, None)
        if previous_env is not None:
            os.environ[ENV] = previous_env
    return folder, first, second, "".join(printed), handlers, after


class _Recorder:
    def __init__(self, lines, stream):
        self.lines, self.stream = lines, stream

    def write(self, text):
        self.lines.append(text)
        return len(text)

    def flush(self):
        pass

    def isatty(self):
        return False


def test_two_trainings_in_one_process_each_record_a_finished_run(two_runs):
    folder, first, second, _, _, _ = two_runs
    assert first.run_id != second.run_id
    client, runs = mlflow_runs(folder / "mlflow.db")
    assert {run.info.run_id: run.info.status for run in runs} == {first.run_id: "FINISHED", second.run_id: "FINISHED"}
    assert "my_layers" in client.get_run(first.run_id).data.tags["dlrun.plugins"]
    assert set(first.test_metrics) == {"test/loss", "test/acc"} and first.model_uri.startswith("models:/")


def test_nothing_is_printed_and_the_signal_handlers_are_left_as_found(two_runs):
    _, _, _, printed, before, after = two_runs
    assert printed == ""
    assert after == before


def test_load_model_and_predict_agree_with_the_served_model(two_runs, monkeypatch):
    import torch

    folder, _, second, _, _, _ = two_runs
    monkeypatch.chdir(folder)
    features = np.random.default_rng(0).random((5, 4), dtype=np.float32)
    proba = dlrun.predict(second.run_id, features)
    assert proba.shape == (5, 3) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    module = dlrun.load_model(second.run_id)
    assert np.allclose(module(torch.from_numpy(features)).detach().numpy(), proba, atol=1e-6)


def test_bad_input_raises_dlruns_exception_with_the_commands_message_and_records_nothing(workdir):
    with pytest.raises(dlrun.ConfigError, match="unknown model option 'cnnn' .*Did you mean 'cnn'"):
        dlrun.train(["model=cnnn"])
    with pytest.raises(dlrun.PluginError, match="nowhere.py': no file there"):
        dlrun.train(QUICK, plugins=["nowhere.py"])
    assert not (workdir / "mlflow.db").exists()


def test_compose_gives_the_validated_config_that_cfg_prints(workdir):
    from typer.testing import CliRunner
    import yaml

    from dlrun.cli import app

    printed = CliRunner().invoke(app, ["train", "--cfg", "model=mlp", "data=iris"])
    assert printed.exit_code == 0, printed.output
    assert dlrun.compose(["model=mlp", "data=iris"]) == yaml.safe_load(printed.output)
