"""Check a sweep against the config tree before its first trial.

Every searched key and every value that stands for its range (each choice, both ends of
a range) is composed and validated with the base run; the base run's data are loaded
once, so that the metric can be checked against the task. A bad sweep is a ConfigError
(exit 2) and nothing reaches MLflow or the study's storage.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from dlrun.config.validate import RunConfig
from dlrun.errors import ConfigError, DlrunError, did_you_mean
from dlrun.tuning.space import Param
from dlrun.training.metrics import direction as direction_of
from dlrun.training.metrics import epoch_metrics


@dataclass(frozen=True)
class CheckedBase:
    """The base run of a sweep, validated, and what its data told."""

    run: RunConfig
    task: str
    metric: str
    direction: str


def check_base(overrides: list[str], config_dir: str | Path | None, metric: str, direction: str | None,
               where: str) -> CheckedBase:
    """Compose, validate and prepare the base run once; check the metric against its task."""
    run = compose_run(overrides, config_dir, where)
    from dlrun.training.setup import prepare

    try:
        task = prepare(run).data.task
    except DlrunError as error:
        raise ConfigError(f"{where}: the base run ({' '.join(overrides) or 'the defaults'}) does not work: {error}") from None
    known = epoch_metrics(task, tuple(name for name, _ in run.metrics))
    if metric.startswith("test/"):
        raise ConfigError(f"{where}: metric {metric} would tune on the test split, which must stay unseen. "
                          f"Tune on one of: {', '.join(known)}.")
    if metric not in known:
        raise ConfigError(f"{where}: metric '{metric}' is not reported each epoch for a {task} task."
                          f"{did_you_mean(metric, known)} Metrics: {', '.join(known)}.")
    return CheckedBase(run, task, metric, direction or direction_of(metric))


def check_params(params: list[Param], base_overrides: list[str], config_dir: str | Path | None, where: str,
                 metric: str) -> None:
    """Each value that stands for a param's range must compose and validate with the base run;
    where a param changes the data, the metric must fit each data set's task."""
    configs = TrialConfigs(base_overrides, config_dir)
    for param in params:
        place = f"{where}, params.{param.key}"
        runs = []
        for index, value in enumerate(param.probes()):
            try:
                runs.append(configs.run([param.override(value)], place))
            except ConfigError as error:
                if param.kind == "float" and index == 2:  # both ends passed: the key wants whole numbers
                    low, high = f"{param.low:g}", f"{param.high:g}"
                    raise ConfigError(f"{error} interval() draws any real number, such as {value:.4g}; for whole "
                                      f"numbers write tag(int, interval({low}, {high})) or range({low}, "
                                      f"{param.high + 1:g}).") from None
                raise
        if param.name == "data" or param.name.startswith("data."):
            check_metric_fits(runs, metric, place)


def check_metric_fits(runs: list[RunConfig], metric: str, where: str) -> None:
    """The metric must be reported for the task of every data set among runs (each loaded once)."""
    from dlrun.data.prepare import load_data

    seen = set()
    for run in runs:
        key = json.dumps(run.data, sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        try:
            task = load_data(run.data, run.seed).task
        except DlrunError as error:
            raise ConfigError(f"{where}: data.name={run.data.get('name')} does not load: {error}") from None
        if metric not in epoch_metrics(task, tuple(name for name, _ in run.metrics)):
            raise ConfigError(f"{where}: data.name={run.data.get('name')} is a {task} task, which does not report "
                              f"{metric}. Choose a metric every trial reports, e.g. val/loss.")


class TrialConfigs:
    """The RunConfigs of runs that share a base (a study's trials, a param's probes): Hydra composes the
    base once, each run's own values are applied to it (dlrun.config.compose.composer), and the result
    is what compose_run(base + own) gives: the same config, choices and recorded overrides."""

    def __init__(self, base: list[str], config_dir: str | Path | None):
        self.base = list(base)
        self.config_dir = config_dir
        self._compose = None  # made at the first run, so that a bad base is reported where it is used

    def run(self, own: list[str], where: str, quiet: bool = False) -> RunConfig:
        """The validated config of base + own; quiet: without a progress bar unless an override asks for one
        (recorded first, as `trainer.enable_progress_bar=false BASE OWN`, so that an explicit one wins)."""
        from dlrun.config.compose import composer
        from dlrun.config.validate import validate

        extra = list(own)
        if quiet and not any(_sets_key(o, QUIET_KEY) for o in [*self.base, *own]):
            extra.append(f"{QUIET_KEY}=false")
        try:
            if self._compose is None:
                self._compose = composer(self.base, self.config_dir)
            composed = self._compose(extra)
            if quiet:  # recorded as the run was always composed: the quiet override first
                composed = dataclasses.replace(composed, overrides=[f"{QUIET_KEY}=false", *self.base, *own])
            return validate(composed)
        except ConfigError as error:
            raise ConfigError(f"{where}: {error}") from None


QUIET_KEY = "trainer.enable_progress_bar"


def _sets_key(override: str, key: str) -> bool:
    return override.split("=", 1)[0].lstrip("+~") == key


def compose_run(overrides: list[str], config_dir: str | Path | None, where: str) -> RunConfig:
    from dlrun.config.compose import compose
    from dlrun.config.validate import validate

    try:
        return validate(compose(overrides, config_dir))
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
