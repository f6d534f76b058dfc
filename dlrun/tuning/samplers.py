"""Optuna samplers, chosen by a sweep file's `sampler` key: registry entries like every other component.

Each builder takes a SamplerContext (what dlrun supplies: the seed and the searched params),
then the options a sweep file may give, as annotated keyword arguments with their defaults;
Optuna's options that take code (gamma, weights, constraints_func) or that it deprecates are
left out. Each entry names the Optuna class it builds (`optuna_class`), for messages.
Optuna is imported inside the builders only: a command that does not sweep never loads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from dlrun.errors import ConfigError
from dlrun.registry import Range, Registry
from dlrun.tuning.binding import Named, build_named
from dlrun.tuning.space import Param

SAMPLERS = Registry("sampler", skip_params=1, required={"optuna_class": str})

AtLeastOne = Annotated[int, Range(ge=1)]
NonNegative = Annotated[int, Range(ge=0)]


@dataclass(frozen=True)
class SamplerContext:
    """What dlrun gives every sampler: the seed (None: fresh entropy) and the searched params."""

    seed: int | None
    params: tuple[Param, ...]


@SAMPLERS.register("tpe", "Tree-structured Parzen estimator: models good and bad regions apart (the default)",
                   optuna_class="TPESampler")
def tpe_sampler(ctx: SamplerContext, n_startup_trials: NonNegative = 10, n_ei_candidates: AtLeastOne = 24,
        multivariate: bool | None = None, group: bool = False, constant_liar: bool = True):
    import optuna

    return optuna.samplers.TPESampler(seed=ctx.seed, n_startup_trials=n_startup_trials,
                                      n_ei_candidates=n_ei_candidates, multivariate=multivariate, group=group,
                                      constant_liar=constant_liar)


@SAMPLERS.register("random", "Independent uniform draws", optuna_class="RandomSampler")
def random_sampler(ctx: SamplerContext):
    import optuna

    return optuna.samplers.RandomSampler(seed=ctx.seed)


@SAMPLERS.register("grid", "Every combination of the params' values once, in a seeded order",
                   optuna_class="GridSampler")
def grid_sampler(ctx: SamplerContext):
    return grid_sampler_class()({p.name: p.grid_values() for p in ctx.params}, seed=ctx.seed)


@SAMPLERS.register("cmaes", "CMA evolution strategy for numeric params (needs the cmaes package)",
                   optuna_class="CmaEsSampler")
def cmaes_sampler(ctx: SamplerContext, n_startup_trials: NonNegative = 1, popsize: AtLeastOne | None = None,
          consider_pruned_trials: bool = False, use_separable_cma: bool = False, with_margin: bool = False,
          lr_adapt: bool = False, warn_independent_sampling: bool = True):
    import optuna

    return optuna.samplers.CmaEsSampler(seed=ctx.seed, n_startup_trials=n_startup_trials, popsize=popsize,
                                        consider_pruned_trials=consider_pruned_trials,
                                        use_separable_cma=use_separable_cma, with_margin=with_margin,
                                        lr_adapt=lr_adapt, warn_independent_sampling=warn_independent_sampling)


def grid_sampler_class():
    """Optuna's GridSampler, minus its Study.stop() once every point was tried.

    That stop works only inside Study.optimize; dlrun's own budget (n_trials = the grid's
    size) ends the study. A function, so that optuna is imported only when it is called.
    """
    import optuna

    class GridSampler(optuna.samplers.GridSampler):
        def after_trial(self, study, trial, state, values) -> None:
            pass

    return GridSampler


def make_sampler(named: Named, params: list[Param], seed: int | None, path: str):
    """The sweep file's sampler, its options checked against its builder, with dlrun's seed.

    Args:
        named: the file's `sampler`: the entry's name and its options.
        params: the searched params (the grid sampler lists their values).
        seed: the sampler's seed; None draws from fresh entropy (parallel workers).
        path: the sweep file, for messages.

    Raises:
        ConfigError: `seed` among the options, an option the entry does not take, or a bad value.
    """
    if "seed" in named.options:
        raise ConfigError(f"{path}, sampler: the seed is the file's top-level 'seed' key, not a sampler option.")
    return build_named(SAMPLERS, named, SamplerContext(seed, tuple(params)), path)
