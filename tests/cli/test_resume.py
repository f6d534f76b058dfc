"""`dlrun resume`: an interrupted run continues in the same MLflow run and ends exactly
as the uninterrupted run does (CPU)."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
import torch

from dlrun.config.compose import compose
from dlrun.config.validate import validate
from dlrun.lifecycle.resume import resume
from dlrun.tracking.system_metrics import model_metrics
from dlrun.training.callbacks import StopOnSignal
from dlrun.training.module import DlrunModule
from dlrun.training.outcome import Interrupted
from dlrun.training.run import train
from tests.conftest import dlrun_command, mlflow_runs, run_dlrun

# 1257 training rows in batches of 64: 20 steps an epoch. Dropout and noise
# augmentation make the random state matter.
OVERRIDES = ["data=digits", "model=mlp", "regularization=dropout", "augment=noise", "trainer.max_epochs=3",
             "trainer.enable_progress_bar=false", "tracking.log_model=false"]


def _train(*extra: str):
    return train(validate(compose(OVERRIDES + list(extra))))


def _interrupt_at(monkeypatch, step: int) -> None:
    """Ask for a stop, as Ctrl-C would, during the training step `step`."""
    original = DlrunModule.training_step

    def training_step(self, batch, batch_index):
        if self.global_step == step:
            next(c for c in self.trainer.callbacks if isinstance(c, StopOnSignal)).request()
        return original(self, batch, batch_index)

    monkeypatch.setattr(DlrunModule, "training_step", training_step)


def _weights(result) -> dict:
    return torch.load(result.checkpoint_dir / "last.ckpt", weights_only=True)["state_dict"]


@pytest.mark.parametrize("step", [25, 19], ids=["mid-epoch", "epoch-boundary"])
def test_interrupted_and_resumed_run_equals_the_uninterrupted_one(workdir, monkeypatch, step):
    uninterrupted = _train()
    with monkeypatch.context() as patch:
        _interrupt_at(patch, step)
        with pytest.raises(Interrupted, match="dlrun resume"):
            _train()
    client, runs = mlflow_runs(workdir / "mlflow.db")
    killed = next(r for r in runs if r.info.status == "KILLED")
    resumed = resume(killed.info.run_id)
    assert resumed.run_id == killed.info.run_id, "the same MLflow run continues"
    for name, tensor in _weights(uninterrupted).items():
        assert torch.equal(tensor, _weights(resumed)[name]), name
    assert resumed.test_metrics == uninterrupted.test_metrics
    final = {r.info.run_id: r for r in mlflow_runs(workdir / "mlflow.db")[1]}
    assert final[killed.info.run_id].info.status == "FINISHED"
    finished, uninterrupted_run = final[killed.info.run_id], final[uninterrupted.run_id]
    assert model_metrics(finished.data.metrics) == model_metrics(uninterrupted_run.data.metrics)  # no system/ metrics
    steps = [m.step for m in client.get_metric_history(killed.info.run_id, "val/loss")]
    assert steps == [0, 1, 2], "metric steps continue where they stopped"
    for name in ("train/loss", "val/loss"):  # every epoch's, the interrupted one's included
        history = {run_id: {m.step: m.value for m in client.get_metric_history(run_id, name)}
                   for run_id in (killed.info.run_id, uninterrupted.run_id)}
        assert history[killed.info.run_id] == history[uninterrupted.run_id], name


def test_finished_run_cannot_be_resumed_but_can_be_extended(workdir):
    from dlrun.errors import ConfigError

    finished = _train("trainer.max_epochs=1")
    with pytest.raises(ConfigError, match="FINISHED"):
        resume(finished.run_id)
    longer = resume(finished.run_id, ["trainer.max_epochs=2"])
    assert longer.run_id != finished.run_id and longer.epochs == 2
    _, runs = mlflow_runs(workdir / "mlflow.db")
    derived = next(r for r in runs if r.info.run_id == longer.run_id)
    assert derived.data.tags["dlrun.derived_from"] == finished.run_id


def test_sigint_then_dlrun_resume_from_the_command_line(workdir):
    process = subprocess.Popen([*dlrun_command(), "train", "data=iris", "trainer.max_epochs=400",
                                "trainer.enable_progress_bar=false", "tracking.log_model=false"],
                               cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not list((workdir / "outputs").glob("*/checkpoints/last.ckpt")):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    _, (run,) = mlflow_runs(workdir / "mlflow.db")
    done = run_dlrun("resume", run.info.run_id, cwd=workdir)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == f"run_id: {run.info.run_id}"
    _, (after,) = mlflow_runs(workdir / "mlflow.db")
    assert after.info.status == "FINISHED" and "test/acc" in after.data.metrics
    again = run_dlrun("resume", run.info.run_id, cwd=workdir)
    assert again.returncode == 2 and "FINISHED" in again.stderr
