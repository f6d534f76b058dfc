"""`dlrun train` end to end, in its own process, as a user runs it."""

from __future__ import annotations

import signal
import subprocess
import time

import numpy as np
import pytest

from dlrun.tracking.system_metrics import model_metrics
from tests.conftest import dlrun_command, mlflow_runs, run_dlrun


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """The README's first command, run once in an empty folder outside the repo."""
    folder = tmp_path_factory.mktemp("default")
    done = run_dlrun("train", "model=cnn", "optim=adam", cwd=folder)
    assert done.returncode == 0, done.stderr[-3000:]
    client, runs = mlflow_runs(folder / "mlflow.db")
    assert len(runs) == 1
    return folder, done, client, runs[0]


def test_summary_ends_with_the_run_id(default_run):
    _, done, _, run = default_run
    assert done.stdout.rstrip().splitlines()[-1] == f"run_id: {run.info.run_id}"
    assert "test/acc=" in done.stdout
    assert "Traceback" not in done.stderr


def test_default_cnn_reaches_95_percent_on_digits(default_run):
    _, _, _, run = default_run
    assert run.info.status == "FINISHED"
    assert run.data.metrics["test/acc"] >= 0.95


def test_params_hold_group_choices_and_every_leaf(default_run):
    _, _, _, run = default_run
    params = run.data.params
    assert {params[g] for g in ("model", "optim", "data", "activation", "loss", "regularization", "trainer")} == {
        "cnn", "adam", "digits", "relu", "auto", "none", "cpu"}
    assert params["optim.lr"] == "0.001"
    assert params["data.batch_size"] == "64"
    assert params["model.layers.0.type"] == "conv2d"
    assert params["seed"] == "42"


def test_metrics_are_logged_every_epoch(default_run):
    _, _, client, run = default_run
    epochs = int(run.data.params["trainer.max_epochs"])
    for name in ("train/loss", "val/loss", "val/acc"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, name)]
        assert steps == list(range(epochs)), name
    assert {"test/loss", "test/acc"} <= set(run.data.metrics)


def test_artifacts_hold_config_overrides_and_checkpoints(default_run):
    folder, _, client, run = default_run
    run_id = run.info.run_id
    top = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.yaml", "overrides.txt", "checkpoints"} <= top
    assert {a.path for a in client.list_artifacts(run_id, "checkpoints")} == {"checkpoints/best.ckpt", "checkpoints/last.ckpt"}
    config_text = client.download_artifacts(run_id, "config.yaml", str(folder / "dl"))
    import yaml

    config = yaml.safe_load(open(config_text))
    assert config["model"]["layers"][0]["out_channels"] == 32
    overrides = open(client.download_artifacts(run_id, "overrides.txt", str(folder / "dl"))).read().split()
    assert overrides == ["model=cnn", "optim=adam"]
    assert (folder / "outputs" / run_id / "checkpoints" / "last.ckpt").is_file()


def test_tags_record_versions_and_command(default_run):
    _, _, _, run = default_run
    tags = run.data.tags
    assert tags["dlrun.command"] == "dlrun train model=cnn optim=adam"
    for key in ("dlrun.version", "dlrun.torch_version", "dlrun.lightning_version", "dlrun.python_version",
                "dlrun.data_fingerprint", "dlrun.model_uri"):
        assert tags.get(key), key


def test_logged_model_predicts_probabilities_from_raw_features(default_run):
    import mlflow
    import mlflow.pytorch
    from sklearn.datasets import load_digits

    folder, _, _, run = default_run
    from dlrun.tracking.store import active_store

    uri = run.data.tags["dlrun.model_uri"]
    assert uri.startswith("models:/")
    digits = load_digits()
    with active_store(f"sqlite:///{folder / 'mlflow.db'}"):
        model = mlflow.pyfunc.load_model(uri)
        module = mlflow.pytorch.load_model(uri)
    probabilities = model.predict(digits.data.astype(np.float32))
    assert probabilities.shape == (1797, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert (probabilities.argmax(axis=1) == digits.target).mean() > 0.95

    import torch

    with torch.no_grad():
        direct = module(torch.as_tensor(digits.data[:8], dtype=torch.float32)).numpy()
    np.testing.assert_allclose(direct, probabilities[:8], atol=1e-5)


def test_same_command_twice_gives_identical_metrics(workdir):
    args = ("train", "data=iris", "trainer.max_epochs=3", "trainer.enable_progress_bar=false", "tracking.log_model=false")
    for _ in range(2):
        done = run_dlrun(*args, cwd=workdir)
        assert done.returncode == 0, done.stderr[-2000:]
    _, runs = mlflow_runs(workdir / "mlflow.db")
    assert len(runs) == 2
    assert model_metrics(runs[0].data.metrics) == model_metrics(runs[1].data.metrics)  # no system/ metrics


def test_regression_logs_mae_and_serves_values(workdir):
    import mlflow
    from sklearn.datasets import load_diabetes

    done = run_dlrun("train", "data=diabetes", "trainer.max_epochs=3", "trainer.enable_progress_bar=false", cwd=workdir)
    assert done.returncode == 0, done.stderr[-2000:]
    _, (run,) = mlflow_runs(workdir / "mlflow.db")
    assert {"val/mae", "test/mae", "test/loss"} <= set(run.data.metrics)
    assert "val/acc" not in run.data.metrics
    from dlrun.tracking.store import active_store

    with active_store(f"sqlite:///{workdir / 'mlflow.db'}"):
        model = mlflow.pyfunc.load_model(run.data.tags["dlrun.model_uri"])
    values = model.predict(load_diabetes().data.astype(np.float32))
    assert values.shape in ((442, 1), (442,))
    assert 20 < float(np.mean(values)) < 350, "predictions are in the target's own units"


def test_tracking_uri_override_and_environment_variable(workdir):
    common = ("train", "model=linear", "data=iris", "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
              "tracking.log_model=false")
    done = run_dlrun(*common, f"tracking.uri=sqlite:///{workdir / 'chosen.db'}", "tracking.experiment=mine", cwd=workdir)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(mlflow_runs(workdir / "chosen.db", "mine")[1]) == 1
    done = run_dlrun(*common, cwd=workdir, env={"MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'env.db'}"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(mlflow_runs(workdir / "env.db")[1]) == 1
    assert not (workdir / "mlflow.db").exists()


def test_non_finite_loss_fails_the_run_with_exit_1(workdir):
    done = run_dlrun("train", "optim=sgd", "optim.lr=1e12", "trainer.enable_progress_bar=false", cwd=workdir)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "training loss became" in done.stderr and "at step" in done.stderr
    _, (run,) = mlflow_runs(workdir / "mlflow.db")
    assert run.info.status == "FAILED"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_marks_the_run_killed_and_keeps_a_checkpoint(workdir, signum):
    process = subprocess.Popen([*dlrun_command(), "train", "trainer.max_epochs=1000", "trainer.enable_progress_bar=false",
                                "tracking.log_model=false"], cwd=workdir, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not list((workdir / "outputs").glob("*/checkpoints/last.ckpt")):
        assert process.poll() is None and time.monotonic() < deadline, "training did not reach its first checkpoint"
        time.sleep(0.2)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert "KILLED" in stderr and "Traceback" not in stderr
    _, (run,) = mlflow_runs(workdir / "mlflow.db")
    assert run.info.status == "KILLED"
    assert (workdir / "outputs" / run.info.run_id / "checkpoints" / "last.ckpt").is_file()
