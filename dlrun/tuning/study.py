"""`dlrun sweep`: an Optuna study whose trials are full dlrun training runs.

The study lives in a storage (storage.py), so the same command resumes it and `--worker`
processes on other machines join it. The process that starts the study owns the parent
MLflow run; every process that works on it claims trials from the shared budget and runs
them itself (trial_loop.py), or starts n_jobs worker processes (workers.py).
"""

from __future__ import annotations

import dataclasses
import sys
import warnings
from typing import Callable

from dlrun.database import check_database, hide_passwords
from dlrun.errors import ConfigError, TrainingFailed
from dlrun.tuning import budget, storage
from dlrun.tuning.check import check_base, check_params
from dlrun.tuning.grid import SweepResult, set_threads
from dlrun.tuning.parent import SweepParent
from dlrun.tuning.pruners import make_pruner
from dlrun.tuning.session import Options, StudySession
from dlrun.tuning.space import search_space
from dlrun.tuning.spec import SweepSpec
from dlrun.tuning.states import TrialState
from dlrun.tuning.study_checks import (
    check_distributions,
    dry_run,
    refuse_identical_trials,
    refuse_searched_overrides,
    trials_to_run,
)
from dlrun.tuning.trial_loop import progress, work
from dlrun.tracking.server import check_reachable
from dlrun.tracking.store import tracking_uri


def run_study(spec: SweepSpec, options: Options, echo: Callable[[str], None]) -> SweepResult:
    """Start or resume the study of `spec` (or join it with options.worker) and run trials until its budget is spent.

    Raises:
        ConfigError: the sweep does not fit the config tree, or its storage or study cannot be used.
        Interrupted: Ctrl-C or SIGTERM; the trials done are kept and the same command resumes.
        StorageLost: the study's database stopped answering; the parent run is FAILED, the same command resumes.
        TrainingFailed: every trial failed.
    """
    from dlrun.training.outcome import Interrupted

    jobs = 1 if options.worker else (options.n_jobs or spec.n_jobs)
    warm = []
    if jobs > 1:  # the workers import while this process checks the sweep and opens the study
        from dlrun.tuning.workers import start_warm

        warm = start_warm(jobs - 1)
    try:
        session = open_study(spec, options)
    except BaseException:
        from dlrun.tuning.workers import dismiss

        dismiss(warm)
        raise
    if options.threads:
        set_threads(options.threads)
    done = sum(budget.counts(t) and t.state.is_finished() for t in session.study.get_trials(deepcopy=False))
    echo(f"dlrun: study '{session.name}' in {hide_passwords(session.storage_url)}: {done} trials done, "
         f"budget {session.n_trials}, {jobs} process{'es' if jobs > 1 else ''}; parent run {session.parent_run_id}")
    parent = SweepParent(session.store_uri, session.experiment, session.parent_run_id)
    try:
        with storage.lost_as_error(session.storage_url, session.name):
            rows = _run_trials(session, parent, jobs, echo, warm)
    except (Interrupted, KeyboardInterrupt):
        if not options.worker:
            parent.finish(budget.rows_of(session.study), session.metric, session.direction, "KILLED")
        raise Interrupted(f"the study '{session.name}' was interrupted; the trials done are kept in "
                          f"{hide_passwords(session.storage_url)}. Run the same command again to resume it.") from None
    except storage.StorageLost:
        if not options.worker:  # its trials stay in the storage, out of reach: the parent keeps what it has
            parent.record.end("FAILED")
        raise
    result = SweepResult(session.parent_run_id, rows, session.metric, session.direction, session.base,
                         options.config_dir)
    if not options.worker:
        parent.finish(rows, session.metric, session.direction, "FINISHED", _importances(session.study))
        if rows and all(r.state not in (TrialState.COMPLETE, TrialState.PRUNED) for r in rows):
            echo(result.summary())
            raise TrainingFailed(f"every trial of the study '{session.name}' failed; parent run {session.parent_run_id}.")
    return result


