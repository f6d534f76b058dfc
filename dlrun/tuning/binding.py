"""A sweep file's sampler or pruner: its name and options, bound to a registry entry and built."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dlrun.errors import ConfigError, did_you_mean
from dlrun.registry import Registry


@dataclass(frozen=True)
class Named:
    """A sampler or pruner as a sweep file gives it: the entry's name and the options for its builder."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


def build_named(registry: Registry, named: Named, context: Any, path: str):
    """Build the entry that `named` names, its options checked against the builder's signature first.

    Args:
        registry: SAMPLERS or PRUNERS; its kind is the sweep file's key ("sampler", "pruner"),
            and each entry's `optuna_class` detail names the class it builds.
        named: the entry's name and the file's options for it.
        context: what dlrun gives the builder as its first argument.
        path: the sweep file, for messages.

    Returns:
        The Optuna sampler or pruner.

    Raises:
        ConfigError: an unknown option (with did-you-mean), a value of the wrong type or out of
            range, or options the Optuna class refuses together; each names the file, the key
            and the Optuna class, whose documentation describes the options.
    """
    entry = registry.get(named.name, path)
    optuna_class = entry.details["optuna_class"]
    where = f"{path}, {registry.kind}"
    accepted = registry.config_params(named.name)
    for key in named.options:  # bind refuses these too, but without the Optuna class a user can look up
        if key not in accepted:
            raise ConfigError(f"{where}: {optuna_class} has no option '{key}'.{did_you_mean(key, accepted)} "
                              f"Options: {', '.join(accepted) or 'none'}.")
    given = ", ".join(f"{key}={value!r}" for key, value in named.options.items())
    refused = f"{where}: {optuna_class} does not take these options ({given})"
    try:
        options = registry.bind(named.name, named.options, registry.kind)
    except ConfigError as error:
        raise ConfigError(f"{refused}: {error}") from None
    try:
        return entry.builder(context, **options)
    except (TypeError, ValueError) as error:  # Optuna's own checks, of options that clash
        raise ConfigError(f"{refused}: {error}") from None
