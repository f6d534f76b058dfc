"""`dlrun sweep`: an Optuna study whose trials are full dlrun training runs.

The study lives in a storage (a journal file next to the tracking store by default),
so the same command resumes it and `--worker` processes on other machines join it.
The process that starts the study owns the parent MLflow run; every process that
works on it claims trials from the shared budget (budget.py) and runs them itself.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from dlrun.errors import ConfigError, TrainingFailed
from dlrun.sweep import budget
from dlrun.sweep.grid import SweepResult, set_threads
from dlrun.sweep.report import TrialRow, progress_line
from dlrun.sweep.spec import SweepSpec
from dlrun.sweep.trial import COMPLETE, PRUNED


@dataclass(frozen=True)
class Options:
    """How this process takes part: the command line's choices over the sweep file's."""

    overrides: list[str]
    config_dir: str | None
    storage: str | None
    study_name: str | None
    worker: bool
    n_trials: int | None
    n_jobs: int | None
    threads: int | None


@dataclass
class _Study:
    """A checked sweep bound to its storage: what every loop below needs."""

    spec: SweepSpec
    options: Options
    study: object
    name: str
    storage_url: str
    params: list
    base: list[str]
    metric: str
    direction: str
    store_uri: str
    n_trials: int
    parent_run_id: str
    experiment: str
    output_dir: str


def run_study(spec: SweepSpec, options: Options, echo: Callable[[str], None]) -> SweepResult:
    """Start or resume the study of `spec` (or join it with options.worker) and run trials until its budget is spent."""
    session = _open(spec, options)
    if options.threads:
        set_threads(options.threads)
    jobs = 1 if options.worker else (options.n_jobs or spec.n_jobs)
    done = sum(budget.counts(t) and t.state.is_finished() for t in session.study.get_trials(deepcopy=False))
    echo(f"dlrun: study '{session.name}' in {session.storage_url}: {done} trials done, "
         f"budget {session.n_trials}, {jobs} process{'es' if jobs > 1 else ''}; parent run {session.parent_run_id}")
    from dlrun.sweep.parent import SweepParent
    from dlrun.train.outcome import Interrupted

    parent = SweepParent(session.store_uri, session.experiment, session.parent_run_id)
    try:
        if jobs == 1:
            _work(session, parent, echo)
        else:
            from dlrun.sweep.workers import run_workers

            run_workers(session, jobs, echo, lambda row, rows, done: echo(_progress(session, row, rows, done)))
    except (Interrupted, KeyboardInterrupt):
        if not options.worker:
            parent.finish(budget.rows_of(session.study), session.metric, session.direction, "KILLED")
        raise Interrupted(f"the study '{session.name}' was interrupted; the trials done are kept in "
                          f"{session.storage_url}. Run the same command again to resume it.") from None
    if not options.worker:  # a worker killed after its last claim left its trial RUNNING
        budget.fail_dead_trials(session.study, session.store_uri, missing_owner_is_dead=False)
    rows = budget.rows_of(session.study)
    result = SweepResult(session.parent_run_id, rows, session.metric, session.direction, session.base,
                         options.config_dir)
    if not options.worker:
        parent.finish(rows, session.metric, session.direction, "FINISHED", _importances(session.study))
        if rows and all(r.state not in (COMPLETE, PRUNED) for r in rows):
            echo(result.summary())
            raise TrainingFailed(f"every trial of the study '{session.name}' failed; parent run {session.parent_run_id}.")
    return result


def _work(session: _Study, parent, echo: Callable[[str], None]) -> None:
    """Claim and run trials until the budget is spent and no trial is running anywhere."""
    lock = budget.lock_path_for(session.storage_url, session.name)
    # One process: the file's seed, moved on by the trials so far, so a resumed study does not repeat
    # its first draws. Parallel workers draw from fresh entropy, or they would draw the same values.
    seed = None if session.options.worker else session.spec.seed + len(session.study.trials)
    session.study.sampler = make_sampler(session.spec, session.params, seed)
    while True:
        trial = budget.claim(session.study, session.n_trials, lock, session.store_uri)
        if trial is None:
            if not budget.running(session.study):
                return
            time.sleep(1.0)  # another process's trial may still crash and free its budget
            continue
        row = _run_one(session, trial)
        rows = budget.rows_of(session.study)
        parent.log_best(rows, session.metric, session.direction, step=trial.number)
        echo(_progress(session, row, rows, done=sum(r.state not in ("running", "waiting") for r in rows)))


def _run_one(session: _Study, trial) -> TrialRow:
    from optuna.trial import TrialState

    from dlrun.sweep.parent import child_tags
    from dlrun.sweep.trial import run_trial
    from dlrun.train.outcome import Interrupted

    own = [p.override(suggest(trial, p)) for p in session.params]
    trial.set_user_attr("overrides", own)
    pruning = session.spec.pruner.name != "none"

    def report(value: float, epoch: int) -> bool:
        trial.report(value, epoch)
        return pruning and trial.should_prune()

    try:
        outcome = run_trial(session.base + own, session.options.config_dir, session.metric, session.store_uri,
                            child_tags(session.parent_run_id, session.name, trial.number), report,
                            on_start=lambda run_id: trial.set_user_attr("mlflow_run_id", run_id))
    except Interrupted:
        trial.set_user_attr("dlrun_state", budget.INTERRUPTED)
        session.study.tell(trial, state=TrialState.FAIL)
        raise
    for key, value in (("epochs", outcome.epochs), ("fit_seconds", outcome.fit_seconds),
                       ("message", outcome.message), ("last_value", outcome.value)):
        trial.set_user_attr(key, value)
    if outcome.state == COMPLETE:
        session.study.tell(trial, outcome.value)
    elif outcome.state == PRUNED:
        session.study.tell(trial, state=TrialState.PRUNED)
    else:
        trial.set_user_attr("dlrun_state", budget.FAILED)
        session.study.tell(trial, state=TrialState.FAIL)
    return TrialRow(trial.number, outcome.state, outcome.value, own, outcome.run_id, outcome.epochs,
                    outcome.fit_seconds, outcome.message)


def _progress(session: _Study, row: TrialRow, rows: list[TrialRow], done: int) -> str:
    return progress_line(row, done, session.n_trials, rows, session.metric, session.direction)


def suggest(trial, param):
    if param.kind == "categorical":
        return trial.suggest_categorical(param.name, list(param.choices))
    if param.kind == "int":
        return trial.suggest_int(param.name, int(param.low), int(param.high), step=int(param.step or 1), log=param.log)
    return trial.suggest_float(param.name, param.low, param.high, log=param.log)


def make_sampler(spec: SweepSpec, params: list, seed: int | None):
    import optuna

    kinds = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler,
             "cmaes": optuna.samplers.CmaEsSampler, "grid": _grid_sampler()}
    options = dict(spec.sampler.options)
    if "seed" in options:
        raise ConfigError(f"{spec.path}, sampler: the seed is the file's top-level 'seed' key, not a sampler option.")
    if spec.sampler.name == "grid":
        options["search_space"] = {p.name: p.grid_values() for p in params}
    return _construct(kinds[spec.sampler.name], {**options, "seed": seed}, f"{spec.path}, sampler")


def _grid_sampler():
    import optuna

    class GridSampler(optuna.samplers.GridSampler):
        """Optuna's grid, minus its Study.stop() once every point was tried: that works only inside
        Study.optimize, and dlrun's own budget (n_trials = the grid's size) ends the study."""

        def after_trial(self, study, trial, state, values) -> None:
            pass

    return GridSampler


def make_pruner(spec: SweepSpec, max_epochs: int):
    import optuna

    name, options = spec.pruner.name, dict(spec.pruner.options)
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "hyperband":
        options.setdefault("max_resource", max_epochs)
        return _construct(optuna.pruners.HyperbandPruner, options, f"{spec.path}, pruner")
    return _construct(optuna.pruners.MedianPruner, options, f"{spec.path}, pruner")


def _construct(kind, options: dict, where: str):
    import inspect

    from dlrun.errors import did_you_mean

    accepted = inspect.signature(kind).parameters
    for key in options:
        if key not in accepted:
            raise ConfigError(f"{where}: {kind.__name__} has no option '{key}'.{did_you_mean(key, accepted)} "
                              f"Options: {', '.join(k for k in accepted if k != 'search_space')}.")
    try:
        return kind(**options)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: {kind.__name__} does not take these options: {error}") from None


def _open(spec: SweepSpec, options: Options) -> _Study:
    """Check the sweep against the config tree, then create, resume or join its study."""
    from dlrun.config.paths import config_roots, group_options
    from dlrun.sweep.check import check_base, check_params
    from dlrun.sweep.space import search_space
    from dlrun.tracking.store import tracking_uri

    where = str(spec.path)
    params, fixed = search_space(spec.params, group_options(config_roots(options.config_dir)), where)
    _refuse_searched_overrides(options.overrides, params, where)
    base = spec.overrides + fixed + list(options.overrides)  # the command line has the last word
    base_where = f"{where} with the command line's overrides" if options.overrides else where
    checked = check_base(base, options.config_dir, spec.metric, spec.direction, base_where)
    check_params(params, base, options.config_dir, where, checked.metric)
    _check_distributions(params, where)
    n_trials = options.n_trials or spec.n_trials
    if spec.sampler.name == "grid":
        _check_grid(params, where)
        size = 1
        for p in params:
            size *= len(p.grid_values())
        n_trials = min(n_trials, size)
    if not params and n_trials > 1:
        raise ConfigError(f"{where}: no param takes more than one value ({', '.join(fixed) or 'params is empty'}), so "
                          f"all {n_trials} trials would train the same run. Give a param a range: interval(), "
                          f"range() or choice() (seed: range(0, {n_trials}) to measure the spread between seeds), "
                          f"or train it once: dlrun train {' '.join(base)}")
    _dry_run(spec, params, checked.run.trainer["max_epochs"])
    pruner = make_pruner(spec, checked.run.trainer["max_epochs"])
    store_uri = tracking_uri(checked.run.tracking["uri"])
    from dlrun.tracking.server import check_reachable

    check_reachable(store_uri)  # before the study's storage is touched
    name = options.study_name or spec.name
    storage_url = options.storage or default_storage(store_uri, name)
    study = _create_or_join(name, storage_url, checked.direction, pruner, options.worker)
    fingerprint = spec.fingerprint(list(options.overrides))
    stored = study.user_attrs.get("dlrun_fingerprint")
    if stored is not None and stored != fingerprint:
        raise ConfigError(f"the study '{name}' in {storage_url} was made from a different sweep (its file or "
                          "overrides changed since). Resume it unchanged, or start a new study with --study-name NAME.")
    experiment = checked.run.tracking["experiment"]
    session = _Study(spec, options, study, name, storage_url, params, base, checked.metric, checked.direction,
                     store_uri, n_trials, "", experiment, checked.run.config["output_dir"])
    session.parent_run_id = _parent_run(session, fingerprint)
    return session


def _parent_run(session: _Study, fingerprint: str) -> str:
    """The study's parent MLflow run: created with the study, reopened on resume, read by workers."""
    from dlrun.sweep.parent import SweepParent

    study = session.study
    existing = study.user_attrs.get("mlflow_parent_run_id")
    if session.options.worker:
        if existing is None:
            raise ConfigError(f"the study '{session.name}' in {session.storage_url} has no parent run yet; "
                              "start it without --worker first.")
        return existing
    budget.fail_dead_trials(study, session.store_uri, missing_owner_is_dead=True)
    parent = SweepParent(session.store_uri, session.experiment, existing)
    if existing is not None:
        parent.reopen()
        return existing
    spec = session.spec
    settings = {"sweep": spec.name, "metric": session.metric, "direction": session.direction,
                "n_trials": str(session.n_trials), "sampler": spec.sampler.name, "pruner": spec.pruner.name,
                "n_jobs": str(spec.n_jobs), "storage": session.storage_url, "study": session.name,
                "overrides": " ".join(session.base)}
    run_id = parent.start(session.name, "sweep", settings, {"sweep.yaml": spec.text})
    study.set_user_attr("mlflow_parent_run_id", run_id)
    study.set_user_attr("dlrun_fingerprint", fingerprint)
    return run_id


