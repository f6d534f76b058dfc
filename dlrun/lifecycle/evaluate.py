"""`dlrun eval`: score a run's best checkpoint, rebuilt from its stored config.

Without overrides the run's own test split is rebuilt (the split is seeded), so
the scores equal the logged test/... metrics. With data overrides the run's
served model (its preprocessing fitted on the original train split) scores every
row of the other data.
"""

from __future__ import annotations

import json

import numpy as np

from dlrun.lifecycle.stored import check_feature_count, load_run


def evaluate(run_id: str, overrides: list[str] | None = None, uri: str | None = None) -> dict[str, float]:
    """Test metrics of the run's best checkpoint ({'test/acc': ...}), or of its model on other data."""
    stored = load_run(run_id, uri)
    stored.plugin_drift()  # a data source or layer of a plugin that is not loaded: named, with how to load it
    if overrides:
        return _score_other_data(stored, overrides)
    return _score_test_split(stored)


def _score_test_split(stored) -> dict[str, float]:
    import pytorch_lightning as pl
    import torch

    from dlrun.training.module import tested_metrics
    from dlrun.training.setup import make_loaders, prepare, quiet_lightning

    run = stored.run_config()
    prepared = prepare(run)
    checkpoint = torch.load(stored.checkpoint("best"), map_location="cpu", weights_only=True)
    prepared.module.load_state_dict(checkpoint["state_dict"])
    quiet_lightning()
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.test(prepared.module, make_loaders(run, prepared)["test"], verbose=False)
    return tested_metrics(trainer)


def _score_other_data(stored, overrides: list[str]) -> dict[str, float]:
    from dlrun.data.sources import COMMON_KEYS, DATASETS

    data_cfg = _other_data_config(stored, overrides)
    _refuse_tokenizer_changes(stored, data_cfg)
    options = {k: v for k, v in data_cfg.items() if k not in COMMON_KEYS}
    raw = DATASETS.get(data_cfg["name"], "data.name").builder(**DATASETS.bind(data_cfg["name"], options, "data"))
    model = stored.served_model()
    if raw.text is not None:  # a text run's model reads the raw texts
        outputs = np.asarray(model.predict(list(raw.text.texts)))
    else:
        check_feature_count(model, raw.x, f"data={data_cfg['name']}", stored.run_id)
        outputs = _predicted(model, raw.x)
    if raw.task == "classification":
        y = _as_run_classes(raw, stored, data_cfg["name"])
        return {"acc": float((outputs.argmax(axis=1) == y).mean()), "rows": float(len(raw.y))}
    return {"mae": float(np.abs(outputs.reshape(raw.y.shape) - raw.y).mean()), "rows": float(len(raw.x))}


def _predicted(model, features) -> np.ndarray:
    """The model's outputs for every row: at once for features in memory, a chunk at a time for streamed ones."""
    from dlrun.data.lazy import LazyFeatures, chunk_rows

    if not isinstance(features, LazyFeatures):
        return np.asarray(model.predict(features.astype(np.float32)))
    step = chunk_rows(features)
    return np.concatenate([np.asarray(model.predict(features.rows(np.arange(start, min(start + step, len(features))))))
                           for start in range(0, len(features), step)])


def _as_run_classes(raw, stored, name: str) -> np.ndarray:
    """The other data's class indices in the run's class order: a source numbers its classes by the
    labels it holds, so data without one of the run's classes would shift the others."""
    run_names = stored.data_info().get("class_names") or []
    if not raw.class_names or not run_names or list(raw.class_names) == list(run_names):
        return raw.y
    if _class_numbers(raw.class_names, run_names):  # labels 0..K-1 for a run whose classes have names (iris)
        return np.array([int(label) for label in raw.class_names], dtype=np.int64)[raw.y]
    unknown = sorted(set(raw.class_names) - set(run_names))
    if unknown:
        from dlrun.errors import DataError

        raise DataError(f"data={name} holds classes the run {stored.run_id} never trained on: {', '.join(unknown)} "
                        f"(its classes: {', '.join(run_names)}). Score it on data with the run's classes only.")
    position = {label: index for index, label in enumerate(run_names)}
    return np.array([position[label] for label in raw.class_names], dtype=np.int64)[raw.y]


def _class_numbers(labels, run_names) -> bool:
    """Whether the other data's labels are the run's class indices rather than its class names: all whole
    numbers within the run's classes, and none of them one of its names."""
    numbers = [label for label in labels if str(label).isdigit() and int(label) < len(run_names)]
    return len(numbers) == len(labels) and not set(map(str, labels)) & set(map(str, run_names))


TOKENIZER_KEYS = ("tokens", "lowercase", "vocab_size", "max_length")  # fixed in a text run's served model


def _refuse_tokenizer_changes(stored, data_cfg: dict) -> None:
    """A ConfigError when the other data of a text run asks for another tokenizer: the served model
    tokenizes with the one fitted in training, whatever the overrides say."""
    from dlrun.errors import ConfigError

    trained = stored.config.get("data") or {}
    if trained.get("name") != "text":
        return
    shown = lambda value: json.dumps(value) if value is None or isinstance(value, bool) else str(value)  # noqa: E731
    changed = [f"data.{key}={shown(data_cfg.get(key))}" for key in TOKENIZER_KEYS
               if key in data_cfg and data_cfg.get(key) != trained.get(key)]
    if changed:
        kept = ", ".join(f"data.{key}={shown(trained.get(key))}" for key in TOKENIZER_KEYS)
        raise ConfigError(f"eval of text run {stored.run_id} cannot change its tokenizer ({', '.join(changed)}): "
                          f"its model reads texts with the tokenizer fitted in training ({kept}). Override "
                          "data.path, data.text, data.target or data.delimiter only.")


def _other_data_config(stored, overrides: list[str]) -> dict:
    """The data config to score: the run's with data.* overrides, or another data option (data=csv ...)."""
    from dlrun.config.compose import compose
    from dlrun.errors import ConfigError
    from dlrun.lifecycle.stored import apply_overrides

    if any(not o.startswith("data") for o in overrides):
        raise ConfigError(f"eval takes data overrides only (data=csv data.path=new.csv ...); got {' '.join(overrides)}.")
    if any(o.startswith("data=") for o in overrides):
        return compose(overrides).config["data"]
    return apply_overrides(stored.config, overrides)["data"]
