"""A sweep file: found by name or path, read safely, every key checked. No Optuna, no torch.

The sampler's and pruner's names are checked against their registries (samplers.py,
pruners.py); their options are checked when they are built, against the builders.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlrun.errors import ConfigError, did_you_mean, unknown_name_message
from dlrun.registry import Registry
from dlrun.tuning.binding import Named
from dlrun.tuning.pruners import PRUNERS
from dlrun.tuning.samplers import SAMPLERS

_PACKAGE_DIR = Path(__file__).resolve().parent.parent
# Shipped sweep files: dlrun/sweeps in an installed package, the top-level sweeps/ in a checkout.
PACKAGE_SWEEPS = next((p for p in (_PACKAGE_DIR / "sweeps", _PACKAGE_DIR.parent / "sweeps") if p.is_dir()),
                      _PACKAGE_DIR / "sweeps")

# The order messages list the samplers in, as the shipped sweep files' comments do: the default first.
SAMPLERS_LISTED = ("tpe", "random", "grid", "cmaes")


def listed_samplers() -> list[str]:
    """The registered samplers in SAMPLERS_LISTED's order, any others after them."""
    names = SAMPLERS.names()
    return [n for n in SAMPLERS_LISTED if n in names] + [n for n in names if n not in SAMPLERS_LISTED]


DIRECTIONS = ("minimize", "maximize")
KEYS = {
    "overrides": "the base run's overrides, a list",
    "metric": "the per-epoch metric to optimize, e.g. val/acc",
    "direction": "minimize or maximize",
    "n_trials": "how many trials the study runs in all",
    "sampler": f"one of {', '.join(listed_samplers())}, or {{name: ..., option: value}}",
    "pruner": f"one of {', '.join(PRUNERS.names())}, or {{name: ..., option: value}}",
    "n_jobs": "trials at once, each in its own process",
    "seed": "the sampler's seed",
    "params": "{key: Hydra sweep expression}",
    "models": "which trials log their served model: best (the best so far, the default) or all",
    "plots": "whether each trial draws and logs its plots (false, the default)",
}
MODELS = ("best", "all")


@dataclass(frozen=True)
class SweepSpec:
    path: Path
    text: str  # the file as written, logged with the parent run
    overrides: list[str]
    metric: str
    direction: str | None  # None: from the metric (acc: maximize, else minimize)
    n_trials: int
    sampler: Named
    pruner: Named
    n_jobs: int
    seed: int
    params: dict[str, Any]
    models: str = "best"  # best: a trial logs its served model when it is the best so far; all: every trial
    plots: bool = False  # each trial's plots

    @property
    def name(self) -> str:
        return self.path.stem

    def fingerprint(self, extra_overrides: list[str]) -> str:
        """What makes two sweeps the same study: all but n_trials and n_jobs, which may change on resume."""
        same = {"overrides": self.overrides + list(extra_overrides), "metric": self.metric,
                "direction": self.direction, "sampler": [self.sampler.name, self.sampler.options],
                "pruner": [self.pruner.name, self.pruner.options], "params": self.params}
        return hashlib.sha256(json.dumps(same, sort_keys=True, default=str).encode()).hexdigest()[:16]


def find_sweep(name_or_path: str) -> Path:
    """A sweep file by path, else by name in ./sweeps, else among the shipped sweeps."""
    given = Path(name_or_path)
    if given.suffix in (".yaml", ".yml") or given.is_file():
        if not given.is_file():
            raise ConfigError(f"no sweep file at '{name_or_path}'.")
        return given.resolve()
    for folder in (Path.cwd() / "sweeps", PACKAGE_SWEEPS):
        candidate = folder / f"{name_or_path}.yaml"
        if candidate.is_file():
            return candidate.resolve()
    raise ConfigError(unknown_name_message("sweep", name_or_path, sorted(available_sweeps()),
                                           where="./sweeps and the shipped sweeps")
                      + " Or give the path of a YAML file.")


def available_sweeps() -> dict[str, Path]:
    """Sweep names and their files; ./sweeps shadows the shipped ones."""
    found: dict[str, Path] = {}
    for folder in (Path.cwd() / "sweeps", PACKAGE_SWEEPS):
        if folder.is_dir():
            for file in sorted(folder.glob("*.yaml")):
                found.setdefault(file.stem, file)
    return found


