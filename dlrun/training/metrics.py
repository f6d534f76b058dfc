"""The metrics a run logs, by task: their names and which way is better, in one place.

`training/module.py` logs exactly these; early stopping, sweeps, config validation and the
plots read them from here. Imports nothing heavy, so validation stays torch-free.
"""

from __future__ import annotations

TASKS = ("classification", "regression")
_QUALITY = {"classification": "acc", "regression": "mae"}  # the quality metric's short name, per task
_HIGHER_IS_BETTER = {"acc"}


def quality_name(task: str) -> str:
    """The short name of a task's quality metric, as the module logs it after `val/` or `test/`."""
    return _QUALITY[task]


def quality_metric(task: str) -> str:
    """The per-epoch quality metric of a task: val/acc or val/mae."""
    return f"val/{quality_name(task)}"


def epoch_metrics(task: str, extra: tuple[str, ...] = ()) -> list[str]:
    """The metrics every epoch reports, which early stopping, a sweep or a pruner can judge by; `extra`:
    the names a run's `metrics: [...]` adds (val/NAME)."""
    return ["val/loss", quality_metric(task), "train/loss", *(f"val/{name}" for name in extra)]


def every_epoch_metric() -> tuple[str, ...]:
    """The per-epoch metrics of any task, for validating a name before the task is known."""
    return ("val/loss", *(quality_metric(task) for task in TASKS), "train/loss")


def direction(metric: str) -> str:
    """"maximize" for a metric where higher is better (accuracy, or a registered metric that says so),
    else "minimize"."""
    from dlrun.components.metrics import METRICS

    name = metric.rsplit("/", 1)[-1]
    if name in _HIGHER_IS_BETTER or name in _QUALITY.values() or name == "loss":  # dlrun's own names win
        return "maximize" if name in _HIGHER_IS_BETTER else "minimize"
    if name in METRICS.names():
        return "maximize" if METRICS.get(name).details["higher_is_better"] else "minimize"
    return "maximize" if name in _HIGHER_IS_BETTER else "minimize"
