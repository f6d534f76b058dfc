"""Finding and importing plugins: the only way code of the user's own enters dlrun.

Plugins come from two places only: installed distributions that declare an entry point
in the group `dlrun.plugins` (how pytest and Hydra find theirs), and the modules or
`.py` files named on the command line (`--plugin`), in `$DLRUN_PLUGINS` or by the Python
API. Never from a config file, an override, a sweep file or a stored run: a stored run
names its plugins (name and version) so that reproduce can check them, never a path to
import.

Names given on the command line are added to `$DLRUN_PLUGINS`, so the processes dlrun
starts (grid and sweep workers, DDP ranks) load the same plugins.

Imports nothing heavy until there is a plugin to load: `dlrun configs` stays fast.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
from importlib import metadata
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from dlrun.errors import PluginError

ENTRY_POINT_GROUP = "dlrun.plugins"
ENV = "DLRUN_PLUGINS"
TAG = "dlrun.plugins"
# The modules that fill dlrun's registries with its own components: imported before any plugin
# runs, so that a plugin that reuses a built-in's name is refused rather than shadowed.
BUILTIN_MODULES = (
    "dlrun.components.activations", "dlrun.components.losses", "dlrun.components.optimizers",
    "dlrun.components.schedulers", "dlrun.components.metrics", "dlrun.components.callbacks",
    "dlrun.data.sources", "dlrun.data.augment", "dlrun.models.build", "dlrun.sweep.samplers",
    "dlrun.sweep.pruners",
)


@dataclass(eq=False)
class Plugin:
    """A loaded plugin: what it is called, which version, where it came from, its config tree."""

    name: str
    version: str  # the distribution's version, or sha256:... of a file
    source: str  # "entry point NAME", a file's path, or a module's name
    kind: str  # "entry point", "file" or "module"
    conf_dir: Path | None = None  # set by dlrun.plugins.config_dir() while the plugin is imported
    distribution: str | None = None  # the installed distribution that ships it, where there is one
    registered: list[tuple[str, str]] = field(default_factory=list)  # (kind, name) of what it added

    def load_hint(self) -> str:
        """How to load this plugin again, for messages."""
        if self.distribution:
            return f"install it (pip install {self.distribution}) or name it: --plugin {self.source}"
        return f"name it: --plugin {self.source} (or add it to ${ENV})"


_loaded: dict[str, Plugin] = {}
_done: set[str] = set()  # the sources already imported (entry points once, each named plugin once)


def load_plugins(named: Iterable[str] = ()) -> list[Plugin]:
    """Import the installed entry points, $DLRUN_PLUGINS and `named` (each once per process).

    Returns:
        Every plugin loaded so far, in load order.

    Raises:
        PluginError: a plugin fails to import, or registers a name already taken.
    """
    todo: list[tuple[str, object]] = []
    if "entry points" not in _done:
        _done.add("entry points")
        points = sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda point: point.name)
        todo += [(f"entry point {point.name}", point) for point in points]
    for item in [*env_plugins(), *named]:
        if item and item not in _done:
            _done.add(item)
            todo.append((item, None))
    if todo:
        _fill_builtin_registries()
    for source, point in todo:
        _load(_from_entry_point(point) if point is not None else _from_name(source), point)
    return list(_loaded.values())


def use_plugins(named: Iterable[str]) -> list[Plugin]:
    """Load `named` (and the installed ones) and pass them on, through $DLRUN_PLUGINS, to the processes
    this one starts. A file is passed by its absolute path, so a worker in another folder finds it."""
    given = [_absolute(item) for item in named if item]
    if given:
        known = env_plugins()
        os.environ[ENV] = os.pathsep.join([*known, *(item for item in given if item not in known)])
    return load_plugins(given)


def env_plugins() -> list[str]:
    return [item.strip() for item in os.environ.get(ENV, "").split(os.pathsep) if item.strip()]


def loaded_plugins() -> list[Plugin]:
    return list(_loaded.values())


def recorded_plugins() -> str:
    """The tag value that records the loaded plugins: a JSON list of name, version and source."""
    return json.dumps([{"name": p.name, "version": p.version, "source": p.source, "kind": p.kind,
                        **({"distribution": p.distribution} if p.distribution else {})}
                       for p in sorted(_loaded.values(), key=lambda p: p.name)])


def describe_plugins() -> str:
    """The text of `dlrun plugins`: each loaded plugin, its version and source, what it registered."""
    from dlrun.config.paths import group_options

    plugins = load_plugins()
    if not plugins:
        return ("no plugins loaded. Install one (a distribution with an entry point in the group "
                f"{ENTRY_POINT_GROUP}) or name one: --plugin PATH_OR_MODULE, or ${ENV}.")
    lines = []
    for plugin in plugins:
        lines.append(f"{plugin.name}  {plugin.version}  ({plugin.kind}: {plugin.source})")
        kinds: dict[str, list[str]] = {}
        for kind, name in plugin.registered:
            kinds.setdefault(kind, []).append(name)
        lines += [f"  {kind}: {', '.join(names)}" for kind, names in kinds.items()]
        if plugin.conf_dir is not None:
            options = [f"{group}={option}" for group, found in group_options([plugin.conf_dir]).items()
                       for option in found]
            lines.append(f"  configs: {', '.join(options) or 'none'}  [{plugin.conf_dir}]")
    return "\n".join(lines)


def plugin_of_file(path: Path) -> str | None:
    """The name of the loaded plugin whose config tree holds `path`, if any."""
    return next((p.name for p in _loaded.values() if p.conf_dir is not None and path.is_relative_to(p.conf_dir)),
                None)


def check_recorded(tag: str | None, run_id: str) -> list[tuple[str, str, str]]:
    """Compare the plugins a stored run was trained with against those loaded now.

    Returns:
        (what, then, now) for each plugin whose version changed.

    Raises:
        PluginError: a plugin the run used is not loaded.
    """
    try:
        used = json.loads(tag) if tag else []
    except ValueError:
        used = []
    loaded = {plugin.name: plugin for plugin in load_plugins()}
    drift = []
    for record in used if isinstance(used, list) else []:
        if not isinstance(record, dict) or not isinstance(record.get("name"), str):
            continue
        name, version = record["name"], str(record.get("version", "?"))
        if name not in loaded:
            hint = Plugin(name, version, str(record.get("source", name)), str(record.get("kind", "")),
                          distribution=record.get("distribution")).load_hint()
            raise PluginError(f"run {run_id} was trained with the plugin '{name}' ({version}, from "
                              f"{record.get('source', '?')}), which is not loaded here: {hint}.")
        if loaded[name].version != version:
            drift.append((f"plugin {name}", version, loaded[name].version))
    return drift


def unload_plugins() -> None:
    """Forget every plugin: their components leave the registries, and the next load imports them anew
    (a notebook that edited its plugin file; tests that must leave the registries as they found them)."""
    from dlrun.config.paths import PLUGIN_CONF_DIRS, shipped_values
    from dlrun.registry import ALL_REGISTRIES

    for registry in ALL_REGISTRIES:  # also what a plugin that failed half-way registered
        registry.remove([entry.name for entry in registry.entries() if entry.plugin is not None])
    for plugin in _loaded.values():
        module = f"dlrun_plugin_{Path(plugin.source).stem}" if plugin.kind == "file" else plugin.source
        for name in [m for m in sys.modules if m == module.split(":")[0] or m.startswith(module + ".")]:
            del sys.modules[name]
    _loaded.clear()
    _done.clear()
    PLUGIN_CONF_DIRS.clear()
    shipped_values.cache_clear()


def _fill_builtin_registries() -> None:
    for module in BUILTIN_MODULES:
        importlib.import_module(module)


def _load(plugin: Plugin, point) -> None:
    from dlrun.registry import ALL_REGISTRIES, PluginOrigin, registering_for

    if plugin.name in _loaded:
        raise PluginError(f"two plugins are named '{plugin.name}': {_loaded[plugin.name].source} and "
                          f"{plugin.source}. Load only one of them.")
    origin = PluginOrigin(plugin.name)
    with registering_for(origin):
        try:
            if point is not None:
                point.load()
            elif plugin.kind == "file":
                _import_file(Path(plugin.source))
            else:
                importlib.import_module(plugin.source)
        except PluginError:
            raise
        except Exception as error:  # a plugin is the user's code: any failure is theirs to fix
            raise PluginError(f"the plugin '{plugin.name}' ({plugin.source}) failed to import: "
                              f"{type(error).__name__}: {error}. Fix the plugin, or stop loading it "
                              f"(remove it from --plugin, ${ENV}, or uninstall it).") from None
    plugin.conf_dir = origin.conf_dir
    plugin.registered = [(registry.kind, entry.name) for registry in ALL_REGISTRIES for entry in registry.entries()
                         if entry.plugin is origin]
    if plugin.conf_dir is not None:
        from dlrun.config.paths import PLUGIN_CONF_DIRS

        _check_conf_dir(plugin)
        PLUGIN_CONF_DIRS.append(plugin.conf_dir)
    _loaded[plugin.name] = plugin


def _import_file(path: Path) -> None:
    module_name = f"dlrun_plugin_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # a plugin's classes must be importable by name (pickling, spawn)
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise


def _from_entry_point(point) -> Plugin:
    distribution = getattr(point, "dist", None)
    name = distribution.metadata["Name"] if distribution is not None else None
    version = distribution.version if distribution is not None else "unknown"
    return Plugin(point.name, version, point.value, "entry point", distribution=name)


def _from_name(item: str) -> Plugin:
    path = Path(item)
    if item.endswith(".py") or os.sep in item or path.is_file():
        if not path.is_file():
            raise PluginError(f"plugin '{item}': no file there. Give the path of a .py file, or the name of an "
                              "installed module (--plugin my_package.layers).")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        return Plugin(path.stem, f"sha256:{digest}", str(path.resolve()), "file")
    try:
        spec = importlib.util.find_spec(item)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise PluginError(f"plugin '{item}': no module of that name is installed, and no file of that name is "
                          "here. Give the path of a .py file, or install the module.")
    distribution, version = _distribution_of(item)
    if version is None and spec.origin and Path(spec.origin).is_file():
        version = f"sha256:{hashlib.sha256(Path(spec.origin).read_bytes()).hexdigest()}"
    return Plugin(item, version or "unknown", item, "module", distribution=distribution)


def _distribution_of(module: str) -> tuple[str | None, str | None]:
    names = metadata.packages_distributions().get(module.split(".")[0], [])
    return (names[0], metadata.version(names[0])) if names else (None, None)


def _absolute(item: str) -> str:
    path = Path(item)
    return str(path.resolve()) if (item.endswith(".py") or os.sep in item or path.is_file()) else item


def _check_conf_dir(plugin: Plugin) -> None:
    """A plugin's config tree adds options: it never replaces the primary config or an option of dlrun's
    or of another plugin."""
    from dlrun.config.paths import PACKAGE_CONF, PRIMARY, group_options

    conf = plugin.conf_dir
    if not conf.is_dir():
        raise PluginError(f"the plugin '{plugin.name}' names the config folder {conf}, which does not exist. "
                          "Ship the folder with the plugin, or drop the dlrun.plugins.config_dir() call.")
    if (conf / f"{PRIMARY}.yaml").exists():
        raise PluginError(f"the plugin '{plugin.name}' ships {conf / (PRIMARY + '.yaml')}: a plugin's config tree "
                          "holds group options (model/NAME.yaml, loss/NAME.yaml), never the primary config.")
    ours = group_options([PACKAGE_CONF])
    others = {p.name: group_options([p.conf_dir]) for p in _loaded.values() if p.conf_dir is not None}
    for group, options in group_options([conf]).items():
        for option in options:
            if option in ours.get(group, {}):
                raise PluginError(f"the plugin '{plugin.name}' ships the option {group}={option}, which is one "
                                  f"of dlrun's own. Rename its file ({conf / group / option}.yaml).")
            owner = next((name for name, tree in others.items() if option in tree.get(group, {})), None)
            if owner is not None:
                raise PluginError(f"the plugin '{plugin.name}' ships the option {group}={option}, which the "
                                  f"plugin '{owner}' ships too. Rename one of the two files.")
