"""Split the raw data (seeded, stratified for classification) and fit scaling on train.

The result is a DataBundle: model-ready tensors for each split plus the
preprocessing as torch modules, so the served model takes raw features. Features a
source streams (dlrun.data.lazy) stay on disk: each split is then a LazySplit (its
rows, preprocessed per batch) and the scaling is fitted by a chunked pass.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from dlrun.data.lazy import LazyFeatures
from dlrun.data.sources import DATASETS, RawData
from dlrun.errors import DataError

if TYPE_CHECKING:  # annotations only: loading data imports torch lazily
    import torch

    from dlrun.data.tokenizer import Tokenizer


@dataclass
class DataBundle:
    """Everything training needs from the data, independent of its source.

    x_train, x_val and x_test are model-ready tensors, or LazySplits (dlrun.data.streaming) when the
    source streams its features: those have len() and shape and are read by slicing (split[a:b]).
    """

    x_train: "torch.Tensor"
    y_train: "torch.Tensor"
    x_val: "torch.Tensor"
    y_val: "torch.Tensor"
    x_test: "torch.Tensor"
    y_test: "torch.Tensor"
    task: str
    num_classes: int  # 0 for regression
    class_names: list[str]
    sample_shape: tuple[int, ...]
    preprocess: "torch.nn.Module"  # raw features (N, F) -> model input (N, *sample_shape)
    postprocess: "torch.nn.Module"  # model output -> served output (probabilities or values)
    raw_example: np.ndarray  # a few raw training rows, for the served model's signature
    fingerprint: str  # sha256 of the raw data as loaded
    feature_names: list[str] = field(default_factory=list)  # the raw features' names, where the source has them
    split_rows: dict[str, np.ndarray] = field(default_factory=dict)  # "train"/"val"/"test": rows of the data as loaded
    # Text data (data/text_prepare.py): x_* are int64 token ids, preprocess is an identity on them.
    tokenizer: "Tokenizer | None" = None  # fitted on the training texts
    text_column: str | None = None  # the CSV column the texts come from
    text_example: list[str] | None = None  # a few raw training texts (raw_example holds their token ids)

    @property
    def out_features(self) -> int:
        return self.num_classes if self.task == "classification" else int(self.y_train.shape[1])


def load_data(data_cfg: dict, seed: int, ranks_here: int = 1) -> DataBundle:
    """Load the configured data set, split it and fit preprocessing on the train split.

    Args:
        data_cfg: the validated `data` config: name, the common keys and the source's own.
        seed: the run's seed; it shuffles the split (chronological sets ignore it).
        ranks_here: the processes loading it at once on this machine (DDP ranks): with
            data.num_workers=auto, the scaling pass of streamed features takes this process's share of the cores.
    """
    from dlrun.data.sources import COMMON_KEYS

    name = data_cfg["name"]
    options = {k: v for k, v in data_cfg.items() if k not in COMMON_KEYS}
    raw = DATASETS.get(name).builder(**DATASETS.bind(name, options, "data"))
    train, val, test = split_indices(raw, data_cfg["val_fraction"], data_cfg["test_fraction"], seed)
    if raw.text is not None:  # texts: token ids from a tokenizer fitted on the training split
        from dlrun.data.text_prepare import text_bundle_fields

        return DataBundle(**text_bundle_fields(raw, train, val, test))
    return _bundle(raw, train, val, test, data_cfg.get("num_workers"), ranks_here)


def split_indices(raw: RawData, val_fraction: float, test_fraction: float, seed: int):
    """Train, val and test row indices, each sorted.

    Shuffled by seed and stratified by class for classification; chronological
    when the samples carry time steps (raw.time_span), see _chronological_split.
    """
    n = len(raw.x)
    sizes = {"train": n - round(n * val_fraction) - round(n * test_fraction), "val": round(n * val_fraction), "test": round(n * test_fraction)}
    if min(sizes.values()) < 1:
        raise DataError(
            f"{n} rows split by data.val_fraction={val_fraction} and data.test_fraction={test_fraction} "
            f"leave an empty split ({', '.join(f'{k}: {v}' for k, v in sizes.items())}). Use more rows or other fractions."
        )
    if raw.time_span is not None:
        return _chronological_split(raw.time_span, sizes["val"], sizes["test"], val_fraction, test_fraction)
    return _shuffled_split(raw, val_fraction, test_fraction, seed)


def _shuffled_split(raw: RawData, val_fraction: float, test_fraction: float, seed: int):
    from sklearn.model_selection import train_test_split

    n = len(raw.x)
    rows = np.arange(n)
    strata = raw.y if raw.task == "classification" else None
    held_out = val_fraction + test_fraction
    try:
        train, rest = train_test_split(rows, test_size=held_out, random_state=seed, stratify=strata)
        rest_strata = strata[rest] if strata is not None else None
        val, test = train_test_split(rest, test_size=test_fraction / held_out, random_state=seed, stratify=rest_strata)
    except ValueError as error:
        raise DataError(
            f"cannot split {n} rows into train/val/test{' stratified by class' if strata is not None else ''} "
            f"(data.val_fraction={val_fraction}, data.test_fraction={test_fraction}): {error} "
            "Use more rows, larger fractions, or classes with more samples."
        ) from None
    return np.sort(train), np.sort(val), np.sort(test)


def _chronological_split(time_span: np.ndarray, n_val: int, n_test: int, val_fraction: float, test_fraction: float):
    """The latest n_test samples are test, the n_val before them val, the earlier ones train.

    Windows overlap in time, so a window that shares a time step with the next
    split is dropped: every time step a training sample reads or predicts comes
    before any step of val, and every val step before any test step. No seed:
    the order is time's.
    """
    first, last = time_span[:, 0], time_span[:, 1]
    order = np.argsort(first, kind="stable")
    test = order[-n_test:]
    before_test = order[last[order] < first[test].min()]
    val = before_test[-n_val:]
    train = before_test[last[before_test] < first[val].min()] if len(val) else val
    if len(val) < n_val or len(train) == 0:
        span = int(last[0] - first[0] + 1)
        raise DataError(
            f"a chronological split of {len(order)} windows of {span} steps (data.val_fraction={val_fraction}, "
            f"data.test_fraction={test_fraction}) leaves no training windows once windows overlapping the next split "
            f"are dropped. Use a longer series, a smaller data.window or smaller fractions."
        )
    return np.sort(train), np.sort(val), np.sort(test)


def _bundle(raw: RawData, train, val, test, num_workers=None, ranks_here: int = 1) -> DataBundle:
    import torch
    from torch import nn

    from dlrun.models.modules import Probabilities, Reshape, Standardize, Unstandardize

    mean, scale = _scaling(raw, train, num_workers, ranks_here)
    scale = np.where(scale > 1e-12, scale, 1.0)
    steps = [Standardize(torch.tensor(mean), torch.tensor(scale))]
    if raw.sample_shape != (raw.x.shape[1],):
        steps.append(Reshape(raw.sample_shape))
    preprocess = nn.Sequential(*steps).eval()

    if raw.task == "classification":
        y = torch.tensor(raw.y, dtype=torch.long)
        postprocess: nn.Module = Probabilities()
        num_classes = int(raw.y.max()) + 1 if not raw.class_names else len(raw.class_names)
    else:
        y_fit = raw.y[train].astype(np.float64)
        y_mean, y_scale = y_fit.mean(axis=0), np.where(y_fit.std(axis=0) > 1e-12, y_fit.std(axis=0), 1.0)
        # Train on standardized targets; the served model maps back to the user's units.
        y = torch.as_tensor((raw.y - y_mean) / y_scale, dtype=torch.float32)
        postprocess = Unstandardize(torch.tensor(y_mean), torch.tensor(y_scale))
        num_classes = 0
    rows = {"train": train, "val": val, "test": test}
    index = {name: torch.as_tensor(split, dtype=torch.long) for name, split in rows.items()}
    if isinstance(raw.x, LazyFeatures):  # each split reads its rows from the source a batch at a time
        from dlrun.data.streaming import LazySplit

        x = {name: LazySplit(raw.x, split, preprocess, tuple(raw.sample_shape)) for name, split in rows.items()}
        example = raw.x.rows(train[:5])
    else:
        with torch.no_grad():
            # a copy: sources may be read-only
            whole = preprocess(torch.tensor(raw.x, dtype=torch.float32)).contiguous()
        x = {name: whole[split] for name, split in index.items()}
        example = raw.x[train[:5]].astype(np.float32)
    return DataBundle(
        x_train=x["train"], y_train=y[index["train"]],
        x_val=x["val"], y_val=y[index["val"]],
        x_test=x["test"], y_test=y[index["test"]],
        task=raw.task, num_classes=num_classes, class_names=raw.class_names,
        sample_shape=tuple(raw.sample_shape), preprocess=preprocess, postprocess=postprocess.eval(),
        raw_example=example, fingerprint=fingerprint(raw),
        feature_names=list(raw.feature_names), split_rows=rows,
    )


def _scaling(raw: RawData, train: np.ndarray, num_workers=None, ranks_here: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) of the training rows, float64, one per feature. Pixels (or lagged values of one series)
    share one scale, so an always-blank pixel is not blown up and every lag is scaled alike. Streamed
    features are fitted by a chunked pass (dlrun.data.lazy_scaling) that agrees with this one."""
    shared = raw.image or raw.shared_scale
    if isinstance(raw.x, LazyFeatures):
        from dlrun.data.lazy_scaling import fit_scaling
        from dlrun.data.streaming import resolve_num_workers

        return fit_scaling(raw.x, train, shared, resolve_num_workers(num_workers, ranks_here))
    x_fit = raw.x[train].astype(np.float64)
    if shared:
        return np.full(raw.x.shape[1], x_fit.mean()), np.full(raw.x.shape[1], x_fit.std())
    return x_fit.mean(axis=0), x_fit.std(axis=0)


def fingerprint(raw: RawData) -> str:
    """A hash of the data as loaded: features, targets and task. Streamed features hash what their source
    says identifies them (a memory-mapped array's values, as in memory; image files' bytes)."""
    digest = hashlib.sha256()
    if isinstance(raw.x, LazyFeatures):
        digest.update(f"float32{tuple(raw.x.shape)}".encode())
        raw.x.fingerprint_into(digest)
        parts = (np.ascontiguousarray(raw.y),)
    else:
        parts = (np.ascontiguousarray(raw.x), np.ascontiguousarray(raw.y))
    for part in parts:
        digest.update(str(part.dtype).encode() + str(part.shape).encode() + part.tobytes())
    digest.update(raw.task.encode())
    return digest.hexdigest()
