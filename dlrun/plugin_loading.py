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

import functools
import hashlib
import importlib
import importlib.util
from importlib import metadata
import json
import os
import re
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
    "dlrun.data.sources", "dlrun.data.augment", "dlrun.models.build", "dlrun.tuning.samplers",
    "dlrun.tuning.pruners",
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
    digest: str = "unknown"  # sha256 of its source files: drift even where the version stays
    registered: list[tuple[str, str]] = field(default_factory=list)  # (kind, name) of what it added


_loaded: dict[str, Plugin] = {}  # by name, in load order
_keys: set[str] = set()  # what is loaded, named one way only: file:/abs/path.py or module:package.module
_env_before: list[str | None] = []  # $DLRUN_PLUGINS before this process first added to it (for unload_plugins)


def load_plugins(named: Iterable[str] = (), export: bool = False) -> list[Plugin]:
    """Import the installed entry points, $DLRUN_PLUGINS and `named`, each once per process; a plugin
    that failed is tried again on the next call (a notebook that fixed it).

    Args:
        named: .py files or module names, as the user gave them.
        export: add each of `named` to $DLRUN_PLUGINS once it has loaded, so that the processes this
            one starts load it too.

    Returns:
        Every plugin loaded so far, in load order.

    Raises:
        PluginError: a plugin fails to import, or registers a name already taken.
    """
    todo = [(f"module:{point.module}", point, None) for point in _entry_points()]
    todo += [(_key(item), None, item) for item in env_plugins()]
    todo += [(_key(item), None, item) for item in named if item]
    todo = [(key, point, item) for key, point, item in todo if key not in _keys]
    if todo:
        _fill_builtin_registries()
    for key, point, item in todo:
        if key in _keys:  # named twice in one call
            continue
        _load(key, point, item)
        _keys.add(key)
        if export and item is not None:
            _export(key.removeprefix("file:").removeprefix("module:"))
    if any(point is not None for _, point, _ in todo):
        _remember_installed_conf_dirs()
    return list(_loaded.values())


def _remember_installed_conf_dirs() -> None:
    """Write down the installed plugins' config trees, for shell completion (dlrun/plugin_configs.py)."""
    from dlrun.plugin_configs import remember

    installed = {point.name for point in _entry_points()}
    remember(_entry_points(), [p.conf_dir for p in _loaded.values()
                               if p.kind == "entry point" and p.name in installed and p.conf_dir is not None])


def use_plugins(named: Iterable[str]) -> list[Plugin]:
    """Load `named` (and the installed ones) and pass them on, through $DLRUN_PLUGINS, to the processes
    this one starts. A file is passed by its absolute path, so a worker in another folder finds it."""
    return load_plugins(named, export=True)


def _export(item: str) -> None:
    known = env_plugins()
    if not _env_before:
        _env_before.append(os.environ.get(ENV))
    if item not in known:
        os.environ[ENV] = os.pathsep.join([*known, item])


@functools.cache
def _entry_points() -> tuple:
    return tuple(sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda point: point.name))


def _is_file(item: str) -> bool:
    """A plugin named by a path (my_layers.py, ./plugins/x) rather than by an installed module's name."""
    return item.endswith(".py") or "/" in item or os.sep in item


def _key(item: str) -> str:
    return f"file:{Path(item).resolve()}" if _is_file(item) else f"module:{item}"


def env_plugins() -> list[str]:
    return [item.strip() for item in os.environ.get(ENV, "").split(os.pathsep) if item.strip()]


def loaded_plugins() -> list[Plugin]:
    return list(_loaded.values())


