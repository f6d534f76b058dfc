"""Hydra's sweep grammar, read two ways: a grid (every combination) or a study's search space.

`optim=adam,sgd`, `choice(...)`, `range(...)` and `glob(...)` list values; `interval(...)`
(optionally `tag(log, ...)`) is a continuous range, which only a study can sample.
Imports no torch or Optuna, so that a bad sweep is reported at once.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

from dlrun.errors import ConfigError, did_you_mean

TAGS = ("log", "int")  # the tags a study reads: tag(log, ...) and tag(int, interval(...))


@dataclass(frozen=True)
class Param:
    """One searched key: categorical (choices), or a numeric range (low..high, step, log)."""

    key: str  # as written, with any + prefix: "optim.lr", "+model.blocks"
    kind: str  # "categorical", "int" or "float"
    choices: tuple = ()
    low: float = 0.0
    high: float = 0.0
    step: float | None = None
    log: bool = False

    @property
    def name(self) -> str:
        """The key without Hydra's +/++ prefix: the name Optuna records."""
        return self.key.lstrip("+~")

    def probes(self) -> list[Any]:
        """The values that stand for the whole space when checking it: each choice, or both ends
        (and, for a float range, a value between them that no integer key accepts)."""
        if self.kind == "categorical":
            return list(self.choices)
        if self.kind == "float":
            return [self.low, self.high, self.low + (self.high - self.low) * 0.3719]
        return [self.low, self.high]

    def grid_values(self) -> list[Any] | None:
        """Every value, for a grid sampler; None for a continuous range."""
        if self.kind == "categorical":
            return list(self.choices)
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        return None

    def suggest(self, trial) -> Any:
        """The value an Optuna trial draws for this param (recorded under `name`)."""
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)

    def override(self, value: Any) -> str:
        return f"{self.key}={format_value(value)}"


def format_value(value: Any) -> str:
    """A value as Hydra's override grammar reads it back."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def parse(overrides: list[str], where: str):
    """Hydra's parsed overrides; a ConfigError naming `where` on bad syntax."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    for line in overrides:
        if "=" not in line:
            raise ConfigError(f"'{line}' ({where}) is not an override. Write KEY=VALUE or GROUP=OPTION, "
                              "e.g. optim=adam,sgd optim.lr=0.1,0.01.")
    try:
        return OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as error:
        message = str(error.message).strip().splitlines()[0]
        raise ConfigError(f"cannot parse {where}: {message}") from None


def grid(overrides: list[str], groups: dict[str, Any]) -> list[list[str]]:
    """Every combination of the listed values, the last override varying fastest (Hydra's order).

    Args:
        overrides: command-line overrides, any of which may list several values.
        groups: the config groups and their options, for glob().
    """
    axes = []
    parsed = parse(overrides, "override")
    _refuse_repeated_keys(parsed)
    for override in parsed:
        key = override.get_key_element()
        if not override.is_sweep_override():
            axes.append([override.input_line])
            continue
        values = _listed_values(override, groups, f"override {override.input_line}")
        axes.append([f"{key}={v}" for v in values])
    return [list(combination) for combination in itertools.product(*axes)]


def _refuse_repeated_keys(parsed) -> None:
    seen: dict[str, str] = {}
    for override in parsed:
        key = override.key_or_group
        if key in seen:
            raise ConfigError(f"'{key}' is set twice ({seen[key]} and {override.input_line}); the later would "
                              "silently win in every trial. List all its values in one override: KEY=a,b,c.")
        seen[key] = override.input_line


