"""Compose the config tree with the user's overrides through Hydra's config loader.

Hydra's compose API searches its primary folder before any added search path; a
user's ./conf must shadow the package's, so the search path is built here in
dlrun's order and handed to Hydra's loader directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlrun.config.paths import PRIMARY, config_roots, group_options
from dlrun.errors import ConfigError, did_you_mean, unknown_name_message


@dataclass(frozen=True)
class Composed:
    """The composed config, resolved to plain containers, and how it was chosen."""

    config: dict[str, Any]
    choices: dict[str, str]  # group -> chosen option, e.g. {"model": "cnn"}
    overrides: list[str]


def compose(overrides: list[str], config_dir: str | Path | None = None) -> Composed:
    """Compose train.yaml with overrides; a ConfigError for any problem, named."""
    from omegaconf import OmegaConf, open_dict
    from omegaconf.errors import OmegaConfBaseException

    roots = config_roots(config_dir)
    if config_dir is not None and not roots[0].is_dir():
        raise ConfigError(f"--config-dir: no folder at '{config_dir}'.")
    groups = group_options(roots)
    parsed = _parse(overrides)
    _check_group_choices(parsed, groups)
    loaded = _load(roots, overrides, parsed, groups)
    choices = {
        group: str(option)
        for group, option in OmegaConf.to_container(loaded.hydra.runtime.choices).items()
        if group in groups and option is not None
    }
    with open_dict(loaded):
        del loaded["hydra"]
    try:
        config = OmegaConf.to_container(loaded, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as error:
        raise ConfigError(f"cannot resolve the config at '{error.full_key}': {_first_line(error.msg)}") from None
    return Composed(config=config, choices=choices, overrides=list(overrides))


def _parse(overrides: list[str]):
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    for override in overrides:
        if "=" not in override:
            raise ConfigError(
                f"'{override}' is not an override. Write KEY=VALUE or GROUP=OPTION, e.g. model=cnn optim.lr=0.01."
            )
    try:
        return OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as error:
        raise ConfigError(f"cannot parse override: {_first_line(error.message)}") from None


def _check_group_choices(parsed, groups: dict[str, dict[str, Path]]) -> None:
    for override in parsed:
        group = override.key_or_group
        if group not in groups or override.is_delete():
            continue
        if override.is_sweep_override():
            raise ConfigError(f"'{override.input_line}' lists several values; dlrun train takes one value per key.")
        value = override.value()
        if not isinstance(value, str) or value not in groups[group]:
            raise ConfigError(unknown_name_message(f"{group} option", str(value), groups[group], where=f"override {override.input_line}"))


def _load(roots, overrides, parsed, groups):
    import yaml
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.config_search_path_impl import ConfigSearchPathImpl
    from hydra.errors import HydraException
    from hydra.types import RunMode
    from omegaconf.errors import OmegaConfBaseException

    from hydra.core.plugins import Plugins

    import hydra.conf  # noqa: F401  registers hydra/config in the ConfigStore

    Plugins.instance()  # registers Hydra's config sources (file://, pkg://)
    search_path = ConfigSearchPathImpl()
    search_path.append("hydra", "pkg://hydra.conf")
    for index, root in enumerate(roots):
        search_path.append(f"dlrun-{index}", f"file://{root}")
    search_path.append("schema", "structured://")  # Hydra's own hydra/config node
    loader = ConfigLoaderImpl(config_search_path=search_path)
    try:
        return loader.load_configuration(PRIMARY, list(overrides), run_mode=RunMode.RUN, from_shell=False)
    except yaml.YAMLError as error:  # a syntax error, or a python tag that the safe loader refuses
        raise ConfigError(f"a config file is not valid YAML (python tags are refused): {' '.join(str(error).split())}"
                          " Fix that file.") from None
    except (HydraException, OmegaConfBaseException, ValueError, TypeError) as error:  # Hydra raises all of these
        raise ConfigError(_explain(error, parsed, groups, loader)) from None


def _explain(error: Exception, parsed, groups, loader) -> str:
    """Turn a Hydra composition failure into a message that names the fix."""
    from hydra.types import RunMode
    from omegaconf import OmegaConf, open_dict

    group_overrides = [o.input_line for o in parsed if o.key_or_group in groups]
    for override in parsed:
        key = override.key_or_group
        if key in groups or override.is_add() or override.is_force_add():
            continue
        try:
            base = loader.load_configuration(PRIMARY, group_overrides, run_mode=RunMode.RUN, from_shell=False)
        except Exception:
            break
        with open_dict(base):
            del base["hydra"]
        known = _dotted_keys(OmegaConf.to_container(base, resolve=False))
        if key not in known:
            return (
                f"unknown config key '{key}' (override {override.input_line}).{did_you_mean(key, known)}"
                " (+KEY=VALUE adds a key only where the schema is open, e.g. a model knob: +model.blocks=3.)"
            )
    text = " ".join(str(error).split())
    return f"cannot compose the config: {text}"


def _dotted_keys(node: Any, prefix: str = "") -> list[str]:
    keys = []
    if isinstance(node, dict):
        for k, v in node.items():
            path = f"{prefix}{k}"
            keys.append(path)
            keys.extend(_dotted_keys(v, path + "."))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            path = f"{prefix}{i}" if prefix else str(i)
            keys.append(path.rstrip("."))
            keys.extend(_dotted_keys(v, path + "."))
    return keys


def _first_line(text: str) -> str:
    return str(text).strip().splitlines()[0] if str(text).strip() else str(text)
