"""`dlrun export`: a run's served model as ONNX or TorchScript, computing what MLflow serves."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from sklearn.datasets import load_iris
from typer.testing import CliRunner

from dlrun.cli import app
from dlrun.lifecycle import export
from dlrun.tracking.store import active_store
from tests.conftest import mlflow_runs, run_dlrun

runner = CliRunner()


@pytest.fixture(scope="module")
def iris_run(tmp_path_factory):
    """One trained iris run, its folder, id and the served model's outputs on the iris rows (pyfunc)."""
    import mlflow.pyfunc

    folder = tmp_path_factory.mktemp("export")
    done = run_dlrun("train", "data=iris", "trainer.max_epochs=2", "trainer.enable_progress_bar=false", cwd=folder)
    assert done.returncode == 0, done.stderr[-2000:]
    run_id = done.stdout.strip().splitlines()[-1].removeprefix("run_id: ")
    _, (run,) = mlflow_runs(folder / "mlflow.db")
    rows = load_iris().data.astype(np.float32)
    with active_store(f"sqlite:///{folder / 'mlflow.db'}"):
        served = mlflow.pyfunc.load_model(run.data.tags["dlrun.model_uri"]).predict(rows)
    return folder, run_id, rows, np.asarray(served)


def test_onnx_file_gives_what_mlflow_serves(iris_run, monkeypatch):
    import onnxruntime

    folder, run_id, rows, served = iris_run
    monkeypatch.chdir(folder)
    result = runner.invoke(app, ["export", run_id, "--format", "onnx", "--output", "exported/model.onnx"])
    assert result.exit_code == 0, result.output
    assert "input 'features': float32 [batch, 4]" in result.output
    assert sorted(p.name for p in (folder / "exported").iterdir()) == ["model.onnx"]  # one file, no scratch
    session = onnxruntime.InferenceSession(str(folder / "exported" / "model.onnx"))
    (probabilities,) = session.run(None, {"features": rows})
    np.testing.assert_allclose(probabilities, served, atol=1e-5, rtol=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    (single,) = session.run(None, {"features": rows[:1]})  # the batch size is free
    np.testing.assert_allclose(single, served[:1], atol=1e-5, rtol=0)
    props = session.get_modelmeta().custom_metadata_map
    assert props["dlrun.run_id"] == run_id
    assert json.loads(props["dlrun.class_names"]) == ["setosa", "versicolor", "virginica"]


def test_torchscript_file_gives_what_mlflow_serves(iris_run, monkeypatch):
    folder, run_id, rows, served = iris_run
    monkeypatch.chdir(folder)
    result = runner.invoke(app, ["export", run_id, "--format", "torchscript", "-o", "model.pt"])
    assert result.exit_code == 0, result.output
    extra = {"dlrun.json": ""}
    loaded = torch.jit.load(str(folder / "model.pt"), _extra_files=extra)
    with torch.no_grad():
        np.testing.assert_allclose(loaded(torch.from_numpy(rows)).numpy(), served, atol=1e-5, rtol=0)
        np.testing.assert_allclose(loaded(torch.from_numpy(rows[:3])).numpy(), served[:3], atol=1e-5, rtol=0)
    assert json.loads(extra["dlrun.json"])["dlrun.task"] == "classification"


def test_export_reads_the_store_named_by_tracking_uri(iris_run, tmp_path, monkeypatch):
    folder, run_id, _, _ = iris_run
    monkeypatch.chdir(tmp_path)  # no mlflow.db here
    result = runner.invoke(app, ["export", run_id, "-f", "torchscript", "-o", "m.pt",
                                 "--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m.pt").is_file()
    elsewhere = runner.invoke(app, ["export", run_id, "-f", "torchscript", "-o", "n.pt"])  # ./mlflow.db by default
    assert elsewhere.exit_code == 2 and "no MLflow store at" in elsewhere.output


@pytest.mark.parametrize("args, message", [
    (["--format", "onxx"], "unknown export format 'onxx' (in --format). Did you mean 'onnx'? Options: onnx, torchscript."),
    (["--format", "savedmodel"], "Options: onnx, torchscript."),
    (["-o", "."], "is a folder; give the file to write"),
])
def test_bad_export_arguments_exit_2(iris_run, tmp_path, monkeypatch, args, message):
    folder, run_id, _, _ = iris_run
    monkeypatch.chdir(folder)
    result = runner.invoke(app, ["export", run_id, "-o", str(tmp_path / "x.onnx"), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "x.onnx").exists()


def test_onnx_without_its_extra_names_the_extra(iris_run, tmp_path, monkeypatch):
    folder, run_id, _, _ = iris_run
    monkeypatch.chdir(folder)
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed: importing it fails
    result = runner.invoke(app, ["export", run_id, "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2, result.output
    assert "needs onnxscript, which is not installed" in result.output
    assert "pip install 'dlrun[onnx]'" in result.output
    assert list(tmp_path.iterdir()) == []


class _Bessel(torch.nn.Module):
    """An operation that ONNX has no translation for."""

    def forward(self, x):
        return torch.special.bessel_j0(x)


def test_a_model_onnx_cannot_express_exits_2_saying_why(iris_run, tmp_path, monkeypatch):
    folder, run_id, _, _ = iris_run
    monkeypatch.chdir(folder)
    monkeypatch.setattr(export, "_torch_module", lambda served, run_id: _Bessel())
    result = runner.invoke(app, ["export", run_id, "-o", str(tmp_path / "out" / "m.onnx")])
    assert result.exit_code == 2, result.output
    assert f"the model of run {run_id} cannot be exported as onnx" in result.output
    assert "bessel_j0" in result.output and "Try the other format (torchscript)" in result.output
    assert list((tmp_path / "out").iterdir()) == []  # the scratch folder is gone too


def test_an_export_that_computes_otherwise_is_refused(iris_run, tmp_path, monkeypatch):
    folder, run_id, _, _ = iris_run
    monkeypatch.chdir(folder)
    loader = export._load_torchscript
    monkeypatch.setattr(export, "_load_torchscript", lambda path: lambda x: loader(path)(x) + 1e-3)
    result = runner.invoke(app, ["export", run_id, "-f", "torchscript", "-o", str(tmp_path / "m.pt")])
    assert result.exit_code == 2, result.output
    assert "does not compute what the served model does" in result.output
    assert list(tmp_path.iterdir()) == []
