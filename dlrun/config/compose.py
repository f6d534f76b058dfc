"""Compose the config tree with the user's overrides through Hydra's config loader.

Hydra's compose API searches its primary folder before any added search path; a
user's ./conf must shadow the package's, so the search path is built here in
dlrun's order and handed to Hydra's loader directly.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from dlrun.config.paths import PRIMARY, config_roots, group_options
from dlrun.errors import ConfigError, did_you_mean, unknown_name_message
from dlrun.plugin_loading import load_plugins

# The resolvers a config may use: each reads other keys of the same config, nothing else. Every other
# is refused: oc.env reads the environment (a secret would be logged with the run's config and its
# value differs between machines), oc.decode and oc.create resolve whatever a string holds (so they
# would pass any resolver through), hydra: has no Hydra app behind it here, and now, python_version or a
# plugin's resolver make a value that the config does not show.
ALLOWED_RESOLVERS = ("oc.select", "oc.dict.keys", "oc.dict.values")
# A value that is only a reference to another key: ${model.width} (no resolver, nothing around it).
_REFERENCE = re.compile(r"^\$\{([A-Za-z_][\w.\[\]]*)\}$")


@dataclass(frozen=True)
class Composed:
    """The composed config, resolved to plain containers, and how it was chosen."""

    config: dict[str, Any]
    choices: dict[str, str]  # group -> chosen option, e.g. {"model": "cnn"}
    overrides: list[str]
    # key -> the key its value came from through ${...}, followed to the end:
    # {"model.layers[0].out_channels": "model.width"}; messages name both.
    references: dict[str, str] = field(default_factory=dict)


def compose(overrides: list[str], config_dir: str | Path | None = None) -> Composed:
    """Compose train.yaml with overrides; a ConfigError for any problem, named."""
    roots, groups = _search_path(config_dir)
    parsed = _parse(overrides)
    _check_group_choices(parsed, groups)
    return _composed(_load(roots, overrides, parsed, groups), overrides, groups)


def composer(base: list[str], config_dir: str | Path | None = None) -> Callable[[list[str]], Composed]:
    """A function giving compose(base + extra) for many lists `extra` (a sweep's trials), Hydra's work on
    base done once.

    Hydra composes in two stages: the group choices pick and merge the files, then the value overrides
    are applied, in their order, to the merged config. An `extra` that sets values only (optim.lr=0.01,
    +model.blocks=3, ~key) goes through Hydra's own second stage on a copy of base's merged config, which
    is what compose(base + extra) does; one that names a group (or fails) is composed whole.
    """
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    roots, groups = _search_path(config_dir)
    base = list(base)
    parsed_base = _parse(base)
    _check_group_choices(parsed_base, groups)
    merged = _load(roots, base, parsed_base, groups)

    def compose_extra(extra: list[str]) -> Composed:
        overrides = [*base, *extra]
        parsed = _parse(list(extra))
        if not all(_sets_a_value(override, groups) for override in parsed):
            return compose(overrides, config_dir)
        loaded = copy.deepcopy(merged)
        try:
            ConfigLoaderImpl._apply_overrides_to_config(parsed, loaded)
        except Exception:  # an unknown key, a bad value: compose names it
            return compose(overrides, config_dir)
        return _composed(loaded, overrides, groups)

    return compose_extra


def _search_path(config_dir: str | Path | None) -> tuple[list[Path], dict[str, dict[str, Path]]]:
    """The config roots in search order and their groups' options."""
    load_plugins()  # their config trees join the search path
    roots = config_roots(config_dir)
    if config_dir is not None and not roots[0].is_dir():
        raise ConfigError(f"--config-dir: no folder at '{config_dir}'.")
    return roots, group_options(roots)


def _sets_a_value(override, groups: dict) -> bool:
    """Whether Hydra applies the override to the merged config (rather than to the choice of files)."""
    key = override.key_or_group
    return (key not in groups and "/" not in key and not key.startswith("hydra") and override.package is None
            and not override.is_sweep_override())


def _composed(loaded, overrides: list[str], groups: dict) -> Composed:
    """Hydra's loaded config as a Composed: the group choices read, hydra's node dropped, resolved."""
    from omegaconf import OmegaConf, open_dict
    from omegaconf.errors import OmegaConfBaseException

    choices = {
        group: str(option)
        for group, option in OmegaConf.to_container(loaded.hydra.runtime.choices).items()
        if group in groups and option is not None
    }
    with open_dict(loaded):
        del loaded["hydra"]
    unresolved = OmegaConf.to_container(loaded, resolve=False)
    refuse_resolvers(unresolved, "the config")
    try:
        config = OmegaConf.to_container(loaded, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as error:
        raise ConfigError(f"cannot resolve the config at '{error.full_key}': {_first_line(error.msg)}") from None
    return Composed(config=config, choices=choices, overrides=list(overrides), references=references_in(unresolved))


def references_in(unresolved: Any) -> dict[str, str]:
    """Each key whose value is a bare reference (${model.width}) and the key it ends at.

    Keys are written as dlrun's messages write them: model.layers[0].out_channels.
    A chain (a: ${b}, b: ${c}) is followed to the key that holds a value of its own.
    """
    direct: dict[str, str] = {}

    def walk(node: Any, key: str) -> None:
        if isinstance(node, dict):
            for name, value in node.items():
                walk(value, f"{key}.{name}" if key else str(name))
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{key}[{index}]")
        elif isinstance(node, str) and (match := _REFERENCE.match(node)):
            direct[key] = re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", match.group(1))  # OmegaConf's a.0 is a[0]

    walk(unresolved, "")
    ends = {}
    for key, target in direct.items():
        seen = {key}
        while target in direct and target not in seen:
            seen.add(target)
            target = direct[target]
        ends[key] = target
    return ends


def refuse_resolvers(node: Any, source: str, key: str = "") -> None:
    """A ConfigError naming the key and the resolver if any value calls a resolver not allowed."""
    if isinstance(node, dict):
        for name, value in node.items():
            refuse_resolvers(value, source, f"{key}.{name}" if key else str(name))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            refuse_resolvers(value, source, f"{key}.{index}" if key else str(index))
    elif isinstance(node, str) and "${" in node:
        refused = [name for name in _resolvers_in(node) if name not in ALLOWED_RESOLVERS]
        if refused:
            fix = (" Pass the value on the command line instead (KEY=$VARIABLE: the shell reads the environment "
                   "and the value is what gets recorded)." if refused[0] == "oc.env" else " Write the value itself.")
            raise ConfigError(f"'{key}' in {source} uses the resolver '{refused[0]}' ({node}); dlrun configs may "
                              f"refer to other keys (${{model.width}}) and use {', '.join(ALLOWED_RESOLVERS)} only, "
                              f"never a resolver that reads the environment, files or anything outside the config."
                              f"{fix}")


def _resolvers_in(text: str) -> list[str]:
    """The resolver names that text calls, nested ones included (OmegaConf's own grammar, so escapes hold)."""
    from omegaconf.errors import GrammarParseError
    from omegaconf.grammar.gen.OmegaConfGrammarParser import OmegaConfGrammarParser
    from omegaconf.grammar_parser import parse

    try:
        todo = [parse(text)]
    except GrammarParseError:
        return []  # not an interpolation OmegaConf can resolve: resolution reports it
    names = []
    while todo:
        node = todo.pop()
        if isinstance(node, OmegaConfGrammarParser.InterpolationResolverContext):
            names.append(node.resolverName().getText())
        todo.extend(node.getChild(i) for i in range(node.getChildCount()) if hasattr(node, "getChildCount"))
    return names


def _parse(overrides: list[str]):
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    for override in overrides:
        if "=" not in override:
            raise ConfigError(
                f"'{override}' is not an override. Write KEY=VALUE or GROUP=OPTION, e.g. model=cnn optim.lr=0.01."
            )
    parser = OverridesParser.create()
    for override in overrides:  # one at a time, so that the message names the culprit
        try:
            parser.parse_overrides([override])
        except OverrideParseException as error:
            raise ConfigError(f"cannot parse override '{override}': {_first_line(error.message)}. Quote a value "
                              "that holds brackets, commas or other special characters: KEY='VALUE' "
                              "(in the shell: \"KEY='VALUE'\").") from None
    return parser.parse_overrides(overrides)


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
    except OSError as error:  # OmegaConf's loader: a file that holds one number or true/false, not keys
        if error.errno is not None:  # a real I/O error (no permission): not the file's content
            culprit = f"the config file {error.filename}" if error.filename else "a config file"
            raise ConfigError(f"cannot read {culprit}: {error.strerror}. Make it readable (or choose another), "
                              "then run again.") from None
        culprit = _chosen_file_where(parsed, groups, lambda data: not isinstance(data, (dict, list, str)))
        raise ConfigError(f"{culprit or 'a config file'} is not a mapping of keys ({error}). "
                          "Write it as KEY: VALUE lines, e.g. name: adam.") from None
    except RecursionError:  # a YAML alias inside its own anchor (a: &x [*x]) makes an endless value
        culprit = _chosen_file_where(parsed, groups, contains_itself)
        raise ConfigError(f"{culprit or 'a config file'} holds a value that contains itself (a YAML alias *NAME "
                          "inside its own anchor &NAME). Write the value out in that file.") from None


def _chosen_file_where(parsed, groups, is_bad) -> str | None:
    """The group file chosen by an override whose YAML content is_bad, if there is one."""
    import yaml

    for override in parsed:
        path = groups.get(override.key_or_group, {}).get(str(override.value()))
        try:
            if path is not None and is_bad(yaml.safe_load(path.read_text(encoding="utf-8"))):
                return str(path)
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
    return None


def contains_itself(data: Any) -> bool:
    """True for YAML data holding an alias inside its own anchor (a: &x [*x]): walking it never ends."""
    try:
        json.dumps(data, skipkeys=True, default=str)
    except ValueError:  # "Circular reference detected"
        return True
    return False


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