def search_space(params: dict[str, Any], groups: dict[str, Any], where: str) -> tuple[list[Param], list[str]]:
    """A study's params: the searched keys, and the fixed overrides (a param with one value).

    Args:
        params: {key: Hydra sweep expression}, as in a sweep file.
        groups: the config groups and their options, for glob().
        where: where params came from, for messages ("sweeps/digits_cnn.yaml").
    """
    searched, fixed = [], []
    for key, expression in params.items():
        if isinstance(expression, list):  # [adam, sgd] reads as choice(adam, sgd)
            expression = f"choice({', '.join(format_value(v) for v in expression)})" if expression else "choice()"
        text = expression if isinstance(expression, str) else format_value(expression)
        (override,) = parse([f"{key}={text}"], f"{where}, params.{key}")
        place = f"{where}, params.{key}"
        if not override.is_sweep_override():
            fixed.append(override.input_line)
            continue
        searched.append(_param(override, groups, place))
    return searched, fixed


def _param(override, groups, place: str) -> Param:
    from hydra.core.override_parser.types import IntervalSweep, RangeSweep

    key, value = override.get_key_element(), override.value()
    _check_tags(getattr(value, "tags", set()), place)
    if isinstance(value, IntervalSweep):
        low, high = value.start, value.end
        if not all(math.isfinite(b) for b in (low, high)):
            raise ConfigError(f"{place}: interval({low}, {high}) needs finite bounds.")
        if not low < high:
            raise ConfigError(f"{place}: interval({low}, {high}) is empty; the first bound must be below the second.")
        log = "log" in value.tags
        if log and low <= 0:
            raise ConfigError(f"{place}: a log interval needs a positive lower bound, not {low}.")
        if "int" in value.tags:  # tag(int, interval(1, 8)): whole numbers from the range
            if not all(float(b).is_integer() for b in (low, high)):
                raise ConfigError(f"{place}: tag(int, interval(...)) needs whole-number bounds, not {low} and {high}.")
            return Param(key, "int", low=int(low), high=int(high), log=log)
        return Param(key, "float", low=low, high=high, log=log)
    if isinstance(value, RangeSweep) and not value.shuffle:
        numbers = [value.start, value.stop, value.step]
        if all(isinstance(n, int) for n in numbers):
            values = list(range(value.start, value.stop, value.step))
            if not values:
                raise ConfigError(f"{place}: {override.input_line.split('=', 1)[1]} holds no value.")
            return Param(key, "int", low=min(values), high=max(values), step=abs(value.step), log="log" in value.tags)
    values = _listed_values(override, groups, place)
    parsed = [_typed(v) for v in values]
    if len(set(map(repr, parsed))) != len(parsed):
        raise ConfigError(f"{place}: a value is listed twice in {override.input_line.split('=', 1)[1]}.")
    return Param(key, "categorical", choices=tuple(parsed))


def _check_tags(tags, place: str) -> None:
    """Only log and int mean something to dlrun; any other tag is a typo that would be silently ignored."""
    for tag in sorted(tags):
        if tag not in TAGS:
            raise ConfigError(f"{place}: unknown tag '{tag}'.{did_you_mean(tag, TAGS)} Tags: {', '.join(TAGS)}.")


def _listed_values(override, groups, place: str) -> list[str]:
    """The values a choice, comma list, range or glob stands for, as override strings."""
    from hydra.core.override_parser.types import Glob, IntervalSweep

    value = override.value()
    if isinstance(value, IntervalSweep):
        raise ConfigError(f"{place}: interval() is a continuous range, which a grid cannot list. "
                          "List values (a,b,c), choice() or range(), or sample it in a study (dlrun sweep).")
    if isinstance(value, Glob):
        group = override.key_or_group
        if group not in groups:
            raise ConfigError(f"{place}: glob() picks options of a config group, and '{group}' is not one. "
                              f"Groups: {', '.join(sorted(groups))}.")
        matched = value.filter(sorted(groups[group]))
        if not matched:
            raise ConfigError(f"{place}: glob() matches no {group} option. Options: {', '.join(sorted(groups[group]))}.")
        return matched
    values = list(override.sweep_string_iterator())
    if not values:
        raise ConfigError(f"{place}: the sweep lists no value.")
    return values


def _typed(text: str) -> Any:
    """A listed value as Hydra would type it (int, float, bool, null or string)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_override(f"k={text}").value()
    return parsed if isinstance(parsed, (int, float, bool, str)) or parsed is None else str(text)
