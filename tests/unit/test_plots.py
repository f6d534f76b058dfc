"""tracking/plots.py: the confusion matrix, the PNGs, log_plots' failure handling; plots/ in a real run."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from dlrun.tracking.plots import (
    confusion_matrix,
    log_plots,
    plot_confusion_matrix,
    plot_learning_curves,
    predict_batches,
    predict_classes,
)
from tests.conftest import mlflow_runs, run_dlrun

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _assert_png(path: Path, min_size=(300, 300)) -> tuple[int, int]:
    assert Path(path).read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
    assert width >= min_size[0] and height >= min_size[1], (width, height)
    assert width <= 2000 and height <= 2000, (width, height)
    return width, height


def _history(task: str, epochs: int = 5) -> list[dict[str, float]]:
    metric = "val/acc" if task == "classification" else "val/mae"
    return [{"train/loss": 1.0 / (e + 1), "val/loss": 1.2 / (e + 1) + 0.05 * (e == 3), metric: 0.5 + 0.1 * e,
             "lr": 1e-3} for e in range(epochs)]


# ---- the confusion matrix ----------------------------------------------------------------------

def test_confusion_matrix_equals_a_numpy_count():
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 7, 500), rng.integers(0, 7, 500)
    expected = np.zeros((7, 7), dtype=np.int64)
    np.add.at(expected, (y_true, y_pred), 1)
    matrix = confusion_matrix(y_true, y_pred, 7)
    np.testing.assert_array_equal(matrix, expected)
    assert matrix.sum() == 500
    np.testing.assert_array_equal(matrix.sum(axis=1), np.bincount(y_true, minlength=7))  # rows: true class
    np.testing.assert_array_equal(matrix.sum(axis=0), np.bincount(y_pred, minlength=7))  # columns: predicted


def test_confusion_matrix_keeps_absent_classes_and_rejects_bad_indices():
    matrix = confusion_matrix([0, 0, 2], [0, 2, 2], 4)
    np.testing.assert_array_equal(matrix, [[1, 0, 1, 0], [0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]])
    assert confusion_matrix([], [], 3).shape == (3, 3)
    with pytest.raises(ValueError):
        confusion_matrix([0, 3], [0, 1], 3)
    with pytest.raises(ValueError):
        confusion_matrix([0, 1], [0], 3)


def test_predict_classes_uses_the_accuracy_rule_in_eval_mode_and_restores_the_mode():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 3)).train()
    x = torch.randn(101, 4)
    predicted = predict_classes(net, x, batch_size=16)
    assert net.training
    net.eval()
    with torch.no_grad():
        np.testing.assert_array_equal(predicted, net(x).argmax(dim=-1).numpy())
    np.testing.assert_array_equal(predict_classes(net, x, batch_size=1000), predicted)

    one_logit = nn.Linear(4, 1)
    with torch.no_grad():
        np.testing.assert_array_equal(predict_classes(one_logit, x), (one_logit(x)[:, 0] > 0).long().numpy())


def test_predict_batches_fills_the_predictions_in_order_and_checks_their_count():
    torch.manual_seed(0)
    net = nn.Linear(4, 3)
    x = torch.randn(50, 4)
    batches = [x[:7], x[7:30], x[30:]]
    np.testing.assert_array_equal(predict_batches(net, batches, 50), predict_classes(net, x))
    with pytest.raises(ValueError, match="more than 49 rows"):
        predict_batches(net, batches, 49)
    with pytest.raises(ValueError, match="50 rows, not 51"):
        predict_batches(net, batches, 51)


# ---- the PNGs ----------------------------------------------------------------------------------

@pytest.mark.parametrize("task", ["classification", "regression"])
def test_learning_curves_write_a_png(tmp_path, task):
    test_metrics = {"test/acc": 0.9} if task == "classification" else {"test/mae": 12.5}
    path = plot_learning_curves(_history(task), tmp_path / "curves.png", "model=mlp  data=x", task, test_metrics)
    assert path == tmp_path / "curves.png"
    width, height = _assert_png(path)
    assert width > height  # two panels side by side


def test_learning_curves_survive_one_epoch_and_missing_metrics(tmp_path):
    _assert_png(plot_learning_curves([{"train/loss": 0.7, "lr": 0.1}], tmp_path / "one.png", "t", "classification"))
    _assert_png(plot_learning_curves([], tmp_path / "none.png", "t", "regression"))


@pytest.mark.parametrize("classes", [2, 10, 20])
def test_confusion_matrix_writes_a_png(tmp_path, classes):
    rng = np.random.default_rng(classes)
    y = rng.integers(0, classes, 300)
    matrix = confusion_matrix(y, np.where(rng.random(300) < 0.8, y, rng.integers(0, classes, 300)), classes)
    names = [f"class with a long name {i}" for i in range(classes)]
    _assert_png(plot_confusion_matrix(matrix, names, tmp_path / "cm.png", "model=cnn  data=x"))


# ---- log_plots ---------------------------------------------------------------------------------

class _Record:
    def __init__(self, fail: bool = False, stored: list[dict[str, float]] | None = None):
        self.logged: list[tuple[str, str]] = []
        self.fail = fail
        self.stored = stored or []

    def metric_history(self, keys):
        if self.fail:
            raise OSError("the store is gone")
        return self.stored

    def log_file(self, path, artifact_path=None):
        if self.fail:
            raise OSError("the store is gone\nsecond line")
        _assert_png(path)
        self.logged.append((Path(path).name, artifact_path))


def _data(task: str):
    torch.manual_seed(0)
    if task == "classification":
        return types.SimpleNamespace(task=task, num_classes=3, class_names=["a", "b", "c"],
                                     x_test=torch.randn(40, 4), y_test=torch.randint(0, 3, (40,)))
    return types.SimpleNamespace(task=task, num_classes=0, class_names=[], x_test=torch.randn(40, 4),
                                 y_test=torch.randn(40, 1))


def test_log_plots_logs_the_confusion_matrix_for_classification_only():
    choices = {"model": "mlp", "data": "iris"}
    record = _Record()
    logged = log_plots(record, _history("classification"), _data("classification"), nn.Linear(4, 3), choices,
                       {"test/acc": 0.5})
    assert logged == ["plots/learning_curves.png", "plots/confusion_matrix.png"]
    assert record.logged == [("learning_curves.png", "plots"), ("confusion_matrix.png", "plots")]

    record = _Record()
    assert log_plots(record, _history("regression"), _data("regression"), nn.Linear(4, 1), choices) == [
        "plots/learning_curves.png"]


def test_log_plots_predicts_the_test_loaders_batches(monkeypatch):
    """With the test loader (streamed data: read by its workers), x_test itself is not read."""
    import dlrun.tracking.plots as plots
    from dlrun.data.loader import BatchLoader

    matrices = []
    original = plots.plot_confusion_matrix
    monkeypatch.setattr(plots, "plot_confusion_matrix",
                        lambda matrix, *a: matrices.append(matrix) or original(matrix, *a))
    data, net = _data("classification"), nn.Linear(4, 3)
    loader = BatchLoader(data.x_test, data.y_test, 16, shuffle=False)
    expected = confusion_matrix(data.y_test.numpy(), predict_classes(net, data.x_test), 3)
    data.x_test = torch.randn(40, 5)  # the net could not take it
    logged = log_plots(_Record(), _history("classification"), data, net, {}, test_loader=loader)
    assert logged == ["plots/learning_curves.png", "plots/confusion_matrix.png"]
    np.testing.assert_array_equal(matrices[-1], expected)


def test_the_curves_come_from_the_store_when_it_holds_more_epochs(monkeypatch):
    """A run resumed in the same MLflow run: this process saw 2 epochs, the store holds all 6."""
    import dlrun.tracking.plots as plots

    drawn = []
    original = plots.plot_learning_curves
    monkeypatch.setattr(plots, "plot_learning_curves",
                        lambda history, *a, **k: drawn.append(history) or original(history, *a, **k))
    stored = _history("regression", 6)
    log_plots(_Record(stored=stored), _history("regression", 2), _data("regression"), None, {})
    assert drawn[-1] == stored
    log_plots(_Record(stored=_history("regression", 1)), _history("regression", 2), _data("regression"), None, {})
    assert drawn[-1] == _history("regression", 2)  # the store lags: this process's history


def test_a_failing_plot_warns_in_one_line_and_does_not_raise(capsys):
    data = _data("classification")
    data.x_test = torch.randn(40, 5)  # the net cannot take it: the confusion matrix fails, the curves don't
    record = _Record()
    logged = log_plots(record, _history("classification"), data, nn.Linear(4, 3), {"model": "m", "data": "d"})
    assert logged == ["plots/learning_curves.png"]
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == 1 and warnings[0].startswith("dlrun: warning: plots/confusion_matrix.png not logged")

    assert log_plots(_Record(fail=True), _history("regression"), _data("regression"), None, {}) == []
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == 1 and "OSError: the store is gone second line" in warnings[0]

    assert log_plots(_Record(), _history("regression"), None, None, {}) == []  # no data at all
    assert all(line.startswith("dlrun: warning: ") for line in capsys.readouterr().err.splitlines())


# ---- a real run --------------------------------------------------------------------------------

@pytest.mark.parametrize("data, expected", [
    ("iris", {"plots/learning_curves.png", "plots/confusion_matrix.png"}),
    ("diabetes", {"plots/learning_curves.png"}),
])
def test_a_run_logs_its_plots(tmp_path, data, expected):
    done = run_dlrun("train", f"data={data}", "trainer.max_epochs=2", "trainer.enable_progress_bar=false",
                     "tracking.log_model=false", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "warning: plots" not in done.stderr
    client, runs = mlflow_runs(tmp_path / "mlflow.db")
    (run,) = runs
    assert run.info.status == "FINISHED"
    assert {a.path for a in client.list_artifacts(run.info.run_id, "plots")} == expected
    for artifact in expected:
        _assert_png(Path(client.download_artifacts(run.info.run_id, artifact, str(tmp_path))))
