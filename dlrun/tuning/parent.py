"""The parent MLflow run of a sweep: every trial is a child run nested under it."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

from dlrun.tuning.report import TrialRow, best_row, history_figure, importance_figure, trials_csv


def child_tags(parent_run_id: str, sweep: str, number: int) -> dict[str, str]:
    """Tags that nest a trial's run under the parent (MLflow's UI reads mlflow.parentRunId)."""
    return {"mlflow.parentRunId": parent_run_id, "dlrun.sweep": sweep, "dlrun.trial_number": str(number)}


class SweepParent:
    """The parent run: the sweep's settings, the best value per finished trial, the final table."""

    def __init__(self, uri: str, experiment: str, run_id: str | None = None):
        from dlrun.tracking.record import RunRecord

        self.record = RunRecord(uri, experiment, run_id)

    @property
    def run_id(self) -> str:
        return self.record.run_id

    def start(self, name: str, kind: str, params: dict[str, str], files: dict[str, str]) -> str:
        """A new RUNNING parent run; `files` are logged as text artifacts (the sweep file)."""
        from dlrun.tracking.env import environment_tags

        tags = {**environment_tags(), "dlrun.sweep": name, "dlrun.kind": kind}
        self.record.create(f"sweep-{name}", params, tags, source=f"dlrun {kind}")
        for artifact, text in files.items():
            self.record.log_text(text, artifact)
        return self.run_id

    def reopen(self) -> None:
        self.record.reopen(self.run_id)

    def log_best(self, rows: list[TrialRow], metric: str, direction: str, step: int) -> None:
        best = best_row(rows, direction)
        if best is not None:
            self.record.log_metrics({f"best/{metric}": best.value}, step=step)

    def finish(self, rows: list[TrialRow], metric: str, direction: str, status: str,
               importances: dict[str, float] | None = None) -> None:
        """trials.csv, the plots and the best trial's tags; then the run's final status."""
        self.record.log_text(trials_csv(rows, metric), "trials.csv")
        best = best_row(rows, direction)
        if best is not None:
            self.record.log_metrics({f"best/{metric}": best.value}, step=max(r.number for r in rows))
            self.record.set_tags({"dlrun.best_trial": best.number, "dlrun.best_run_id": best.run_id or "",
                                  "dlrun.best_overrides": " ".join(best.overrides)})
        self._log_plots(rows, metric, direction, importances)
        self.record.end(status)

    def _log_plots(self, rows, metric, direction, importances) -> None:
        figures = {"optimization_history.png": lambda: history_figure(rows, metric, direction)}
        if importances:
            figures["param_importances.png"] = lambda: importance_figure(importances)
        with tempfile.TemporaryDirectory() as folder:
            for name, make in figures.items():
                try:
                    path = Path(folder) / name
                    make().savefig(path)
                    self.record.log_file(path, "plots")
                except Exception as error:  # a plot is a nicety; the record is what matters
                    warnings.warn(f"dlrun: could not draw plots/{name}: {error}", stacklevel=2)
