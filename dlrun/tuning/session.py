"""What a process taking part in a study knows: the command line's choices, and the study it opened."""

from __future__ import annotations

from dataclasses import dataclass

from dlrun.tuning.space import Param
from dlrun.tuning.spec import SweepSpec


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


@dataclass(frozen=True)
class StudySession:
    """A checked sweep bound to its storage and parent run: what the trial loop and the workers need."""

    spec: SweepSpec
    options: Options
    study: object  # the optuna.Study
    name: str
    storage_url: str
    params: list[Param]
    base: list[str]  # the base run's overrides: the file's, its fixed params, then the command line's
    metric: str
    direction: str
    store_uri: str
    n_trials: int
    parent_run_id: str
    experiment: str
    output_dir: str
