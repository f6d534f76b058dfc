"""`dlrun predict`: a run id and a file of raw features in, a CSV of predictions out."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_iris
from typer.testing import CliRunner

from dlrun.cli import app
from tests.conftest import run_dlrun

runner = CliRunner()


@pytest.fixture(scope="module")
def iris_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("predict")
    done = run_dlrun("train", "data=iris", "trainer.max_epochs=30", "trainer.enable_progress_bar=false", cwd=folder)
    assert done.returncode == 0, done.stderr[-2000:]
    return folder, done.stdout.strip().splitlines()[-1].removeprefix("run_id: ")


def test_predict_from_npy_writes_classes_and_probabilities(iris_run, monkeypatch):
    folder, run_id = iris_run
    monkeypatch.chdir(folder)
    iris = load_iris()
    np.save(folder / "x.npy", iris.data.astype(np.float32))
    result = runner.invoke(app, ["predict", run_id, "--input", "x.npy", "--output", "out/p.csv"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(folder / "out" / "p.csv")
    assert list(table.columns) == ["predicted", "prob_setosa", "prob_versicolor", "prob_virginica"]
    assert len(table) == 150
    np.testing.assert_allclose(table.iloc[:, 1:].sum(axis=1), 1.0, atol=1e-5)
    names = np.array(iris.target_names)[iris.target]
    assert (table["predicted"].to_numpy() == names).mean() > 0.8


def test_predict_from_csv_matches_npy(iris_run, monkeypatch):
    folder, run_id = iris_run
    monkeypatch.chdir(folder)
    iris = load_iris()
    pd.DataFrame(iris.data, columns=iris.feature_names).to_csv(folder / "x.csv", index=False)
    np.save(folder / "x.npy", iris.data.astype(np.float32))
    assert runner.invoke(app, ["predict", run_id, "-i", "x.csv", "-o", "a.csv"]).exit_code == 0
    assert runner.invoke(app, ["predict", run_id, "-i", "x.npy", "-o", "b.csv"]).exit_code == 0
    pd.testing.assert_frame_equal(pd.read_csv(folder / "a.csv"), pd.read_csv(folder / "b.csv"))


@pytest.mark.parametrize("args, message", [
    (["0123"], "is not an MLflow run id"),
    (["0" * 32], "no run 00000000"),
    (["RUN", "-i", "missing.npy"], "no file at 'missing.npy'"),
    (["RUN", "-i", "wide.npy"], "has 5 feature columns"),
])
def test_predict_errors_exit_2(iris_run, monkeypatch, args, message):
    folder, run_id = iris_run
    monkeypatch.chdir(folder)
    np.save(folder / "wide.npy", np.zeros((3, 5), dtype=np.float32))
    args = [run_id if a == "RUN" else a for a in args]
    if "-i" not in args:
        args += ["-i", "wide.npy"]
    result = runner.invoke(app, ["predict", *args, "-o", "never.csv"])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (folder / "never.csv").exists()


def test_predict_refuses_a_csv_without_a_header_row(iris_run, monkeypatch):
    folder, run_id = iris_run
    monkeypatch.chdir(folder)
    (folder / "bare.csv").write_text("5.1,3.5,1.4,0.2\n4.9,3.0,1.4,0.2\n")
    result = runner.invoke(app, ["predict", run_id, "-i", "bare.csv", "-o", "never.csv"])
    assert result.exit_code == 2 and "no header row" in result.output
    assert not (folder / "never.csv").exists()


def test_predict_with_a_run_that_logged_no_model(workdir):
    done = run_dlrun("train", "data=iris", "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
                     "tracking.log_model=false", cwd=workdir)
    run_id = done.stdout.strip().splitlines()[-1].removeprefix("run_id: ")
    np.save(workdir / "x.npy", load_iris().data.astype(np.float32))
    result = runner.invoke(app, ["predict", run_id, "-i", "x.npy", "-o", "never.csv"])
    assert result.exit_code == 2 and "logged no model" in result.output, result.output
