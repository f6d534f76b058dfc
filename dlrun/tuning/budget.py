"""A study's trial budget, shared by every process that works on it.

n_trials counts trials that ran or run: complete, pruned, failed by their own fault,
and running. Trials a crash or an interruption cut short do not count, so their
budget is spent again. A process claims a trial under a file lock (no two local
workers overshoot), then checks its place among the counted trials (workers on
other machines cannot overshoot either: a surplus trial is closed unrun).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import tempfile
from pathlib import Path

from dlrun.processes import is_gone, pid_of, this_process
from dlrun.tuning.report import TrialRow
from dlrun.tuning.states import TrialState
from dlrun.tracking.store import retry_while_locked


def counts(trial) -> bool:
    """True for a trial that spends budget: it ran or runs, and did not fail for a reason outside it."""
    from optuna.trial import TrialState as OptunaState

    if trial.state in (OptunaState.COMPLETE, OptunaState.PRUNED, OptunaState.RUNNING):
        return True
    return trial.state == OptunaState.FAIL and trial.user_attrs.get("dlrun_state") == TrialState.FAILED


def claim(study, n_trials: int, lock_path: Path, store_uri: str):
    """A new trial of the study, or None when its budget is spent (or held by running trials)."""
    from optuna.trial import TrialState as OptunaState

    with _file_lock(lock_path):
        fail_dead_trials(study, store_uri, missing_owner_is_dead=False)
        if sum(counts(t) for t in study.get_trials(deepcopy=False)) >= n_trials:
            return None
        trial = study.ask()
        trial.set_user_attr("dlrun_owner", this_process())
    ranked = sorted(t.number for t in study.get_trials(deepcopy=False) if counts(t))
    if trial.number not in ranked[:n_trials]:  # another machine claimed the last place first
        trial.set_user_attr("dlrun_state", TrialState.SURPLUS)
        study.tell(trial, state=OptunaState.FAIL)
        return None
    return trial


def running(study) -> list:
    """The study's trials that run now, here or in any other process."""
    from optuna.trial import TrialState as OptunaState

    return study.get_trials(deepcopy=False, states=(OptunaState.RUNNING,))


def fail_dead_trials(study, store_uri: str, missing_owner_is_dead: bool) -> list[int]:
    """Close RUNNING trials whose process is gone (a crash, kill -9) so that their budget is spent again.

    A trial's owner is its process (dlrun.processes); only owners on this host can be checked.
    A trial with no owner yet was claimed a moment before a crash, or is being claimed now: only a process
    that starts the study (not a joining worker) treats those as dead.
    """
    from optuna.trial import TrialState as OptunaState

    closed = []
    for trial in running(study):
        owner = trial.user_attrs.get("dlrun_owner")
        dead = missing_owner_is_dead if owner is None else is_gone(owner)
        if dead:
            process = pid_of(owner) if owner else "unknown"
            study._storage.set_trial_user_attr(trial._trial_id, "dlrun_state", TrialState.CRASHED)
            study._storage.set_trial_user_attr(trial._trial_id, "message", f"its process ({process}) died; its budget "
                                               "is free again (a running or next sweep run uses it)")
            study.tell(trial.number, state=OptunaState.FAIL, skip_if_finished=True)
            _close_child_run(trial.user_attrs.get("mlflow_run_id"), store_uri)
            closed.append(trial.number)
    return closed


def rows_of(study) -> list[TrialRow]:
    """Every trial of the study as reported, surplus ones left out (they never ran)."""
    from optuna.trial import TrialState as OptunaState

    states = {OptunaState.COMPLETE: TrialState.COMPLETE, OptunaState.PRUNED: TrialState.PRUNED,
              OptunaState.RUNNING: TrialState.RUNNING, OptunaState.WAITING: TrialState.WAITING}
    rows = []
    for trial in study.get_trials(deepcopy=False):
        attrs = trial.user_attrs
        state = states.get(trial.state) or TrialState(attrs.get("dlrun_state", TrialState.FAILED))
        if state == TrialState.SURPLUS:
            continue
        value = trial.value if trial.state == OptunaState.COMPLETE else attrs.get("last_value")
        rows.append(TrialRow(trial.number, state, value, list(attrs.get("overrides", [])), attrs.get("mlflow_run_id"),
                             int(attrs.get("epochs", 0)), float(attrs.get("fit_seconds", 0.0)),
                             attrs.get("message", "")))
    return rows


def lock_path_for(storage_url: str, study_name: str) -> Path:
    """The claim lock: beside a journal file, else in the temp folder, named after storage and study."""
    if "://" not in storage_url:
        return Path(f"{storage_url}.{study_name}.claim")
    digest = hashlib.sha256(f"{storage_url} {study_name}".encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"dlrun-claim-{digest}"


@contextlib.contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released by the OS if this process dies
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _close_child_run(run_id: str | None, store_uri: str) -> None:
    """The crashed trial's MLflow run: KILLED, tagged crashed (its checkpoints stay on disk)."""
    if not run_id:
        return
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store_uri)
    retry_while_locked(client.set_tag, run_id, "dlrun.trial_state", TrialState.CRASHED)
    retry_while_locked(client.set_terminated, run_id, status="KILLED")
