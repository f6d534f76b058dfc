"""Faults during `dlrun train`: signals at each stage, a non-finite loss, an artifact store that refuses
writes. After each, the run's status is true (in MLflow and in `dlrun runs`), the trained weights are on
disk where the message says, and an interrupted run finishes with `dlrun resume`.

The decisions these tests hold dlrun to:
- A signal before the MLflow run exists: exit 130 and no run at all (not even a store).
- A signal once the run exists, at any stage (before fit, in the sanity check, mid-epoch, in validation,
  after fit while the model is logged): the run is KILLED, exit 130, the message names its checkpoint
  (or says there is none yet) and `dlrun resume RUN_ID`, which finishes it: from the checkpoint, or from
  step 0 when there is none. A signal during model logging does not wait for the upload: the user asked
  to stop, the run lacks its model, so it is KILLED, and resume (with nothing left to train) tests and
  logs the model.
- A non-finite loss: FAILED, exit 1, the message names the step and the last good checkpoint.
- An artifact store that refuses writes (disk full, no permission) once training ran: FAILED, exit 1
  (a FINISHED run must hold its checkpoints and model), the weights kept on local disk at the paths the
  message names; `dlrun resume RUN_ID` stores them once the store takes writes again. Refused from the
  start: FAILED before training, since a run without its config.yaml can be neither resumed nor reproduced.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dlrun.cli import app
from tests.conftest import mlflow_runs

EPOCHS = 3
# iris: 90 training rows in batches of 16, so 6 steps an epoch; 30 validation rows, 2 batches.
TRAIN = ["train", "data=iris", f"trainer.max_epochs={EPOCHS}", "trainer.enable_progress_bar=false"]
STEPS_PER_EPOCH = 6

# Runs `dlrun ARGS...` as the console script does (dlrun.cli.main: its signal handlers, its exit), after
# patching one function so that the process sends itself SIGNUM when POINT is reached: a signal that
# lands at a known stage every time.
DRIVER = '''
import os
import sys

POINT, SIGNUM = sys.argv[1], int(sys.argv[2])
sys.argv = ["dlrun", *sys.argv[3:]]


def signal_first(owner, name, when=lambda *args: True, before=lambda: None):
    original = getattr(owner, name)
    sent = []

    def patched(*args, **kwargs):
        if not sent and when(*args):
            sent.append(True)
            before()
            os.kill(os.getpid(), SIGNUM)
        return original(*args, **kwargs)

    setattr(owner, name, patched)


if POINT == "before-run":
    import dlrun.training.setup as setup
    signal_first(setup, "prepare")
elif POINT == "run-created":
    import dlrun.training.setup as setup
    signal_first(setup, "make_loaders")
elif POINT == "model-logging":
    import mlflow.pytorch
    signal_first(mlflow.pytorch, "log_model")
else:
    from dlrun.training.module import DlrunModule

    if POINT == "sanity-check":
        signal_first(DlrunModule, "validation_step", lambda module, *_: module.trainer.sanity_checking)
    elif POINT == "mid-epoch":
        signal_first(DlrunModule, "training_step", lambda module, *_: module.global_step == MID_EPOCH_STEP)
    elif POINT == "test":  # after fit; last.ckpt's digest noted, since the signal must not replace it
        def note_last_checkpoint():
            import glob
            import hashlib

            (path,) = glob.glob("outputs/*/checkpoints/last.ckpt")
            with open(path, "rb") as saved, open("last.ckpt.sha256", "w") as note:
                note.write(hashlib.sha256(saved.read()).hexdigest())

        signal_first(DlrunModule, "test_step", before=note_last_checkpoint)
    elif POINT == "validation":
        signal_first(DlrunModule, "validation_step",
                     lambda module, *_: not module.trainer.sanity_checking and module.current_epoch == 1)
    else:
        raise SystemExit(f"unknown point {POINT}")

from dlrun.cli import main

main()
'''.replace("MID_EPOCH_STEP", str(STEPS_PER_EPOCH + 2))  # epoch 1, batch 2

runner = CliRunner()


def _train_with_signal_at(point: str, signum: int, workdir: Path) -> subprocess.CompletedProcess:
    driver = workdir.parent / f"{workdir.name}-driver.py"
    driver.write_text(DRIVER)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run([sys.executable, str(driver), point, str(int(signum)), *TRAIN], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=600)


def _only_run(workdir: Path):
    client, runs = mlflow_runs(workdir / "mlflow.db")
    assert len(runs) == 1, [r.info.status for r in runs]
    return client, runs[0]


def _status_in_dlrun_runs(run_id: str) -> str:
    listed = runner.invoke(app, ["runs"])
    assert listed.exit_code == 0, listed.output
    row = next(line for line in listed.stdout.splitlines() if line.startswith(run_id))
    return row.split()[1]


def _assert_finished_and_complete(client, run_id: str, model: bool = True) -> None:
    """FINISHED, with every epoch's metrics, the test metrics, its config, checkpoints and (logged) model."""
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run_id, "val/loss")] == list(range(EPOCHS))
    assert "test/acc" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.yaml", "data.json"} <= artifacts
    assert {a.path for a in client.list_artifacts(run_id, "checkpoints")} >= {"checkpoints/last.ckpt",
                                                                             "checkpoints/best.ckpt"}
    if model:
        assert run.data.tags.get("dlrun.model_uri", "").startswith("models:/")
    assert _status_in_dlrun_runs(run_id) == "FINISHED"


