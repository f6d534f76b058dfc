"""Optuna pruners, chosen by a sweep file's `pruner` key: registry entries like every other component.

Each builder takes the trials' trainer.max_epochs (supplied by dlrun), then the options a
sweep file may give, as annotated keyword arguments with their defaults. Each entry names
the Optuna class it builds (`optuna_class`), for messages. Optuna is imported inside the
builders only: a command that does not sweep never loads it.
"""

from __future__ import annotations

from typing import Annotated

from dlrun.registry import Range, Registry
from dlrun.tuning.binding import Named, build_named

PRUNERS = Registry("pruner", skip_params=1, required={"optuna_class": str})

AtLeastOne = Annotated[int, Range(ge=1)]
NonNegative = Annotated[int, Range(ge=0)]


@PRUNERS.register("none", "No pruning: every trial trains all its epochs (the default)", optuna_class="NopPruner")
def no_pruner(max_epochs: int):
    import optuna

    return optuna.pruners.NopPruner()


@PRUNERS.register("median", "Stop a trial whose metric is worse than the median of earlier trials at the same epoch",
                  optuna_class="MedianPruner")
def median_pruner(max_epochs: int, n_startup_trials: NonNegative = 2, n_warmup_steps: NonNegative = 0,
                  interval_steps: AtLeastOne = 1, n_min_trials: AtLeastOne = 1):
    """n_startup_trials 2 rather than Optuna's 5: each trial reports every epoch's validation value, a
    steady curve rather than a noisy step value, so two finished trials already give a median to compare
    with at every epoch. In bench/speed.py's 20-trial study, 5 startup trials pruned 31% of the training,
    3 pruned 45% of the epochs and 2 pruned 50%, each with the same best value. No warm-up, for the same
    reason."""
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=n_startup_trials, n_warmup_steps=n_warmup_steps,
                                       interval_steps=interval_steps, n_min_trials=n_min_trials)


@PRUNERS.register("hyperband", "Successive halving over epochs in several brackets", optuna_class="HyperbandPruner")
def hyperband_pruner(max_epochs: int, min_resource: AtLeastOne = 1, max_resource: int | str | None = None,
                     reduction_factor: Annotated[int, Range(ge=2)] = 3, bootstrap_count: NonNegative = 0):
    """max_resource: epochs of the longest bracket; None takes trainer.max_epochs, "auto" lets Optuna guess."""
    import optuna

    return optuna.pruners.HyperbandPruner(min_resource=min_resource,
                                          max_resource=max_epochs if max_resource is None else max_resource,
                                          reduction_factor=reduction_factor, bootstrap_count=bootstrap_count)


def make_pruner(named: Named, max_epochs: int, path: str):
    """The sweep file's pruner, its options checked against its builder.

    Args:
        named: the file's `pruner`: the entry's name and its options.
        max_epochs: the trials' trainer.max_epochs (hyperband's default max_resource).
        path: the sweep file, for messages.

    Raises:
        ConfigError: an option the entry does not take, or a bad value.
    """
    return build_named(PRUNERS, named, max_epochs, path)
