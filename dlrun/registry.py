"""Name -> builder registries: the only way a config reaches code.

Configs name components ("adam", "conv2d"); they never carry import paths, so a
config pulled from a shared tracking server cannot import or call arbitrary code.
Each builder declares its options as keyword arguments; `bind` checks a config's
keys and values against that signature before anything is built. Registries hold
plain functions, so importing one does not import torch.

Where a default lives: a registry whose entries are options of a config group
(optimizers: conf/optim/*.yaml) takes every default from those YAML files, which
are what `dlrun train --cfg` prints and MLflow records, so its builders may not
have defaults of their own. A registry whose entries are not group options
(layer types inside a model's layer list) keeps its defaults in the signatures.
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

from dlrun.config.paths import PACKAGE_CONF, shipped_values
from dlrun.errors import ConfigError, PluginError, did_you_mean, unknown_name_message

# Every registry made, so that plugins can be listed and tests can undo what a plugin registered.
ALL_REGISTRIES: list["Registry"] = []
# The plugin whose code is running now (dlrun.plugin_loading sets it while it imports one); None: dlrun's own.
_registering: list["PluginOrigin"] = []


@dataclass(eq=False)
class PluginOrigin:
    """Where a registered component comes from, when it is not dlrun's own."""

    name: str
    conf_dir: Any = None  # the plugin's config tree (a Path), which holds a group option's defaults


def current_plugin() -> PluginOrigin | None:
    """The plugin being imported now; None outside a plugin's import."""
    return _registering[-1] if _registering else None


@contextmanager
def registering_for(origin: PluginOrigin) -> Iterator[None]:
    """Registrations inside the block belong to the plugin `origin`."""
    _registering.append(origin)
    try:
        yield
    finally:
        _registering.pop()


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
    details: Mapping[str, Any] = field(default_factory=dict)  # what the registry requires besides the builder
    plugin: PluginOrigin | None = None  # None: one of dlrun's own