def _resume(run_id: str):
    done = runner.invoke(app, ["resume", run_id])
    assert done.exit_code == 0, done.output
    assert done.stdout.strip().splitlines()[-1] == f"run_id: {run_id}"
    return done


def test_signal_before_the_run_exists_records_nothing(workdir):
    done = _train_with_signal_at("before-run", signal.SIGTERM, workdir)
    assert done.returncode == 130, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert "interrupted before training started; no run was recorded" in done.stderr
    assert not (workdir / "mlflow.db").exists() and not (workdir / "outputs").exists()


def _assert_killed(done, workdir: Path):
    """Exit 130 without a traceback, the one run KILLED in MLflow and in `dlrun runs`: (client, run id)."""
    assert done.returncode == 130, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    client, run = _only_run(workdir)
    assert run.info.status == "KILLED"
    assert _status_in_dlrun_runs(run.info.run_id) == "KILLED"
    return client, run.info.run_id


def test_signal_after_the_run_exists_before_training_kills_it_and_resume_starts_at_step_0(workdir):
    done = _train_with_signal_at("run-created", signal.SIGINT, workdir)
    client, run_id = _assert_killed(done, workdir)
    assert "no checkpoint yet" in done.stderr and f"dlrun resume {run_id}" in done.stderr
    assert not (workdir / "outputs" / run_id / "checkpoints" / "last.ckpt").exists()
    resumed = _resume(run_id)
    assert "trains from step 0" in resumed.stderr
    _assert_finished_and_complete(client, run_id)


@pytest.mark.parametrize("point, signum", [
    ("sanity-check", signal.SIGTERM),
    ("mid-epoch", signal.SIGINT),
    ("mid-epoch", signal.SIGTERM),
    ("validation", signal.SIGTERM),
    ("test", signal.SIGINT),
    ("model-logging", signal.SIGINT),
], ids=["sanity-check-SIGTERM", "mid-epoch-SIGINT", "mid-epoch-SIGTERM", "validation-SIGTERM", "test-SIGINT",
        "model-logging-SIGINT"])
def test_signal_during_training_kills_the_run_with_a_checkpoint_and_resume_finishes_it(workdir, point, signum):
    done = _train_with_signal_at(point, signum, workdir)
    client, run_id = _assert_killed(done, workdir)
    checkpoint = Path("outputs") / run_id / "checkpoints" / "last.ckpt"
    assert f"its checkpoint is {checkpoint}" in done.stderr and f"dlrun resume {run_id}" in done.stderr
    assert (workdir / checkpoint).is_file()
    assert "checkpoints/last.ckpt" in {a.path for a in client.list_artifacts(run_id, "checkpoints")}
    if point == "test":  # the module held the best weights in test: the last ones must stay in last.ckpt
        import hashlib

        digest = hashlib.sha256((workdir / checkpoint).read_bytes()).hexdigest()
        assert digest == (workdir / "last.ckpt.sha256").read_text()
    _resume(run_id)
    _assert_finished_and_complete(client, run_id)


