"""`dlrun configs`: the config groups, their options and one line on each."""

from __future__ import annotations

from pathlib import Path

from dlrun.config.paths import PACKAGE_CONF, PRIMARY, config_roots, describe, group_options
from dlrun.errors import ConfigError, unknown_name_message


def default_choices(root: Path = PACKAGE_CONF) -> dict[str, str]:
    """The option each group takes when not overridden, read from train.yaml's defaults."""
    import yaml

    primary = yaml.safe_load((root / f"{PRIMARY}.yaml").read_text(encoding="utf-8")) or {}
    defaults = {}
    for item in primary.get("defaults", []):
        if isinstance(item, dict):
            defaults.update({str(k): str(v) for k, v in item.items()})
    return defaults


def _origin(file: Path) -> str:
    """Where an option that is not the package's comes from: a plugin's name, or the folder it lies in."""
    from dlrun.plugin_loading import plugin_of_file

    plugin = plugin_of_file(file)
    return f"plugin {plugin}" if plugin else str(file.parent.parent)


def list_groups(group: str | None = None, config_dir: str | None = None) -> str:
    """Text listing every group (or one group) with each option's description."""
    from dlrun.plugin_loading import load_plugins

    load_plugins()  # their options are listed too, marked with the plugin's name
    roots = config_roots(config_dir)
    groups = group_options(roots)
    defaults = default_choices()
    if group is not None and group not in groups:
        raise ConfigError(unknown_name_message("config group", group, groups))
    lines = []
    for name in [group] if group else sorted(groups):
        lines.append(f"{name}:" + (f"  (default: {defaults[name]})" if name in defaults else ""))
        options = groups[name]
        width = max(len(o) for o in options)
        for option, file in options.items():
            origin = "" if file.is_relative_to(PACKAGE_CONF) else f"  [{_origin(file)}]"
            lines.append(f"  {option:<{width}}  {describe(file)}{origin}")
        if not group:
            lines.append("")
    if not group:
        lines.append("Choose with GROUP=OPTION, e.g. dlrun train model=mlp optim=sgd; details: dlrun configs GROUP")
    return "\n".join(lines).rstrip()
