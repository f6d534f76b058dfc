"""`dlrun eval`: score a run's best checkpoint, rebuilt from its stored config.

Without overrides the run's own test split is rebuilt (the split is seeded), so
the scores equal the logged test/... metrics. With data overrides the run's
served model (its preprocessing fitted on the original train split) scores every
row of the other data.
"""

from __future__ import annotations

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

    from dlrun.training.setup import make_loaders, prepare, quiet_lightning

    run = stored.run_config()
    prepared = prepare(run)
    checkpoint = torch.load(stored.checkpoint("best"), map_location="cpu", weights_only=True)
    prepared.module.load_state_dict(checkpoint["state_dict"])
    quiet_lightning()
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    (metrics,) = trainer.test(prepared.module, make_loaders(run, prepared)["test"], verbose=False)
    return {k: float(v) for k, v in metrics.items()}


def _score_other_data(stored, overrides: list[str]) -> dict[str, float]:
    from dlrun.data.sources import COMMON_KEYS, DATASETS

    data_cfg = _other_data_config(stored, overrides)
    options = {k: v for k, v in data_cfg.items() if k not in COMMON_KEYS}
    raw = DATASETS.get(data_cfg["name"], "data.name").builder(**DATASETS.bind(data_cfg["name"], options, "data"))
    model = stored.served_model()
    check_feature_count(model, raw.x, f"data={data_cfg['name']}", stored.run_id)
    outputs = np.asarray(model.predict(raw.x.astype(np.float32)))
    if raw.task == "classification":
        return {"acc": float((outputs.argmax(axis=1) == raw.y).mean()), "rows": float(len(raw.x))}
    return {"mae": float(np.abs(outputs.reshape(raw.y.shape) - raw.y).mean()), "rows": float(len(raw.x))}


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