def recorded_plugins() -> str:
    """The tag value that records the loaded plugins: a JSON list of name, version, digest and source."""
    return json.dumps([{"name": p.name, "version": p.version, "digest": p.digest, "source": p.source,
                        "kind": p.kind, **({"distribution": p.distribution} if p.distribution else {})}
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
    """Compare the plugins a stored run was trained with against those loaded now. The tag is read as
    data only: nothing it names is imported, and what it says is quoted as the run's claim.

    Returns:
        (what, then, now) for each plugin whose version or source files changed.

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
            raise PluginError(f"run {run_id} was trained with the plugin {name!r} (the run records version "
                              f"{version!r}, from {str(record.get('source', '?'))!r}), which is not loaded here: "
                              f"{_hint(record)}.")
        now = loaded[name]
        if now.version != version:
            drift.append((f"plugin {name}", version, now.version))
        elif str(record.get("digest", now.digest)) != now.digest:
            drift.append((f"plugin {name} (its source files)", str(record["digest"]), now.digest))
    return drift


_DISTRIBUTION_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")  # PEP 508


def _hint(record: dict) -> str:
    """How to load a recorded plugin, built from the run's tag only where it is a plain name or path."""
    distribution, source, kind = record.get("distribution"), str(record.get("source", "")), record.get("kind")
    if kind == "file":
        return f"name it: --plugin {source!r}, or add it to ${ENV}"
    if isinstance(distribution, str) and _DISTRIBUTION_NAME.match(distribution):
        install = f"install it (the run names the distribution {distribution!r}: pip install {distribution})"
    else:
        install = "install the distribution that provides it"
    return f"{install}, or name its module: --plugin {source!r}"


def unload_plugins() -> None:
    """Forget every plugin: their components leave the registries, and the next load imports them anew
    (a notebook that edited its plugin file; tests that must leave the registries as they found them)."""
    from dlrun.config.paths import forget_plugin_conf_dirs, shipped_values
    from dlrun.registry import ALL_REGISTRIES

    for registry in ALL_REGISTRIES:  # also what a plugin that failed half-way registered
        registry.remove([entry.name for entry in registry.entries() if entry.plugin is not None])
    for plugin in _loaded.values():
        module = f"dlrun_plugin_{Path(plugin.source).stem}" if plugin.kind == "file" else plugin.source
        for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
            del sys.modules[name]
    _loaded.clear()
    _keys.clear()
    forget_plugin_conf_dirs()
    shipped_values.cache_clear()
    _entry_points.cache_clear()
    if _env_before:
        before = _env_before.pop()
        if before is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = before


def _fill_builtin_registries() -> None:
    for module in BUILTIN_MODULES:
        importlib.import_module(module)


def _load(key: str, point, item: str | None) -> None:
    """Import one plugin with what it registers marked as its own; on failure, nothing of it is kept."""
    from dlrun.registry import PluginOrigin, registering_for

    origin = PluginOrigin(point.name if point is not None else _name_of(item))
    with registering_for(origin):
        try:
            plugin = _from_entry_point(point) if point is not None else _from_name(item)
            if plugin.name in _loaded:
                raise PluginError(f"two plugins are named '{plugin.name}': {_loaded[plugin.name].source} and "
                                  f"{plugin.source}. Load only one of them.")
            if plugin.kind == "file":
                _import_file(Path(plugin.source))
            else:
                importlib.import_module(plugin.source)
            plugin.conf_dir = origin.conf_dir
            if plugin.conf_dir is not None:
                _check_conf_dir(plugin)
        except Exception as error:  # a plugin is the user's code: any failure is theirs to fix
            _forget(origin)
            if isinstance(error, PluginError):
                raise
            raise PluginError(f"the plugin '{origin.name}' ({item or point.value}) failed to import: "
                              f"{type(error).__name__}: {error}. Fix the plugin, or stop loading it "
                              f"(remove it from --plugin, ${ENV}, or uninstall it).") from None
    from dlrun.config.paths import add_plugin_conf_dir
    from dlrun.registry import ALL_REGISTRIES

    plugin.registered = [(registry.kind, entry.name) for registry in ALL_REGISTRIES for entry in registry.entries()
                         if entry.plugin is origin]
    if plugin.conf_dir is not None:
        add_plugin_conf_dir(plugin.conf_dir)
    _loaded[plugin.name] = plugin


def _forget(origin) -> None:
    """What a plugin that failed half-way registered leaves the registries."""
    from dlrun.registry import ALL_REGISTRIES

    for registry in ALL_REGISTRIES:
        registry.remove([entry.name for entry in registry.entries() if entry.plugin is origin])


def _name_of(item: str) -> str:
    return Path(item).stem if _is_file(item) else item


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
    if point.attr:
        raise PluginError(f"the entry point '{point.name} = {point.value}' (group {ENTRY_POINT_GROUP}) names an "
                          "attribute; a dlrun plugin's entry point names the module that registers its components "
                          f"({point.name} = {point.module}).")
    distribution = getattr(point, "dist", None)
    name = distribution.metadata["Name"] if distribution is not None else None
    version = distribution.version if distribution is not None else "unknown"
    return Plugin(point.name, version, point.module, "entry point", distribution=name,
                  digest=_module_digest(point.module))


def _from_name(item: str) -> Plugin:
    if _is_file(item):
        path = Path(item)
        if not path.is_file():
            raise PluginError(f"plugin '{item}': no file there. Give the path of a .py file, or the name of an "
                              "installed module (--plugin my_package.layers).")
        digest = f"sha256:{_digest([path])}"
        return Plugin(path.stem, digest, str(path.resolve()), "file", digest=digest)
    try:
        spec = importlib.util.find_spec(item)  # imports the parent packages, inside the guarded block
    except ModuleNotFoundError:
        spec = None
    if spec is None:
        raise PluginError(f"plugin '{item}': no module of that name is installed. Give the path of a .py file "
                          "(my_layers.py), or install the module.")
    distribution, version = _distribution_of(item)
    digest = _module_digest(item)
    return Plugin(item, version or digest, item, "module", distribution=distribution, digest=digest)


def _module_digest(module: str) -> str:
    """sha256 of a module's source, or of every .py file of its package: an edit anywhere in a plugin's
    code (an editable install, a folder on the path) is drift, whatever its version says."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin or not Path(spec.origin).is_file():
        return "unknown"
    origin = Path(spec.origin)
    files = sorted(origin.parent.rglob("*.py")) if origin.name == "__init__.py" else [origin]
    return f"sha256:{_digest(files)}"


def _digest(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


def _distribution_of(module: str) -> tuple[str | None, str | None]:
    names = metadata.packages_distributions().get(module.split(".")[0], [])
    return (names[0], metadata.version(names[0])) if names else (None, None)


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
