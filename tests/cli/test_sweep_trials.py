"""What a study's trials record: the served model only for a trial that is the best so far (or every
trial with `models: all`), plots only with `plots: true`; predict and eval work on every trial, from
its checkpoint where it logged no model. One study, shared by the tests below."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_iris
from typer.testing import CliRunner

from dlrun.cli import app
from dlrun.errors import ConfigError
from tests.cli.test_sweeps import good_first_grid_seed, open_study, write_sweep
from tests.conftest import mlflow_runs, run_dlrun

runner = CliRunner()
RATES = [0.3, 1e-6, 2e-6]  # the first learns iris; the others stay where they started, below it

STUDY = """
overrides: [data=iris, trainer.max_epochs=3]
metric: val/acc
n_trials: 3
sampler: {{name: grid}}
seed: {seed}
params:
  optim: sgd
  optim.lr: choice({rates})
"""


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("trials")
    write_sweep(folder, "lean", STUDY.format(seed=good_first_grid_seed(RATES), rates=", ".join(map(str, RATES))))
    done = run_dlrun("sweep", "lean.yaml", cwd=folder)
    assert done.returncode == 0, done.stderr[-3000:]
    client, _ = mlflow_runs(folder / "mlflow.db")
    trials = sorted(open_study(folder, "lean").trials, key=lambda t: t.number)
    runs = [client.get_run(t.user_attrs["mlflow_run_id"]) for t in trials]
    return folder, client, trials, runs


def test_only_the_best_so_far_logs_its_served_model_and_no_trial_draws_plots(study):
    _, client, trials, runs = study
    assert trials[0].params["optim.lr"] == RATES[0] and all(t.value < trials[0].value for t in trials[1:])
    assert "dlrun.model_uri" in runs[0].data.tags and "dlrun.served_from" not in runs[0].data.tags
    for run in runs[1:]:
        assert "dlrun.model_uri" not in run.data.tags and run.data.tags["dlrun.served_from"] == "checkpoint"
    for run in runs:
        assert run.info.status == "FINISHED"
        assert [a.path for a in client.list_artifacts(run.info.run_id, "plots")] == []
        assert {a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")} >= {"checkpoints/best.ckpt"}


def test_predict_works_on_a_trial_without_a_model_from_its_checkpoint(study, monkeypatch):
    folder, _, _, runs = study
    monkeypatch.chdir(folder)
    np.save(folder / "x.npy", load_iris().data.astype(np.float32))
    result = runner.invoke(app, ["predict", runs[1].info.run_id, "--input", "x.npy", "--output", "p.csv"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(folder / "p.csv")
    assert list(table.columns) == ["predicted", "prob_setosa", "prob_versicolor", "prob_virginica"] and len(table) == 150
    np.testing.assert_allclose(table.iloc[:, 1:].sum(axis=1), 1.0, atol=1e-5)


def test_the_model_rebuilt_from_a_checkpoint_predicts_what_the_logged_one_does(study, monkeypatch):
    from dlrun.lifecycle.checkpoint_model import CheckpointModel
    from dlrun.lifecycle.stored import load_run

    folder, _, _, runs = study
    monkeypatch.chdir(folder)
    stored = load_run(runs[0].info.run_id, f"sqlite:///{folder / 'mlflow.db'}")
    features = load_iris().data.astype(np.float32)
    logged, rebuilt = stored.served_model(), CheckpointModel(stored)
    np.testing.assert_allclose(rebuilt.predict(features), np.asarray(logged.predict(features)), atol=1e-5)
    assert rebuilt.metadata.get_input_schema().inputs[0].shape[-1] == 4


def test_eval_on_other_data_works_on_a_trial_without_a_model(study, monkeypatch):
    folder, _, _, runs = study
    monkeypatch.chdir(folder)
    result = runner.invoke(app, ["eval", runs[2].info.run_id, "data.test_fraction=0.3"])
    assert result.exit_code == 0, result.output
    assert "acc=" in result.output and "rows=150" in result.output


@pytest.mark.parametrize("text, message", [("models: some", "neither best nor all"),
                                           ("plots: yes please", "plots must be true or false")])
def test_a_bad_models_or_plots_key_is_a_config_error(tmp_path, text, message):
    from dlrun.tuning.spec import load_spec

    path = write_sweep(tmp_path, "bad", f"params: {{optim.lr: 'choice(0.1, 0.01)'}}\n{text}\n")
    with pytest.raises(ConfigError, match=message):
        load_spec(path)
