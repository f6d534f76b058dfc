"""Shell completion of dlrun's arguments (`dlrun --install-completion`): overrides, sweep names, run ids.

Overrides complete from the config files themselves: groups and their options (`model=c` ->
`model=cnn`), and the keys of the options chosen on the line or by default (`optim.` -> `optim.lr=`).
Run ids come from the local SQLite store, read directly. Nothing here imports torch, Lightning,
MLflow or Hydra, and no plugin is imported (that imports torch): a TAB must answer as fast as
`dlrun --help`. Installed plugins' config trees are searched where dlrun last wrote them down. A completion never fails the shell: whatever cannot be read gives
no candidates.

Bash splits words at '=' (COMP_WORDBREAKS), so `model=c` arrives as the words `model`, `=` and an
incomplete `c`, and bash replaces only the text after the '='; other shells pass `model=c` whole.
Both are handled: the earlier words are joined back, and the candidates lose the part bash keeps.
"""

import os
import sqlite3
from contextlib import closing
from importlib import metadata
from pathlib import Path
from typing import Any

RUN_IDS_LISTED = 30  # the most recent runs offered
HELP_WIDTH = 60  # zsh and fish show a line of help beside each candidate
HYDRA_PREFIXES = ("++", "+", "~")  # add, force-add, delete: completed as the key they precede


def complete_overrides(ctx, incomplete: str) -> list[tuple[str, str]]:
    """Candidates for a GROUP=OPTION or KEY=VALUE override, each with a line of help.

    Args:
        ctx: Click's context of the command being completed (its params hold the words so far).
        incomplete: the word under the cursor (after bash's '=' split, the part after the '=').
    """
    try:
        words, split_at_end = _rejoined([str(w) for w in ctx.params.get("overrides") or []])
        pending = ""
        if split_at_end:  # bash: `model=c` came as `model`, `=`, `c`
            pending = words.pop()
        elif words and "=" not in words[-1] and not incomplete and not words[-1].startswith("~"):
            pending = words.pop() + "="  # bash: `model=` came as `model` (Click drops the lone '=')
        tree = ConfigTree(ctx.params.get("config_dir"), _sweep_overrides(ctx.params.get("name_or_path")) + words)
        found = tree.candidates(pending + incomplete)
        return [(value[len(pending):], _short(help_text)) for value, help_text in found]
    except Exception:  # a file half-written, unreadable, not YAML: no candidates rather than an error
        return []


def complete_groups(incomplete: str) -> list[tuple[str, str]]:
    """Config group names, for `dlrun configs GROUP`."""
    try:
        groups = _group_files(None)
        return [(g, f"{len(options)} options") for g, options in sorted(groups.items()) if g.startswith(incomplete)]
    except Exception:  # see complete_overrides
        return []


def complete_sweeps(incomplete: str) -> list[tuple[str, str]]:
    """Sweep names in ./sweeps and the shipped sweeps, each with its file's first comment line."""
    try:
        from dlrun.config.paths import describe
        from dlrun.tuning.spec import available_sweeps

        return [(name, _short(describe(file))) for name, file in available_sweeps().items()
                if name.startswith(incomplete)]
    except Exception:  # see complete_overrides
        return []


def complete_export_formats(incomplete: str) -> list[tuple[str, str]]:
    """The formats of `dlrun export --format`."""
    from dlrun.lifecycle.export import FORMATS  # only when --format is completed: it imports more

    return [(name, _short(text)) for name, text in FORMATS.items() if name.startswith(incomplete)]


def complete_run_ids(ctx, incomplete: str) -> list[tuple[str, str]]:
    """The most recent run ids of the command's store, newest first, with name, status and start.

    Only a local SQLite store is read (sqlite3, read-only, waiting at most 0.2 s on a lock); a
    tracking server or another database gives no candidates, so a TAB never waits on a network.
    """
    uri = ctx.params.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    if not uri.startswith("sqlite:///"):
        return []
    path = Path(uri.removeprefix("sqlite:///"))
    if not path.is_file():
        return []
    query = ("SELECT run_uuid, name, status, start_time FROM runs WHERE lifecycle_stage = 'active' "
             "AND run_uuid LIKE ? ORDER BY start_time DESC LIMIT ?")
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=0.2)) as db:
            rows = db.execute(query, (f"{incomplete}%", RUN_IDS_LISTED)).fetchall()
    except sqlite3.Error:  # locked past the wait, not MLflow's schema, not a database
        return []
    return [(run_id, f"{name or ''} {status or ''}".strip()) for run_id, name, status, _ in rows]