class BadValue(ConfigError):
    """A config value that fails its check; `key` is the dotted key it sits at."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


class Registry:
    """A named family of builders (activations, losses, layers, ...)."""

    def __init__(self, kind: str, skip_params: int = 0, group: str | None = None,
                 required: Mapping[str, Callable[[Any], Any]] | None = None):
        """Args:
        kind: what the entries are, for messages ("activation").
        skip_params: leading builder parameters supplied by dlrun, not by configs.
        group: the config group whose options name these builders ("optim"). The shipped
            options' YAML files then hold every default: a builder with a default of its
            own cannot register, and `bind` takes an omitted key from those files.
        required: details every registration must give, besides the builder, each with
            the function that checks it and returns the value kept (losses: the tasks
            each one fits).
        """
        self.kind = kind
        self.skip_params = skip_params
        self.group = group
        self.required = dict(required or {})
        self._entries: dict[str, Entry] = {}
        ALL_REGISTRIES.append(self)

    def register(self, name: str, description: str, **details: Any):
        """Decorate a builder to register it as `name`.

        Raises:
            TypeError: a required detail is missing or unknown, or the builder of a
                group option has a default (its YAML file holds it).
        """
        missing = [key for key in self.required if key not in details]
        unknown = [key for key in details if key not in self.required]
        if missing or unknown:
            wanted = ", ".join(f"{key}=..." for key in self.required) or "no details"
            raise TypeError(f"{self.kind} '{name}' must be registered with {wanted}; "
                            f"missing: {', '.join(missing) or 'none'}, unknown: {', '.join(unknown) or 'none'}.")
        checked = {key: check(details[key]) for key, check in self.required.items()}

        origin = current_plugin()

        def decorate(builder: Callable[..., Any]) -> Callable[..., Any]:
            if origin is not None:
                self._refuse_clash(name, origin)
                _refuse_unresolvable_hints(builder, f"the plugin '{origin.name}': {self.kind} '{name}'")
            if self.group is not None:
                self._refuse_defaults(name, builder)
            self._entries[name] = Entry(name, description, builder, checked, origin)
            return builder

        return decorate

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[name] for name in sorted(self._entries)]

    def remove(self, names: list[str]) -> None:
        """Forget entries (a plugin's, in tests that load one and must leave the registry as they found it)."""
        for name in names:
            self._entries.pop(name, None)

    def _refuse_clash(self, name: str, origin: PluginOrigin) -> None:
        """A plugin adds components: it never replaces dlrun's own or another plugin's."""
        existing = self._entries.get(name)
        if existing is None:
            return
        if existing.plugin is None:
            raise PluginError(f"the plugin '{origin.name}' registers the {self.kind} '{name}', which is one of "
                              f"dlrun's own: a plugin adds components and never replaces a built-in. Register it "
                              f"under another name (e.g. '{origin.name}_{name}').")
        if existing.plugin.name == origin.name:
            raise PluginError(f"the plugin '{origin.name}' registers the {self.kind} '{name}' twice. Give each "
                              "component its own name.")
        raise PluginError(f"the plugin '{origin.name}' registers the {self.kind} '{name}', which the plugin "
                          f"'{existing.plugin.name}' registered already. Give each component its own name, or "
                          "load only one of the two plugins.")

    def get(self, name: Any, where: str = "") -> Entry:
        """The entry for name, or a ConfigError with did-you-mean."""
        if not isinstance(name, str) or name not in self._entries:
            raise ConfigError(unknown_name_message(self.kind, str(name), self._entries, where))
        return self._entries[name]

    def config_params(self, name: str) -> dict[str, inspect.Parameter]:
        """The builder's parameters that a config may set."""
        return _config_params(self.get(name).builder, self.skip_params)

    def bind(self, name: str, options: Mapping[str, Any], where: str, option: str | None = None) -> dict[str, Any]:
        """Check options against the builder's signature; return them with defaults filled.

        A key the options omit takes the builder's default or, in a group registry, the
        value that the shipped options naming this builder give it.

        Args:
            name: the registry name chosen by the config.
            options: the config's keys for the builder (without 'name' or 'type').
            where: the dotted config path, for messages ("optim", "model.layers[2]").
            option: the group option that chose it ("momentum" for optim=momentum), for messages.
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
        conf = entry.plugin.conf_dir if entry.plugin is not None else None
        shipped = shipped_values(self.group, name, conf or PACKAGE_CONF) if self.group else {}
        for key, param in params.items():
            if key in bound:
                continue
            if param.default is not inspect.Parameter.empty:
                bound[key] = param.default
            elif key in shipped and not _interpolates(shipped[key]):
                bound[key] = check_value(shipped[key], hints.get(key), f"{where}.{key}")
            else:
                raise ConfigError(self._missing_message(name, key, where, option, shipped.get(key)))
        return bound

    def _missing_message(self, name: str, key: str, where: str, option: str | None, shipped: Any) -> str:
        if self.group is None:
            return f"'{where}.{key}' is required for {self.kind} '{name}'; set {where}.{key}=..."
        chosen = f" ({self.group}={option})" if option else ""
        reason = (f"the shipped {self.group} option gives it as {shipped}, which only the composed config resolves"
                  if shipped is not None else f"no shipped {self.group} option gives it a value")
        return (f"'{where}.{key}' is missing: {self.kind} '{name}'{chosen} takes it, and {reason}. "
                f"Add '{key}: VALUE' to the option's YAML file, or pass {where}.{key}=VALUE.")

    def _refuse_defaults(self, name: str, builder: Callable[..., Any]) -> None:
        defaults = [p.name for p in _config_params(builder, self.skip_params).values()
                    if p.default is not inspect.Parameter.empty]
        if defaults:
            raise TypeError(
                f"{self.kind} '{name}' is a {self.group} option: its defaults belong in its YAML file "
                f"(conf/{self.group}/{name}.yaml), not in the builder's signature. Remove the default of "
                f"{', '.join(defaults)} and list every key in the YAML file."
            )


def _refuse_unresolvable_hints(builder: Callable[..., Any], what: str) -> None:
    """A plugin builder's annotations are read when a config is bound; one that names a type its module
    does not import would fail there, deep in a run's checks, so it is refused when it registers."""
    try:
        typing.get_type_hints(builder, include_extras=True)
    except Exception as error:
        raise PluginError(f"{what}: its annotations cannot be read ({type(error).__name__}: {error}). Import "
                          "every type the builder's signature names at the top of the plugin's module.") from None


def _config_params(builder: Callable[..., Any], skip_params: int) -> dict[str, inspect.Parameter]:
    params = list(inspect.signature(builder).parameters.values())
    return {p.name: p for p in params[skip_params:] if p.kind is p.KEYWORD_ONLY or p.kind is p.POSITIONAL_OR_KEYWORD}


def _interpolates(value: Any) -> bool:
    """A YAML value that refers to other keys (${optim.lr}): only a composed config can resolve it."""
    return isinstance(value, str) and "${" in value


_NUMBER_TYPES = {float: "a number", int: "an integer"}


def check_value(value: Any, hint: Any, where: str) -> Any:
    """Check one config value against a builder annotation; return it coerced.

    Understands float, int, bool, str, Optional[...], tuple/list of numbers (a
    fixed-length tuple checks its length) and Annotated[..., Range | Choice].
    Anything else passes unchecked.

    Raises:
        BadValue: the value breaks the annotation; its `key` is `where`.
    """
    if hint is None:
        return value
    origin = typing.get_origin(hint)
    if origin is typing.Annotated:
        inner, *checks = typing.get_args(hint)
        value = check_value(value, inner, where)
        for check in checks if value is not None else ():
            if isinstance(check, Range) and (problem := check.violation(value)):
                raise BadValue(where, f"'{where}' {problem}, got {value!r}.")
            if isinstance(check, Choice) and not any(value is o or (value == o and type(value) is type(o))
                                                     for o in check.options):  # 1 is not True
                shown = [str(o).lower() if isinstance(o, bool) else o for o in check.options]
                raise BadValue(where, unknown_name_message("value", str(value), shown, where))
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
            raise BadValue(where, f"'{where}' must be true or false, got {value!r}.")
        return value
    if hint in _NUMBER_TYPES:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if hint is int:
            ok = ok and (isinstance(value, int) or value.is_integer())
        if not ok:
            raise BadValue(where, f"'{where}' must be {_NUMBER_TYPES[hint]}, got {value!r}.")
        if isinstance(value, float) and not math.isfinite(value):  # inf passes every lower bound, NaN every comparison
            raise BadValue(where, f"'{where}' must be a finite number, got {value!r}.")
        return hint(value)
    if hint is str:
        if not isinstance(value, str):
            raise BadValue(where, f"'{where}' must be a string, got {value!r}.")
        return value
    if typing.get_origin(hint) in (tuple, list):
        return _coerce_sequence(value, hint, where)
    return value


def _coerce_sequence(value: Any, hint: Any, where: str) -> tuple:
    """A list as a tuple, numbers checked; tuple[float, float] also fixes the length (the builder indexes it)."""
    args = typing.get_args(hint)
    fixed = typing.get_origin(hint) is tuple and bool(args) and args[-1] is not Ellipsis
    if not isinstance(value, (list, tuple)):
        raise BadValue(where, f"'{where}' must be a list, got {value!r}.")
    if fixed and len(value) != len(args):
        items = f"{len(args)} {'numbers' if all(a in _NUMBER_TYPES for a in args) else 'values'}"
        raise BadValue(where, f"'{where}' must be a list of {items}, got {len(value)} ({list(value)!r}).")
    items = args if fixed else [(args or (None,))[0]] * len(value)
    return tuple(_coerce(v, item, f"{where}[{i}]") if item in _NUMBER_TYPES else v
                 for i, (v, item) in enumerate(zip(value, items)))