def _run_trials(session: StudySession, parent: SweepParent, jobs: int, echo: Callable[[str], None],
                warm: list) -> list:
    """The trials, here (jobs == 1) or beside the warm worker processes, until the budget is spent; the
    study's rows."""
    if jobs == 1:
        work(session, parent, echo)
    else:
        from dlrun.tuning.workers import run_workers

        run_workers(session, jobs, echo, lambda row, rows, done: echo(progress(session, row, rows, done)),
                    lambda report: work(session, parent, report), warm)
    if not session.options.worker:  # a worker killed after its last claim left its trial RUNNING
        budget.fail_dead_trials(session.study, session.store_uri, missing_owner_is_dead=False)
    return budget.rows_of(session.study)


def open_study(spec: SweepSpec, options: Options) -> StudySession:
    """Check the sweep against the config tree, then create, resume or join its study and parent run."""
    from dlrun.config.paths import config_roots, group_options

    given_storage = storage.given_storage(options.storage)
    if given_storage:
        check_database(given_storage, "--storage")  # a database that does not answer: told at once
    where = str(spec.path)
    params, fixed = search_space(spec.params, group_options(config_roots(options.config_dir)), where)
    refuse_searched_overrides(options.overrides, params, where)
    base = spec.overrides + fixed + list(options.overrides)  # the command line has the last word
    base_where = f"{where} with the command line's overrides" if options.overrides else where
    checked = check_base(base, options.config_dir, spec.metric, spec.direction, base_where)
    check_params(params, base, options.config_dir, where, checked.metric)
    check_distributions(params, where)
    n_trials = trials_to_run(spec, params, options.n_trials or spec.n_trials, where)
    refuse_identical_trials(params, fixed, base, n_trials, where)
    max_epochs = checked.run.trainer["max_epochs"]
    dry_run(spec, params, max_epochs)
    pruner = make_pruner(spec.pruner, max_epochs, where)
    store_uri = tracking_uri(checked.run.tracking["uri"])
    check_reachable(store_uri)  # before the study's storage is touched
    name = options.study_name or spec.name
    storage_url = given_storage or storage.default_storage(store_uri, name)
    study = storage.create_or_join(name, storage_url, checked.direction, pruner, options.worker)
    fingerprint = spec.fingerprint(list(options.overrides))
    stored = study.user_attrs.get("dlrun_fingerprint")
    if stored is not None and stored != fingerprint:
        raise ConfigError(f"the study '{name}' in {hide_passwords(storage_url)} was made from a different sweep "
                          "(its file or overrides changed since). Resume it unchanged, or start a new study with "
                          "--study-name NAME.")
    session = StudySession(spec, options, study, name, storage_url, params, base, checked.metric, checked.direction,
                           store_uri, n_trials, "", checked.run.tracking["experiment"], checked.run.config["output_dir"])
    return dataclasses.replace(session, parent_run_id=_parent_run(session, fingerprint))


def _parent_run(session: StudySession, fingerprint: str) -> str:
    """The study's parent MLflow run: created with the study, reopened on resume, read by workers."""
    study = session.study
    existing = study.user_attrs.get("mlflow_parent_run_id")
    if session.options.worker:
        if existing is None:
            raise ConfigError(f"the study '{session.name}' in {hide_passwords(session.storage_url)} has no parent "
                              "run yet; start it without --worker first.")
        return existing
    budget.fail_dead_trials(study, session.store_uri, missing_owner_is_dead=True)
    parent = SweepParent(session.store_uri, session.experiment, existing)
    if existing is not None:
        parent.reopen()
        return existing
    spec = session.spec
    settings = {"sweep": spec.name, "metric": session.metric, "direction": session.direction,
                "n_trials": str(session.n_trials), "sampler": spec.sampler.name, "pruner": spec.pruner.name,
                "n_jobs": str(spec.n_jobs), "storage": hide_passwords(session.storage_url), "study": session.name,
                "overrides": " ".join(session.base)}
    run_id = parent.start(session.name, "sweep", settings, {"sweep.yaml": spec.text})
    study.set_user_attr("mlflow_parent_run_id", run_id)
    study.set_user_attr("dlrun_fingerprint", fingerprint)
    return run_id


def _importances(study) -> dict[str, float] | None:
    """fANOVA importances of the params, when enough trials completed to tell."""
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 2:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return optuna.importance.get_param_importances(study)
    except Exception as error:  # e.g. every trial had the same params
        print(f"dlrun: no parameter importances: {error}", file=sys.stderr)
        return None