class ConfigTree:
    """The config a `dlrun train` line would compose, as far as plain YAML tells: train.yaml's keys,
    and for each group the keys of the option chosen on the line (or by default)."""

    def __init__(self, config_dir: str | None, words: list[str]):
        from dlrun.catalog import default_choices
        from dlrun.config.paths import PRIMARY, read_option

        self.groups = _group_files(config_dir)
        primary_root = next(root for root in _roots(config_dir) if (root / f"{PRIMARY}.yaml").is_file())
        chosen = {k: v for k, v in (w.split("=", 1) for w in words if "=" in w) if k in self.groups}
        choices = {**default_choices(primary_root), **chosen}
        for group in list(choices):  # an option's own defaults pick others (data=iris: model=mlp)
            for picked_group, option in _picked_by(self.groups.get(group, {}).get(choices[group])).items():
                if picked_group not in chosen and picked_group in self.groups:
                    choices[picked_group] = option
        primary = read_option(primary_root / f"{PRIMARY}.yaml")
        self.root: dict[str, Any] = {k: v for k, v in primary.items() if k != "defaults"}
        for group, option in choices.items():
            file = self.groups.get(group, {}).get(option)
            self.root[group] = {k: v for k, v in read_option(file).items() if k not in ("name", "defaults")} if file else {}

    def candidates(self, text: str) -> list[tuple[str, str]]:
        """Completions of `text`; a single one that ends a name (`model=`, `trainer.`) is opened one step
        further, so that the shell inserts the common part rather than the name and a space."""
        prefix = next((p for p in HYDRA_PREFIXES if text.startswith(p)), "")
        found = self._level(text[len(prefix):])
        for _ in range(3):
            if len(found) != 1 or not found[0][0].endswith(("=", ".")):
                break
            found = self._level(found[0][0]) or found
        return [(prefix + value, help_text) for value, help_text in found]

    def _level(self, text: str) -> list[tuple[str, str]]:
        from dlrun.config.paths import describe

        key, equals, value = text.partition("=")
        if equals and key in self.groups:
            return [(f"{key}={option}", describe(file)) for option, file in self.groups[key].items()
                    if option.startswith(value)]
        if equals:
            current = self._node(key)
            if isinstance(current, (dict, list)):
                return []
            shown = "null" if current is None else str(current).lower() if isinstance(current, bool) else str(current)
            values = ["true", "false"] if isinstance(current, bool) else [shown]
            return [(f"{key}={v}", "the value now") for v in values if v.startswith(value)]
        parent, _, _ = text.rpartition(".")
        node = self._node(parent) if parent else self.root
        if not isinstance(node, dict):
            return []
        found = []
        for name, child in node.items():
            path = f"{parent}.{name}" if parent else str(name)
            if not parent and name in self.groups:
                found.append((f"{path}=", f"a config group: {', '.join(self.groups[name])}"))
            if isinstance(child, dict) and child:
                found.append((f"{path}.", "its keys"))
            elif not isinstance(child, dict):
                found.append((f"{path}=", f"now {child}"))
        return [(v, h) for v, h in found if v.startswith(text)]

    def _node(self, dotted: str) -> Any:
        node: Any = self.root
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node


def _short(text: str) -> str:
    return text if len(text) <= HELP_WIDTH else text[:HELP_WIDTH - 3].rstrip() + "..."


def _rejoined(words: list[str]) -> tuple[list[str], bool]:
    """Words as typed, with bash's '=' splits undone (`model`, `=`, `cnn` -> `model=cnn`), and whether
    the last word ends in a split '=' (the value is the word being completed)."""
    joined: list[str] = []
    glue = False
    for word in words:
        if word == "=" and joined:
            joined[-1] += word
            glue = True
        elif glue:
            joined[-1] += word
            glue = False
        else:
            joined.append(word)
    return joined, glue


def _sweep_overrides(name_or_path: str | None) -> list[str]:
    """The base run's overrides in a sweep file (`dlrun sweep digits_lstm model.` completes the LSTM's keys)."""
    if not name_or_path:
        return []
    from dlrun.config.paths import read_option
    from dlrun.tuning.spec import available_sweeps

    given = Path(name_or_path)
    file = given if given.suffix in (".yaml", ".yml") else available_sweeps().get(name_or_path)
    overrides = read_option(file).get("overrides") if file and file.is_file() else None
    return [str(o) for o in overrides] if isinstance(overrides, list) else []


def _roots(config_dir: str | None) -> list[Path]:
    """The config folders of config.paths.config_roots, in its order; the installed plugins' trees as
    dlrun last wrote them down (dlrun/plugin_configs.py: see the module's docstring)."""
    from dlrun.config.paths import PACKAGE_CONF
    from dlrun.plugin_configs import remembered
    from dlrun.plugin_loading import ENTRY_POINT_GROUP

    roots = [Path(config_dir).resolve()] if config_dir else []
    local = (Path.cwd() / "conf").resolve()
    if local.is_dir() and local != PACKAGE_CONF:
        roots.append(local)
    return [*roots, *remembered(metadata.entry_points(group=ENTRY_POINT_GROUP)), PACKAGE_CONF]


def _group_files(config_dir: str | None) -> dict[str, dict[str, Path]]:
    from dlrun.config.paths import group_options

    return group_options(_roots(config_dir))


def _picked_by(file: Path | None) -> dict[str, str]:
    """The groups an option file's defaults list picks: `override /model@_global_.model: mlp` -> model: mlp."""
    from dlrun.config.paths import read_option

    picked = {}
    for item in (read_option(file).get("defaults") or []) if file else []:
        if isinstance(item, dict):
            for key, value in item.items():
                group = str(key).removeprefix("override").strip().lstrip("/").split("@")[0]
                if group and isinstance(value, str):
                    picked[group] = value
    return picked
