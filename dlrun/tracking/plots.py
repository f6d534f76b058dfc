"""PNG plots of a finished run, logged under plots/: learning curves and a confusion matrix.

matplotlib is imported inside the functions (commands that don't train stay light)
and used through its object API with the Agg canvas: no pyplot, so no global figure
registry, no interactive backend, and each figure is freed once written.
`log_plots` never raises: a plot that cannot be drawn costs a one-line warning, not the run.
"""

from __future__ import annotations

import math
import sys
import tempfile
from pathlib import Path

import numpy as np

from dlrun.training.metrics import quality_metric

ANNOTATE_MAX_CLASSES = 12  # counts are written in the cells up to this many classes
_NAME_CHARS = 18  # longer class names are cut on the axes


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """Counts: row = true class, column = predicted class, shape (num_classes, num_classes)."""
    y_true = np.asarray(y_true, dtype=np.int64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.int64).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"{y_true.size} labels but {y_pred.size} predictions")
    if y_true.size and (min(y_true.min(), y_pred.min()) < 0 or max(y_true.max(), y_pred.max()) >= num_classes):
        raise ValueError(f"class indices outside 0..{num_classes - 1}")
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes)


def predict_classes(net, x, batch_size: int = 512) -> np.ndarray:
    """The class `net` predicts for each row of x: eval mode, no gradients, in batches.

    Same rule as DlrunModule's accuracy: argmax of the logits, or logit > 0 for one binary logit.
    The net's train/eval mode is restored afterwards.
    """
    return predict_batches(net, (x[start : start + batch_size] for start in range(0, len(x), batch_size)), len(x))


def predict_batches(net, inputs, rows: int) -> np.ndarray:
    """predict_classes over an iterable of input batches holding `rows` rows in all, the predictions in their
    order. They are written into one array made beforehand: a small tensor kept per batch would sit where the
    batch's activations were freed, so that the next batch's activations took fresh heap pages (a 7,500-image
    split grew the heap by ~400 MiB)."""
    import torch

    device = next((p.device for p in net.parameters()), torch.device("cpu"))
    was_training = net.training
    net.eval()
    predictions, filled = np.empty(rows, dtype=np.int64), 0
    try:
        with torch.no_grad():
            for batch in inputs:
                outputs = net(batch.to(device))
                predicted = outputs.argmax(dim=-1) if outputs.shape[-1] > 1 else (outputs[:, 0] > 0).long()
                if filled + len(predicted) > rows:
                    raise ValueError(f"the batches hold more than {rows} rows")
                predictions[filled : filled + len(predicted)] = predicted.cpu().numpy()
                filled += len(predicted)
    finally:
        net.train(was_training)
    if filled != rows:
        raise ValueError(f"the batches hold {filled} rows, not {rows}")
    return predictions


def plot_learning_curves(history: list[dict[str, float]], path: Path | str, title: str, task: str,
                         test_metrics: dict[str, float] | None = None) -> Path:
    """Two panels over epochs 1..N: train/val loss, and val/acc or val/mae; written as a PNG.

    Args:
        history: one dict of metrics per epoch, first epoch first (RunRecord.metric_history or
            EpochMetricsToMlflow.history); a missing key is a gap.
        path: the PNG to write.
        title: the figure's title (the run's model and data).
        task: "classification" or "regression": which metric the second panel shows.
        test_metrics: the best checkpoint's test metrics; the test value is drawn as a dashed line.
    """
    from matplotlib.ticker import MaxNLocator

    metric = quality_metric(task)
    epochs = np.arange(1, len(history) + 1)

    def series(key: str) -> np.ndarray:
        return np.array([float(h.get(key, math.nan)) for h in history], dtype=float)

    marker = "o" if len(history) <= 30 else None  # single epochs stay visible
    figure = _figure(figsize=(10, 4.2), layout=None)  # fixed margins: cheaper than a layout engine
    figure.subplots_adjust(left=0.075, right=0.985, bottom=0.12, top=0.84, wspace=0.22)
    loss_axes, metric_axes = figure.subplots(1, 2)
    for key, colour in (("train/loss", "tab:blue"), ("val/loss", "tab:orange")):
        values = series(key)
        if np.isfinite(values).any():
            loss_axes.plot(epochs, values, marker=marker, markersize=3, color=colour, label=key)
    values = series(metric)
    if np.isfinite(values).any():
        metric_axes.plot(epochs, values, marker=marker, markersize=3, color="tab:green", label=metric)
    test_key = "test/" + metric.split("/")[1]
    if test_metrics and test_key in test_metrics:
        metric_axes.axhline(test_metrics[test_key], color="tab:red", linestyle="--", linewidth=1,
                            label=f"{test_key} = {_number(test_metrics[test_key])} (best checkpoint)")
    val_loss = series("val/loss")
    if np.isfinite(val_loss).any():
        best = int(np.nanargmin(val_loss)) + 1
        for axes in (loss_axes, metric_axes):
            axes.axvline(best, color="grey", linestyle=":", linewidth=1,
                         label=f"best val/loss (epoch {best})" if axes is loss_axes else None)
    loss_axes.set(xlabel="epoch", ylabel="loss", title="loss")
    unit = " (target units)" if task == "regression" else ""
    metric_axes.set(xlabel="epoch", ylabel=metric.split("/")[1] + unit, title=metric)
    for axes in (loss_axes, metric_axes):
        axes.set_xlim(0.5, max(len(history), 1) + 0.5)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        axes.grid(alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize="small")
    figure.suptitle(title)
    return _save(figure, path)


