"""Loss, scheduler and early-stopping options through `dlrun train`, in its own process."""

from __future__ import annotations

import numpy as np

from tests.conftest import mlflow_runs, run_dlrun

QUIET = ("trainer.enable_progress_bar=false",)


def test_bce_on_breast_cancer_trains_one_logit_and_serves_two_probabilities(workdir):
    done = run_dlrun("train", "data=breast_cancer", "model=linear", "loss=bce", "trainer.max_epochs=2", *QUIET,
                     cwd=workdir)
    assert done.returncode == 0, done.stderr[-3000:]
    client, (run,) = mlflow_runs(workdir / "mlflow.db")
    assert run.data.params["loss"] == "bce"
    assert 0.0 <= run.data.metrics["test/acc"] <= 1.0

    import mlflow
    import sklearn.datasets

    # Loaded from the LoggedModel's artifact folder, found through this test's own store, so that
    # no global tracking URI is set (or inherited from another test).
    model_id = run.data.tags["dlrun.model_uri"].removeprefix("models:/")
    model = mlflow.pyfunc.load_model(client.get_logged_model(model_id).artifact_location)
    features = sklearn.datasets.load_breast_cancer().data.astype("float32")
    probabilities = np.asarray(model.predict(features))
    assert probabilities.shape == (len(features), 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert (probabilities >= 0).all()


def test_a_loss_that_does_not_fit_the_task_exits_2_naming_the_fitting_losses(workdir):
    done = run_dlrun("train", "data=diabetes", "loss=bce", cwd=workdir)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "loss 'bce' does not fit a regression task" in done.stderr
    assert "Losses that do: auto, huber, mae, mse." in done.stderr
    assert "Traceback" not in done.stderr
    assert mlflow_runs(workdir / "mlflow.db")[1] == []  # no run was created


def test_a_step_schedule_logs_the_lr_each_epoch_trained_with(workdir):
    done = run_dlrun("train", "data=iris", "optim=sgd", "optim.lr=0.1", "scheduler=step", "scheduler.step_size=1",
                     "scheduler.gamma=0.5", "trainer.max_epochs=3", "tracking.log_model=false", *QUIET, cwd=workdir)
    assert done.returncode == 0, done.stderr[-3000:]
    client, (run,) = mlflow_runs(workdir / "mlflow.db")
    history = sorted(client.get_metric_history(run.info.run_id, "lr"), key=lambda m: m.step)
    assert [m.step for m in history] == [0, 1, 2]
    assert [m.value for m in history] == [0.1, 0.05, 0.025]
