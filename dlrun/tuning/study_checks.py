"""A study's own checks, made before its storage or any MLflow run is touched.

check.py checks a sweep against the config tree; these check the search space against the
command line and the sampler, and the sampler's and pruner's options by a dry run in memory.
Each failure is a ConfigError (exit 2).
"""

from __future__ import annotations

from dlrun.errors import ConfigError
from dlrun.tuning.pruners import make_pruner
from dlrun.tuning.samplers import make_sampler
from dlrun.tuning.space import Param, parse
from dlrun.tuning.spec import SweepSpec


def refuse_searched_overrides(overrides: list[str], params: list[Param], where: str) -> None:
    """A command-line override of a searched key would be overridden in every trial: refuse it."""
    searched = {p.name for p in params}
    for override in parse(list(overrides), "command-line override"):
        if override.key_or_group in searched:
            raise ConfigError(f"{override.input_line}: {override.key_or_group} is searched by {where} (params), "
                              "so a command-line value would be overridden in every trial. Drop it, or fix it in "
                              "the file's params.")


def check_distributions(params: list[Param], where: str) -> None:
    """Refuse what Optuna cannot draw: a log-scaled integer range with a step."""
    for p in params:
        if p.kind == "int" and p.log and (p.step or 1) != 1:
            raise ConfigError(f"{where}, params.{p.key}: a log-scaled integer range takes no step.")


def trials_to_run(spec: SweepSpec, params: list[Param], n_trials: int, where: str) -> int:
    """n_trials, or fewer for a grid sampler: a grid has no more trials than combinations.

    Raises:
        ConfigError: the grid sampler with a param that is a continuous range.
    """
    if spec.sampler.name == "grid":
        size = 1
        for p in params:
            if p.grid_values() is None:
                raise ConfigError(f"{where}, params.{p.key}: sampler grid lists every value, and interval() is "
                                  "continuous. Use choice(...) or range(...), or another sampler.")
            size *= len(p.grid_values())
        n_trials = min(n_trials, size)
    return n_trials


def refuse_identical_trials(params: list[Param], fixed: list[str], base: list[str], n_trials: int,
                            where: str) -> None:
    """No param takes more than one value, yet several trials would run: each would train the same run."""
    if not params and n_trials > 1:
        raise ConfigError(f"{where}: no param takes more than one value ({', '.join(fixed) or 'params is empty'}), so "
                          f"all {n_trials} trials would train the same run. Give a param a range: interval(), "
                          f"range() or choice() (seed: range(0, {n_trials}) to measure the spread between seeds), "
                          f"or train it once: dlrun train {' '.join(base)}")


def dry_run(spec: SweepSpec, params: list[Param], max_epochs: int) -> None:
    """Draw, report and prune a few trials in memory: Optuna checks some option types only when
    they are used, and a bad one must be a ConfigError now, not a crash in the first trial."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = str(spec.path)
    for part, named, sampler, pruner in (
        ("sampler", spec.sampler, make_sampler(spec.sampler, params, spec.seed, path), optuna.pruners.NopPruner()),
        ("pruner", spec.pruner, optuna.samplers.RandomSampler(seed=0), make_pruner(spec.pruner, max_epochs, path)),
    ):
        study = optuna.create_study(sampler=sampler, pruner=pruner)
        try:
            for _ in range(3):
                trial = study.ask()
                for param in params:
                    param.suggest(trial)
                for epoch in range(3):
                    trial.report(0.5, epoch)
                    trial.should_prune()
                study.tell(trial, 0.5)
        except Exception as error:  # Optuna raises TypeError, ValueError and others for bad options
            given = ", ".join(f"{k}={v!r}" for k, v in named.options.items()) or "none"
            raise ConfigError(f"{path}, {part}: {named.name} does not work with the options given "
                              f"({given}): {type(error).__name__}: {error}") from None