def plot_confusion_matrix(matrix: np.ndarray, class_names: list[str], path: Path | str, title: str) -> Path:
    """The confusion matrix as a heat map of counts, class names on both axes; written as a PNG.

    Counts are written in the cells when there are at most ANNOTATE_MAX_CLASSES classes;
    beyond that the colour bar carries them and the tick labels shrink.
    """
    n = matrix.shape[0]
    names = [_short(str(c)) for c in class_names] if len(class_names) == n else [str(i) for i in range(n)]
    side = min(12.0, max(5.5, 3.0 + 0.4 * n))
    figure = _figure(figsize=(side + 1.2, side))
    figure.get_layout_engine().set(w_pad=0.1, h_pad=0.1)  # inches of margin around the labels
    axes = figure.subplots()
    image = axes.imshow(matrix, cmap="Blues", interpolation="nearest", vmin=0)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="count")
    font = "medium" if n <= ANNOTATE_MAX_CLASSES else "small" if n <= 20 else "x-small"
    slant = n * max((len(name) for name in names), default=0) > 40  # labels that would collide
    axes.set_xticks(range(n), names, rotation=45 if slant else 0, ha="right" if slant else "center",
                    rotation_mode="anchor", fontsize=font)
    axes.set_yticks(range(n), names, fontsize=font)
    axes.set(xlabel="predicted class", ylabel="true class")
    if n <= ANNOTATE_MAX_CLASSES:
        threshold = matrix.max() / 2 if matrix.size else 0
        count_font = "large" if n <= 5 else "medium" if n <= 8 else "small"
        for i in range(n):
            for j in range(n):
                axes.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=count_font,
                          color="white" if matrix[i, j] > threshold else "black").set_in_layout(False)
    total = int(matrix.sum())
    accuracy = f", accuracy {np.trace(matrix) / total:.3f}" if total else ""
    axes.set_title(f"{title}\ntest split: {total} samples{accuracy}")
    return _save(figure, path)


def plot_title(choices: dict[str, str]) -> str:
    """The run's model and data choices: 'model=mlp  data=iris'."""
    return f"model={choices.get('model', '?')}  data={choices.get('data', '?')}"


def log_plots(record, history: list[dict[str, float]], data, net, choices: dict[str, str],
              test_metrics: dict[str, float] | None = None, batch_size: int = 512, test_loader=None) -> list[str]:
    """Draw the run's plots and log them under plots/; the artifact paths logged.

    Never raises: each plot that fails is skipped with a one-line warning on stderr.

    Args:
        record: the RunRecord of the run.
        history: the per-epoch metrics.
        data: the DataBundle (task, class names, test split).
        net: the network holding the best checkpoint's weights.
        choices: the run's config-group choices; model and data name the plots.
        test_metrics: the test metrics already logged.
        batch_size: rows per forward pass for the test predictions.
        test_loader: the test split's batch loader; where given, the confusion matrix predicts its batches
            instead of slices of data.x_test. Streamed features are then read by its workers, as the test
            read them: decoded here, the split's images would grow this process's heap by about their size.
    """
    logged: list[str] = []

    def draw(folder: str, name: str, make) -> None:
        try:
            path = make(Path(folder) / name)
            record.log_file(path, "plots")
            logged.append(f"plots/{name}")
        except Exception as error:  # a plot is never worth a failed run
            _warn(f"plots/{name} not logged", error)

    try:
        title = plot_title(choices)
        curves = _stored_history(record, history, data.task)
        with tempfile.TemporaryDirectory(prefix="dlrun-plots-") as folder:
            draw(folder, "learning_curves.png",
                 lambda path: plot_learning_curves(curves, path, title, data.task, test_metrics))
            if data.task == "classification":
                def confusion(path: Path) -> Path:
                    predicted = (predict_batches(net, (inputs for inputs, _ in test_loader), len(data.y_test))
                                 if test_loader is not None else predict_classes(net, data.x_test, batch_size))
                    matrix = confusion_matrix(data.y_test.cpu().numpy(), predicted, data.num_classes)
                    return plot_confusion_matrix(matrix, list(data.class_names or []), path, title)

                draw(folder, "confusion_matrix.png", confusion)
    except Exception as error:
        _warn("plots not logged", error)
    return logged


def _stored_history(record, history: list[dict[str, float]], task: str) -> list[dict[str, float]]:
    """The run's epochs as MLflow holds them, so that a run resumed in the same MLflow run is
    plotted from its first epoch; this process's history where the store has fewer epochs or fails."""
    try:
        stored = record.metric_history(["train/loss", "val/loss", quality_metric(task)])
    except Exception:
        return history
    return stored if len(stored) >= len(history) else history


def _warn(what: str, error: Exception) -> None:
    message = " ".join(f"{type(error).__name__}: {error}".split())  # one line
    print(f"dlrun: warning: {what}: {message[:300]}", file=sys.stderr)


def _figure(figsize, layout: str | None = "constrained"):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=figsize, layout=layout)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: Path | str) -> Path:
    path = Path(path)
    try:
        figure.savefig(path, format="png", dpi=100)
    finally:
        figure.clear()  # drop the artists now rather than at the next collection
    return path


def _number(value: float) -> str:
    """4 significant digits, without an exponent for the sizes metrics usually have."""
    return f"{value:,.1f}" if 1e3 <= abs(value) < 1e9 else f"{value:.4g}"


def _short(name: str) -> str:
    return name if len(name) <= _NAME_CHARS else name[: _NAME_CHARS - 1] + "…"
