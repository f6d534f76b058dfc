"""The metric registry: more quality metrics a run logs each epoch, chosen by `metrics: [NAME, ...]`.

Every run logs its loss and its task's quality metric (val/acc or val/mae, see
dlrun.training.metrics); the metrics named here come on top, as val/NAME and test/NAME.
A builder takes a MetricContext and returns a metric object (update,
compute, reset: a torchmetrics.Metric): `update(predictions, targets)` receives class indices for
classification and values in the targets' own units for regression.

Nothing here imports torch: config validation imports METRICS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from dlrun.registry import Registry

METRIC_TASKS = ("classification", "regression")
# What every run logs (dlrun.training.metrics): a registered metric may not take these names.
RESERVED_METRIC_NAMES = ("loss", "acc", "mae")


@dataclass(frozen=True)
class MetricContext:
    """What dlrun gives every metric builder."""

    task: str  # "classification" or "regression"
    num_classes: int  # 0 for regression


def _checked_fits(fits: Iterable[str]) -> frozenset[str]:
    kinds = frozenset([fits] if isinstance(fits, str) else fits)
    if not kinds or not kinds <= set(METRIC_TASKS):
        raise TypeError(f"a metric's fits must name some of {', '.join(METRIC_TASKS)}; got {sorted(kinds)}.")
    return kinds


def _checked_direction(higher_is_better) -> bool:
    if not isinstance(higher_is_better, bool):
        raise TypeError(f"a metric's higher_is_better must be True or False; got {higher_is_better!r}.")
    return higher_is_better


METRICS = Registry("metric", skip_params=1,
                   required={"fits": _checked_fits, "higher_is_better": _checked_direction})


@METRICS.register("f1", "F1 score, the mean over classes (macro average)", fits={"classification"},
                  higher_is_better=True)
def f1(ctx: MetricContext):
    import torchmetrics

    return torchmetrics.F1Score(task="multiclass", num_classes=max(ctx.num_classes, 2), average="macro")


@METRICS.register("rmse", "Root mean squared error, in the targets' units", fits={"regression"},
                  higher_is_better=False)
def rmse(ctx: MetricContext):
    import torchmetrics

    return torchmetrics.MeanSquaredError(squared=False)