def _poison_the_batch_at(monkeypatch, step: int) -> None:
    """The training batch at `step` becomes NaN, so the real loss check meets a NaN loss there."""
    from dlrun.training.module import DlrunModule

    original = DlrunModule.training_step

    def training_step(self, batch, batch_index):
        if self.global_step == step:
            x, y = batch
            batch = (x * float("nan"), y)
        return original(self, batch, batch_index)

    monkeypatch.setattr(DlrunModule, "training_step", training_step)


def test_nan_loss_after_an_epoch_fails_the_run_naming_the_step_and_the_last_good_checkpoint(workdir, monkeypatch):
    step = STEPS_PER_EPOCH + 2
    _poison_the_batch_at(monkeypatch, step)
    done = runner.invoke(app, [*TRAIN, "tracking.log_model=false"])
    assert done.exit_code == 1, done.output
    assert "Traceback" not in done.output
    client, run = _only_run(workdir)
    run_id = run.info.run_id
    assert run.info.status == "FAILED"
    assert _status_in_dlrun_runs(run_id) == "FAILED"
    checkpoint = Path("outputs") / run_id / "checkpoints" / "last.ckpt"
    assert f"the training loss became nan at step {step}" in done.stderr
    assert f"the last good checkpoint is {checkpoint}" in done.stderr
    assert (workdir / checkpoint).is_file()


def test_nan_loss_in_the_first_epoch_says_there_is_no_checkpoint(workdir, monkeypatch):
    _poison_the_batch_at(monkeypatch, 2)
    done = runner.invoke(app, [*TRAIN, "tracking.log_model=false"])
    assert done.exit_code == 1, done.output
    assert "Traceback" not in done.output
    assert "at step 2" in done.stderr and "no checkpoint was saved before it" in done.stderr
    _, run = _only_run(workdir)
    assert run.info.status == "FAILED"


STORAGE_ERRORS = {
    "disk-full": lambda: OSError(errno.ENOSPC, "No space left on device"),
    "read-only": lambda: PermissionError(errno.EACCES, "Permission denied"),
}


def _artifact_store_refuses(monkeypatch, make_error) -> dict:
    """The local artifact store (./mlruns) refuses every write while refusing['now'] is True."""
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    refusing = {"now": False}
    for method in ("log_artifact", "log_artifacts"):
        original = getattr(LocalArtifactRepository, method)

        def write(self, *args, _original=original, **kwargs):
            if refusing["now"]:
                raise make_error()
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(LocalArtifactRepository, method, write)
    return refusing


@pytest.mark.parametrize("error", list(STORAGE_ERRORS))
def test_artifact_store_refusing_writes_after_training_fails_the_run_and_keeps_the_weights(workdir, monkeypatch,
                                                                                          error):
    import pytorch_lightning as pl

    refusing = _artifact_store_refuses(monkeypatch, STORAGE_ERRORS[error])
    fit = pl.Trainer.fit

    def fit_then_fill_the_disk(*args, **kwargs):
        fit(*args, **kwargs)
        refusing["now"] = True

    monkeypatch.setattr(pl.Trainer, "fit", fit_then_fill_the_disk)
    done = runner.invoke(app, TRAIN)
    assert done.exit_code == 1, done.output
    assert "Traceback" not in done.output
    assert str(STORAGE_ERRORS[error]()) in done.stderr
    client, run = _only_run(workdir)
    run_id = run.info.run_id
    assert run.info.status == "FAILED"
    assert _status_in_dlrun_runs(run_id) == "FAILED"
    folder = (workdir / "outputs" / run_id).resolve()
    checkpoints, model = folder / "checkpoints", folder / "model"
    assert f"checkpoints in {checkpoints}" in done.stderr and f"the model in {model}" in done.stderr
    assert (checkpoints / "last.ckpt").is_file() and (checkpoints / "best.ckpt").is_file()
    assert (model / "MLmodel").is_file()
    assert f"dlrun resume {run_id}" in done.stderr and f"Once {run.info.artifact_uri} takes writes again" in done.stderr

    refusing["now"] = False  # space freed: resume stores what was refused and finishes the run
    monkeypatch.setattr(pl.Trainer, "fit", fit)
    _resume(run_id)
    _assert_finished_and_complete(client, run_id)