def default_storage(store_uri: str, name: str) -> str:
    """A journal file beside the tracking store (./optuna/NAME.journal for a remote store)."""
    folder = Path(store_uri.removeprefix("sqlite:///")).parent if store_uri.startswith("sqlite:///") else Path.cwd()
    return str(folder / "optuna" / f"{name}.journal")


def open_storage(url: str):
    """An Optuna storage: a database URL (sqlite:///, postgresql://...) or a journal file's path."""
    import optuna

    if "://" in url:
        try:
            return optuna.storages.RDBStorage(url)
        except Exception as error:  # SQLAlchemy's many errors: a wrong URL, a missing driver, no server
            raise ConfigError(f"--storage {url}: cannot open it: {' '.join(str(error).split())[:300]}") from None
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    Path(url).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(url, lock_obj=JournalFileOpenLock(url)))


def _create_or_join(name: str, storage_url: str, direction: str, pruner, worker: bool):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if worker and "://" not in storage_url and not Path(storage_url).is_file():
        raise ConfigError(f"--worker joins a study, and there is none at {storage_url}. Start it without --worker first.")
    storage = open_storage(storage_url)
    if worker:
        try:
            return optuna.load_study(study_name=name, storage=storage, pruner=pruner)
        except KeyError:
            names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
            raise ConfigError(f"--worker: no study '{name}' in {storage_url} (studies there: "
                              f"{', '.join(names) or 'none'}). Start it without --worker first.") from None
    return optuna.create_study(study_name=name, storage=storage, direction=direction, pruner=pruner,
                               load_if_exists=True)