def load_spec(path: Path) -> SweepSpec:
    """Read and check a sweep file's keys and types (the config tree is checked later, in check.py)."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read the sweep file: {error}. Save it as UTF-8 text.") from None
    try:
        raw = _safe_load_unique_keys(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(error).split())}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a sweep file is a mapping with keys {', '.join(KEYS)}.")
    for key in raw:
        if key not in KEYS:
            raise ConfigError(f"{path}: unknown key '{key}'.{did_you_mean(str(key), KEYS)} "
                              f"Keys: {', '.join(f'{k} ({v})' for k, v in KEYS.items())}.")
    where = str(path)
    params = raw.get("params")
    if not isinstance(params, dict) or not params:
        raise ConfigError(f"{where}: 'params' must map each searched key to a sweep expression, "
                          "e.g. params: {optim.lr: 'tag(log, interval(1e-4, 1e-1))'}.")
    overrides = raw.get("overrides") or []
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise ConfigError(f"{where}: 'overrides' must be a list of override strings, e.g. [data=digits, model=cnn].")
    metric = raw.get("metric", "val/loss")
    if not isinstance(metric, str):
        raise ConfigError(f"{where}: 'metric' must be a metric name such as val/acc, not {metric!r}.")
    direction = raw.get("direction")
    if direction is not None and direction not in DIRECTIONS:
        raise ConfigError(f"{where}: direction '{direction}' is neither minimize nor maximize.")
    models = raw.get("models", "best")
    if models not in MODELS:
        raise ConfigError(f"{where}: models '{models}' is neither best nor all.{did_you_mean(str(models), MODELS)} "
                          "best: only a trial that is the best so far logs its served model; all: every trial.")
    plots = raw.get("plots", False)
    if not isinstance(plots, bool):
        raise ConfigError(f"{where}: plots must be true or false, not {plots!r}.")
    return SweepSpec(
        path=path, text=text, overrides=overrides, metric=metric, direction=direction,
        n_trials=_positive_int(raw.get("n_trials", 10), "n_trials", where),
        sampler=_named(raw.get("sampler", "tpe"), SAMPLERS, where),
        pruner=_named(raw.get("pruner", "none"), PRUNERS, where),
        n_jobs=_positive_int(raw.get("n_jobs", 1), "n_jobs", where),
        seed=_positive_int(raw.get("seed", 0), "seed", where, minimum=0),
        params={str(k): v for k, v in params.items()}, models=models, plots=plots,
    )


def _safe_load_unique_keys(text: str) -> Any:
    """yaml.safe_load, but a key written twice in one mapping is an error: safe_load keeps the last one silently,
    so a second `optim.lr:` under params would replace the first without a word."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        pass

    def construct_mapping(loader, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` may repeat keys on purpose
                continue
            key = loader.construct_object(key_node, deep=True)
            try:
                repeated = key in seen
            except TypeError:  # an unhashable key: the safe loader reports it below
                continue
            if repeated:
                raise yaml.constructor.ConstructorError("while constructing a mapping", node.start_mark,
                                                        f"found duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return loader.construct_mapping(node, deep)

    UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return yaml.load(text, Loader=UniqueKeyLoader)  # a SafeLoader subclass: no python tags


def _positive_int(value: Any, key: str, where: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{where}: '{key}' must be a whole number of at least {minimum}, not {value!r}.")
    return value


def _named(value: Any, registry: Registry, where: str) -> Named:
    """The file's `sampler` or `pruner` (the registry's kind): a name, or {name: ..., option: value}."""
    key = registry.kind
    options: dict[str, Any] = {}
    if isinstance(value, dict):
        options = {str(k): v for k, v in value.items() if k != "name"}
        value = value.get("name")
    if value is None and key == "pruner":
        value = "none"
    if value is None:  # only a sampler: a pruner without a name is none
        names = listed_samplers()
        raise ConfigError(f"{where}: '{key}' needs a name, e.g. {key}: {{name: {names[0]}}}. Names: {', '.join(names)}.")
    registry.get(value, where)  # an unknown name: a ConfigError with did-you-mean
    return Named(value, options)
