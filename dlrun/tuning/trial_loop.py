"""The loop of one process working on a study: claim a trial under the budget, run it, report it.

Every process on a study (the one that started it, `--worker` processes) runs this loop;
the budget (budget.py) decides who runs what, so no trial runs twice and none beyond n_trials.
"""

from __future__ import annotations

import time
from typing import Callable

from dlrun.tuning import budget, storage
from dlrun.tuning.check import TrialConfigs
from dlrun.tuning.parent import child_tags
from dlrun.tuning.report import TrialRow, progress_line
from dlrun.tuning.samplers import make_sampler
from dlrun.tuning.session import StudySession
from dlrun.tuning.states import TrialState
from dlrun.tuning.trial import run_trial

CLAIM_RETRY_S = 1.0  # how often a process with nothing to claim looks again while other trials run


def work(session: StudySession, parent, echo: Callable[[str], None]) -> None:
    """Claim and run trials until the budget is spent and no trial is running anywhere.

    Args:
        session: the opened study.
        parent: the SweepParent, which logs the best value after each trial.
        echo: prints a progress line after each trial.

    Raises:
        StorageLost: the study's database stopped answering; the trial that ran is closed FAILED.
    """
    with storage.lost_as_error(session.storage_url, session.name):
        _work(session, parent, echo)


def _work(session: StudySession, parent, echo: Callable[[str], None]) -> None:
    lock = budget.lock_path_for(session.storage_url, session.name)
    # One process: the file's seed, moved on by the trials so far, so a resumed study does not repeat
    # its first draws. Parallel workers draw from fresh entropy, or they would draw the same values.
    seed = None if session.options.worker else session.spec.seed + len(session.study.trials)
    session.study.sampler = make_sampler(session.spec.sampler, session.params, seed, str(session.spec.path))
    configs = TrialConfigs(session.base, session.options.config_dir)  # the base composed once per process
    while True:
        trial = budget.claim(session.study, session.n_trials, lock, session.store_uri)
        if trial is None:
            if not budget.running(session.study):
                return
            time.sleep(CLAIM_RETRY_S)  # another process's trial may still crash and free its budget
            continue
        row = _run_one(session, trial, configs)
        rows = budget.rows_of(session.study)
        parent.log_best(rows, session.metric, session.direction, step=trial.number)
        echo(progress(session, row, rows, done=sum(r.state.spent_budget() for r in rows)))


def _beats(session: StudySession, number: int, value: float) -> bool:
    """Whether trial `number` ending at value becomes the study's best as dlrun names it (report.best_row:
    the best value, the first trial among equals): better than every COMPLETE trial, or equal to the best
    and numbered before every trial that reached it (in a parallel study trials finish out of order)."""
    from optuna.trial import TrialState as OptunaState

    done = [(t.value, t.number) for t in session.study.get_trials(deepcopy=False, states=(OptunaState.COMPLETE,))]
    if not done:
        return True
    best = max(v for v, _ in done) if session.direction == "maximize" else min(v for v, _ in done)
    better = value > best if session.direction == "maximize" else value < best
    return better or (value == best and all(number < n for v, n in done if v == best))


def progress(session: StudySession, row: TrialRow, rows: list[TrialRow], done: int) -> str:
    """The progress line of a finished trial: `[3/8] trial 2  complete  val/acc=0.95  best=...`; done: the
    finished trials that spent budget (a crashed or interrupted one is run again and does not count)."""
    return progress_line(row, done, session.n_trials, rows, session.metric, session.direction)


def _run_one(session: StudySession, trial, configs: TrialConfigs) -> TrialRow:
    """Train one claimed trial and tell the study its outcome; an interruption is recorded, then raised."""
    from optuna.trial import TrialState as OptunaState

    from dlrun.training.outcome import Interrupted

    own = [p.override(p.suggest(trial)) for p in session.params]
    trial.set_user_attr("overrides", own)
    pruning = session.spec.pruner.name != "none"
    lost: list[storage.StorageLost] = []

    def guarded(call: Callable) -> Callable:
        """call, where a database that stops answering raises a StorageLost: a DlrunError, so the trial's
        run is closed FAILED without a traceback."""
        def calling(*args):
            try:
                return call(*args)
            except Exception as error:
                if "://" not in session.storage_url or not storage.is_lost_connection(error):
                    raise
                lost.append(storage.lost(session.storage_url, session.name, error))
                raise lost[-1] from None
        return calling

    @guarded
    def report(value: float, epoch: int) -> bool:
        trial.report(value, epoch)
        return pruning and trial.should_prune()

    try:
        outcome = run_trial(session.base + own, session.options.config_dir, session.metric, session.store_uri,
                            child_tags(session.parent_run_id, session.name, trial.number), report,
                            on_start=guarded(lambda run_id: trial.set_user_attr("mlflow_run_id", run_id)),
                            is_best=None if session.spec.models == "all" else guarded(lambda v: _beats(session, trial.number, v)),
                            plots=session.spec.plots, configs=configs)
    except Interrupted:
        trial.set_user_attr("dlrun_state", TrialState.INTERRUPTED)
        session.study.tell(trial, state=OptunaState.FAIL)
        raise
    if lost:  # its run is closed FAILED; the study cannot be told, a rerun closes the trial (its process gone)
        raise lost[0]
    for key, value in (("epochs", outcome.epochs), ("fit_seconds", outcome.fit_seconds),
                       ("message", outcome.message), ("last_value", outcome.value)):
        trial.set_user_attr(key, value)
    if outcome.state == TrialState.COMPLETE:
        session.study.tell(trial, outcome.value)
    elif outcome.state == TrialState.PRUNED:
        session.study.tell(trial, state=OptunaState.PRUNED)
    else:
        trial.set_user_attr("dlrun_state", TrialState.FAILED)
        session.study.tell(trial, state=OptunaState.FAIL)
    return TrialRow(trial.number, outcome.state, outcome.value, own, outcome.run_id, outcome.epochs,
                    outcome.fit_seconds, outcome.message)
