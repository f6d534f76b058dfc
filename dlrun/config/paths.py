"""Where config trees live: --config-dir, then ./conf, then the plugins', then the package's own.

Kept free of Hydra and torch so that `dlrun configs` starts fast.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml

_PACKAGE_DIR = Path(__file__).resolve().parent.parent

# The tree ships inside the installed package (dlrun/conf); in a source checkout it
# is the top-level conf/ beside the package.
PACKAGE_CONF = next(
    (p for p in (_PACKAGE_DIR / "conf", _PACKAGE_DIR.parent / "conf") if (p / "train.yaml").is_file()),
    _PACKAGE_DIR / "conf",
)
PRIMARY = "train"
# Keys of an option file that are not its builder's options.
NOT_OPTIONS = ("name", "defaults")


def config_roots(config_dir: str | Path | None = None) -> list[Path]:
    """Config folders in search order: the first that holds a file wins. A plugin's tree comes after
    the user's own (--config-dir, ./conf) and before the package's."""
    roots: list[Path] = []
    if config_dir is not None:
        roots.append(Path(config_dir).resolve())
    local = (Path.cwd() / "conf").resolve()
    if local.is_dir() and local != PACKAGE_CONF:
        roots.append(local)
    roots.extend(plugin_conf_dirs())
    roots.append(PACKAGE_CONF)
    return roots


# The config trees of the plugins loaded so far, in load order: dlrun.plugin_loading adds them (compose,
# validate and `dlrun configs` load the plugins before they read the search path).
_plugin_conf_dirs: list[Path] = []


def plugin_conf_dirs() -> list[Path]:
    return list(_plugin_conf_dirs)


def add_plugin_conf_dir(path: Path) -> None:
    _plugin_conf_dirs.append(path)


def forget_plugin_conf_dirs() -> None:
    _plugin_conf_dirs.clear()


def group_options(roots: list[Path]) -> dict[str, dict[str, Path]]:
    """Every config group and its options: {group: {option: file}}, first root winning."""
    groups: dict[str, dict[str, Path]] = {}
    for root in roots:
        if not root.is_dir():
            continue
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            options = groups.setdefault(folder.name, {})
            for file in sorted(folder.glob("*.yaml")):
                options.setdefault(file.stem, file)
    return {g: o for g, o in groups.items() if o}


def describe(file: Path) -> str:
    """An option's one-line description: the first comment line of its YAML file."""
    for line in file.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            return stripped.lstrip("#").strip()
        if stripped:
            break
    return ""


def read_option(file: Path) -> dict[str, Any]:
    """An option file's keys as written (interpolations unresolved); {} for a file that is not a mapping."""
    data = yaml.safe_load(file.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


@functools.cache
def shipped_values(group: str, builder: str, root: Path = PACKAGE_CONF) -> dict[str, Any]:
    """The values that the options of `group` shipped with a builder give it: the package's own, or the
    config tree of the plugin that registered the builder (`root`).

    The option named after the builder comes first (optim/sgd.yaml for sgd); the
    other options naming it (optim/momentum.yaml, name: sgd) give the keys it leaves
    out. These files are where a group option's defaults live (see dlrun.registry).

    Args:
        group: a config group ("optim").
        builder: a registry name ("sgd").
        root: the config tree shipped with the builder.
    """
    folder = Path(root) / group
    files = sorted(folder.glob("*.yaml"), key=lambda file: (file.stem != builder, file.stem))
    values: dict[str, Any] = {}
    for file in files:
        option = read_option(file)
        if option.get("name") == builder:
            values.update({k: v for k, v in option.items() if k not in NOT_OPTIONS and k not in values})
    return values