def test_model_that_fits_nowhere_is_named_as_not_stored_and_the_checkpoints_as_kept(workdir, monkeypatch):
    """The artifact store refuses, and the local disk refuses the model's copy too."""
    import mlflow.pytorch

    import pytorch_lightning as pl

    refusing = _artifact_store_refuses(monkeypatch, STORAGE_ERRORS["disk-full"])
    fit = pl.Trainer.fit

    def fit_then_fill_the_disk(*args, **kwargs):
        fit(*args, **kwargs)
        refusing["now"] = True

    def save_model(*args, **kwargs):
        raise STORAGE_ERRORS["disk-full"]()

    monkeypatch.setattr(pl.Trainer, "fit", fit_then_fill_the_disk)
    monkeypatch.setattr(mlflow.pytorch, "save_model", save_model)
    done = runner.invoke(app, TRAIN)
    assert done.exit_code == 1, done.output
    assert "Traceback" not in done.output
    _, run = _only_run(workdir)
    assert run.info.status == "FAILED"
    folder = (workdir / "outputs" / run.info.run_id).resolve()
    assert f"checkpoints in {folder / 'checkpoints'}" in done.stderr
    assert f"a local copy of the model in {folder / 'model'}" in done.stderr
    assert "the model in" not in done.stderr.replace("a local copy of the model in", "")
    assert (folder / "checkpoints" / "last.ckpt").is_file()


def test_artifact_store_refusing_writes_from_the_start_fails_before_training(workdir, monkeypatch):
    refusing = _artifact_store_refuses(monkeypatch, STORAGE_ERRORS["disk-full"])
    refusing["now"] = True
    done = runner.invoke(app, [*TRAIN, "tracking.log_model=false"])
    assert done.exit_code == 1, done.output
    assert "Traceback" not in done.output
    assert "No space left on device" in done.stderr and "config.yaml" in done.stderr
    _, run = _only_run(workdir)
    assert run.info.status == "FAILED" and "marked FAILED before training" in done.stderr
    assert f"writing to) {run.info.artifact_uri} and train again" in done.stderr
    assert not (workdir / "outputs" / run.info.run_id / "checkpoints").exists()


def test_an_unforeseen_error_after_the_run_exists_marks_it_failed(workdir, monkeypatch):
    from dlrun.training.module import DlrunModule

    def test_step(self, batch, batch_index):
        raise RuntimeError("a fault in testing")

    monkeypatch.setattr(DlrunModule, "test_step", test_step)
    done = runner.invoke(app, [*TRAIN, "tracking.log_model=false"])
    assert isinstance(done.exception, RuntimeError)  # dlrun's own fault: its traceback is for the bug report
    _, run = _only_run(workdir)
    assert run.info.status == "FAILED"  # not left RUNNING
    assert _status_in_dlrun_runs(run.info.run_id) == "FAILED"


def test_signal_handlers_are_put_back_after_a_run_and_after_an_interrupted_one(workdir, monkeypatch):
    from dlrun.training.module import DlrunModule

    def handlers():
        return signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)

    before = handlers()
    done = runner.invoke(app, [*TRAIN, "tracking.log_model=false"])
    assert done.exit_code == 0, done.output
    assert handlers() == before

    original = DlrunModule.training_step

    def training_step(self, batch, batch_index):
        if self.global_step == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, batch, batch_index)

    monkeypatch.setattr(DlrunModule, "training_step", training_step)
    done = runner.invoke(app, [*TRAIN, "tracking.log_model=false"])
    assert done.exit_code == 130, done.output
    assert handlers() == before  # a sweep's next trial, in the same process, gets Ctrl-C as usual
