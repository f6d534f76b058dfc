"""`dlrun runs`: a table of recent runs in the tracking store."""

from __future__ import annotations

from datetime import datetime

from dlrun.database import hide_passwords
from dlrun.errors import ConfigError
from dlrun.lifecycle.stored import open_store

GROUPS = ("data", "model", "optim", "loss", "activation", "regularization", "scheduler", "augment", "trainer")
MAIN_METRICS = ("test/acc", "test/mae", "test/loss", "val/loss")


def runs_table(experiment: str = "dlrun", filter_string: str = "", sort: str = "start_time DESC",
               limit: int = 20, uri: str | None = None) -> str:
    """The runs of an experiment as an aligned text table, newest first by default.

    Args:
        experiment: the MLflow experiment name.
        filter_string: MLflow's search filter, e.g. "metrics.`test/acc` > 0.9".
        sort: MLflow's order_by clause, e.g. "metrics.`test/acc` DESC".
        limit: how many runs at most.
    """
    from mlflow.exceptions import MlflowException

    client, store = open_store(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = [e.name for e in client.search_experiments()]
        raise ConfigError(f"no experiment '{experiment}' in {hide_passwords(store)}. Experiments there: {', '.join(names) or 'none'}.")
    try:
        runs = client.search_runs([found.experiment_id], filter_string=filter_string, order_by=[sort],
                                  max_results=limit)
    except MlflowException as error:
        raise ConfigError(f"bad --filter or --sort for MLflow: {error.message.splitlines()[0]}") from None
    if not runs:
        return f"no runs in experiment '{experiment}' of {hide_passwords(store)}" + (f" matching {filter_string}" if filter_string else "")
    rows = [_row(run) for run in runs]
    header = ["run_id", "status", "start", "duration", "choices", "metrics"]
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header) - 1)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)) + "  " + header[-1]]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
    if any(row[1] == LOST for row in rows):
        lines.append(f"{LOST}: recorded as RUNNING, but the process that ran it is gone; its last checkpoint "
                     "continues with: dlrun resume RUN_ID")
    return "\n".join(lines)


def _row(run) -> list[str]:
    info, params, metrics = run.info, run.data.params, run.data.metrics
    start = datetime.fromtimestamp(info.start_time / 1000).strftime("%Y-%m-%d %H:%M") if info.start_time else "-"
    duration = f"{(info.end_time - info.start_time) / 1000:.0f}s" if info.end_time and info.start_time else "-"
    choices = " ".join(f"{g}={params[g]}" for g in GROUPS if g in params)
    shown = "  ".join(f"{m}={metrics[m]:.4f}" for m in MAIN_METRICS if m in metrics)
    return [info.run_id, _true_status(run), start, duration, choices, shown]


LOST = "LOST"


def _true_status(run) -> str:
    """MLflow's status, except that a RUNNING run whose process on this host is gone (killed with
    SIGKILL, out of memory, a crash of the machine) is LOST: nothing will ever close it."""
    from dlrun.processes import is_gone
    from dlrun.tracking.record import PROCESS_TAG

    owner = run.data.tags.get(PROCESS_TAG)
    return LOST if run.info.status == "RUNNING" and owner and is_gone(owner) else run.info.status