def _dry_run(spec: SweepSpec, params: list, max_epochs: int) -> None:
    """Draw, report and prune a few trials in memory: Optuna checks option types only when used,
    and a bad one must be a ConfigError now, not a crash in the first trial."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for part, named, sampler, pruner in (
        ("sampler", spec.sampler, make_sampler(spec, params, spec.seed), optuna.pruners.NopPruner()),
        ("pruner", spec.pruner, optuna.samplers.RandomSampler(seed=0), make_pruner(spec, max_epochs)),
    ):
        study = optuna.create_study(sampler=sampler, pruner=pruner)
        try:
            for _ in range(3):
                trial = study.ask()
                for param in params:
                    suggest(trial, param)
                for epoch in range(3):
                    trial.report(0.5, epoch)
                    trial.should_prune()
                study.tell(trial, 0.5)
        except Exception as error:  # Optuna raises TypeError, ValueError and others for bad options
            given = ", ".join(f"{k}={v!r}" for k, v in named.options.items()) or "none"
            raise ConfigError(f"{spec.path}, {part}: {named.name} does not work with the options given "
                              f"({given}): {type(error).__name__}: {error}") from None


def _refuse_searched_overrides(overrides: list[str], params: list, where: str) -> None:
    from dlrun.sweep.space import parse

    searched = {p.name for p in params}
    for override in parse(list(overrides), "command-line override"):
        if override.key_or_group in searched:
            raise ConfigError(f"{override.input_line}: {override.key_or_group} is searched by {where} (params), "
                              "so a command-line value would be overridden in every trial. Drop it, or fix it in "
                              "the file's params.")


def _check_distributions(params: list, where: str) -> None:
    for p in params:
        if p.kind == "int" and p.log and (p.step or 1) != 1:
            raise ConfigError(f"{where}, params.{p.key}: a log-scaled integer range takes no step.")


def _check_grid(params: list, where: str) -> None:
    for p in params:
        if p.grid_values() is None:
            raise ConfigError(f"{where}, params.{p.key}: sampler grid lists every value, and interval() is "
                              "continuous. Use choice(...) or range(...), or another sampler.")


def _importances(study) -> dict[str, float] | None:
    """fANOVA importances of the params, when enough trials completed to tell."""
    import warnings

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
