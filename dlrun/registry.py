"""Name -> builder registries: the only way a config reaches code.

Configs name components ("adam", "conv2d"); they never carry import paths, so a
config pulled from a shared tracking server cannot import or call arbitrary code.
Each builder declares its options as keyword arguments; `bind` checks a config's
keys and values against that signature before anything is built. Registries hold
plain functions, so importing one does not import torch.
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from dlrun.errors import ConfigError, did_you_mean, unknown_name_message


@dataclass(frozen=True)
class Range:
    """A numeric bound used in builder annotations: Annotated[float, Range(gt=0)]."""

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None

    def violation(self, value: float) -> str | None:
        """Describe how value breaks the bound, or None when it is inside."""
        for bound, ok, text in (
            (self.gt, lambda b: value > b, "greater than"),
            (self.ge, lambda b: value >= b, "at least"),
            (self.lt, lambda b: value < b, "less than"),
            (self.le, lambda b: value <= b, "at most"),
        ):
            if bound is not None and not ok(bound):
                return f"must be {text} {bound:g}"
        return None


@dataclass(frozen=True)
class Choice:
    """A string restricted to a fixed set: Annotated[str, Choice('a', 'b')]."""

    options: tuple[str, ...]

    def __init__(self, *options: str):
        object.__setattr__(self, "options", tuple(options))


@dataclass(frozen=True)
class Entry:
    name: str
    description: str
    builder: Callable[..., Any]


class Registry:
    """A named family of builders (activations, losses, layers, ...)."""

    def __init__(self, kind: str, skip_params: int = 0):
        """Args:
        kind: what the entries are, for messages ("activation").
        skip_params: leading builder parameters supplied by dlrun, not by configs.
        """
        self.kind = kind
        self.skip_params = skip_params
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, description: str):
        def decorate(builder: Callable[..., Any]) -> Callable[..., Any]:
            self._entries[name] = Entry(name, description, builder)
            return builder

        return decorate

    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, name: Any, where: str = "") -> Entry:
        """The entry for name, or a ConfigError with did-you-mean."""
        if not isinstance(name, str) or name not in self._entries:
            raise ConfigError(unknown_name_message(self.kind, str(name), self._entries, where))
        return self._entries[name]

    def config_params(self, name: str) -> dict[str, inspect.Parameter]:
        """The builder's parameters that a config may set."""
        params = list(inspect.signature(self.get(name).builder).parameters.values())
        return {p.name: p for p in params[self.skip_params :] if p.kind is p.KEYWORD_ONLY or p.kind is p.POSITIONAL_OR_KEYWORD}

    def bind(self, name: str, options: Mapping[str, Any], where: str) -> dict[str, Any]:
        """Check options against the builder's signature; return them with defaults filled.

        Args:
            name: the registry name chosen by the config.
            options: the config's keys for the builder (without 'name' or 'type').
            where: the dotted config path, for messages ("optim", "model.layers[2]").
        """
        entry = self.get(name, where)
        params = self.config_params(name)
        hints = typing.get_type_hints(entry.builder, include_extras=True)
        bound: dict[str, Any] = {}
        for key, value in options.items():
            if key not in params:
                raise ConfigError(
                    f"unknown key '{where}.{key}' for {self.kind} '{name}'.{did_you_mean(key, params)}"
                    f" Keys it takes: {', '.join(params) or 'none'}."
                )
            bound[key] = check_value(value, hints.get(key), f"{where}.{key}")
        for key, param in params.items():
            if key not in bound:
                if param.default is inspect.Parameter.empty:
                    raise ConfigError(f"'{where}.{key}' is required for {self.kind} '{name}'; set {where}.{key}=...")
                bound[key] = param.default
        return bound


_NUMBER_TYPES = {float: "a number", int: "an integer"}


def check_value(value: Any, hint: Any, where: str) -> Any:
    """Check one config value against a builder annotation; return it coerced.

    Understands float, int, bool, str, Optional[...], tuple/list of numbers and
    Annotated[..., Range | Choice]. Anything else passes unchecked.
    """
    if hint is None:
        return value
    origin = typing.get_origin(hint)
    if origin is typing.Annotated:
        inner, *checks = typing.get_args(hint)
        value = check_value(value, inner, where)
        for check in checks if value is not None else ():
            if isinstance(check, Range) and (problem := check.violation(value)):
                raise ConfigError(f"'{where}' {problem}, got {value!r}.")
            if isinstance(check, Choice) and value not in check.options:
                raise ConfigError(unknown_name_message("value", value, check.options, where))
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        rest = [a for a in args if a is not type(None)]
        return check_value(value, rest[0], where) if len(rest) == 1 else value
    return _coerce(value, hint, where)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"'{where}' must be true or false, got {value!r}.")
        return value
    if hint in _NUMBER_TYPES:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if hint is int:
            ok = ok and (isinstance(value, int) or value.is_integer())
        if not ok:
            raise ConfigError(f"'{where}' must be {_NUMBER_TYPES[hint]}, got {value!r}.")
        if isinstance(value, float) and not math.isfinite(value):  # inf passes every lower bound, NaN every comparison
            raise ConfigError(f"'{where}' must be a finite number, got {value!r}.")
        return hint(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"'{where}' must be a string, got {value!r}.")
        return value
    if typing.get_origin(hint) in (tuple, list):
        item = (typing.get_args(hint) or (None,))[0]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"'{where}' must be a list, got {value!r}.")
        return tuple(_coerce(v, item, f"{where}[{i}]") if item in _NUMBER_TYPES else v for i, v in enumerate(value))
    return value
