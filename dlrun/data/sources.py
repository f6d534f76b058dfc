"""Data sources, chosen by `data.name`: each loads raw features and targets.

A source returns the data as the user has it (raw features, float32, one row per
sample); preparation (split, scaling) happens in dlrun.data.prepare so that the
served model can embed it. Nothing here downloads: bundled scikit-learn sets or
files the user names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np

from dlrun.errors import DataError, did_you_mean
from dlrun.registry import Choice, Registry

DATASETS = Registry("data set")

# Keys under `data` that every source shares; the rest go to the source's builder.
COMMON_KEYS = ("name", "batch_size", "val_fraction", "test_fraction")


@dataclass
class RawData:
    """Features and targets as loaded, before any split or scaling."""

    x: np.ndarray  # (N, features) float32
    y: np.ndarray  # (N,) int64 class indices, or (N, targets) float32 values
    task: str  # "classification" or "regression"
    sample_shape: tuple[int, ...]  # what the model sees per sample, e.g. (1, 8, 8)
    class_names: list[str] = field(default_factory=list)
    feature_names: list[str] = field(default_factory=list)
    image: bool = False  # pixels share one scale instead of one per feature


def _from_sklearn(loader_name: str, task: str) -> RawData:
    import sklearn.datasets

    bunch = getattr(sklearn.datasets, loader_name)()
    x = np.asarray(bunch.data, dtype=np.float32)
    if task == "classification":
        y = np.asarray(bunch.target, dtype=np.int64)
        names = [str(n) for n in getattr(bunch, "target_names", sorted(set(y.tolist())))]
    else:
        y = np.asarray(bunch.target, dtype=np.float32).reshape(len(x), -1)
        names = []
    features = [str(f) for f in getattr(bunch, "feature_names", [])]
    return RawData(x, y, task, (x.shape[1],), names, features)


@DATASETS.register("digits", "scikit-learn's 8x8 handwritten digits: 1,797 images, 10 classes")
def digits() -> RawData:
    data = _from_sklearn("load_digits", "classification")
    data.sample_shape, data.image = (1, 8, 8), True
    return data


@DATASETS.register("iris", "Iris flowers: 150 samples, 4 features, 3 classes")
def iris() -> RawData:
    return _from_sklearn("load_iris", "classification")


@DATASETS.register("wine", "Wine cultivars: 178 samples, 13 features, 3 classes")
def wine() -> RawData:
    return _from_sklearn("load_wine", "classification")


@DATASETS.register("breast_cancer", "Breast cancer diagnosis: 569 samples, 30 features, 2 classes")
def breast_cancer() -> RawData:
    return _from_sklearn("load_breast_cancer", "classification")


@DATASETS.register("diabetes", "Diabetes progression: 442 samples, 10 features, regression")
def diabetes() -> RawData:
    return _from_sklearn("load_diabetes", "regression")


@DATASETS.register("csv", "Your CSV file: data.path=FILE data.target=COLUMN")
def csv(path: str | None = None, target: str | None = None,
        task: Annotated[str, Choice("auto", "classification", "regression")] = "auto",
        delimiter: str = ",") -> RawData:
    if not path:
        raise DataError("data=csv needs the file: set data.path=FILE (and data.target=COLUMN).")
    if not target:
        raise DataError(f"data=csv needs the target column: set data.target=COLUMN for {path}.")
    frame = _read_csv(Path(path), delimiter)
    if target not in frame.columns:
        columns = [str(c) for c in frame.columns]
        raise DataError(
            f"column '{target}' (data.target) is not in {path}.{did_you_mean(target, columns)} "
            f"Its columns: {', '.join(columns)}."
            + (" The file has one column: is data.delimiter right?" if len(columns) == 1 else "")
        )
    features = frame.drop(columns=[target])
    if features.shape[1] == 0:
        raise DataError(f"{path} has no feature columns besides the target '{target}'.")
    _check_numeric(features, path)
    x = features.to_numpy(dtype=np.float32)
    finite = np.isfinite(x)
    if not finite.all():
        bad = [str(c) for j, c in enumerate(features.columns) if not finite[:, j].all()]
        raise DataError(f"{path}: columns {', '.join(bad)} hold empty, NaN, infinite or too large values "
                        "(beyond float32); fill or drop those rows.")
    column = frame[target]
    if column.isna().any():
        raise DataError(f"{path}: the target column '{target}' has empty values; fill or drop those rows.")
    task = _infer_task(column) if task == "auto" else task
    if task == "classification":
        labels = sorted(column.unique().tolist(), key=lambda v: (str(type(v)), v))
        index = {label: i for i, label in enumerate(labels)}
        y = column.map(index).to_numpy(dtype=np.int64)
        if len(labels) < 2:
            raise DataError(f"{path}: the target '{target}' has a single class ({labels[0]!r}); classification needs two or more.")
        names = [str(label) for label in labels]
    else:
        try:
            y = column.to_numpy(dtype=np.float32).reshape(-1, 1)
        except ValueError:
            raise DataError(f"{path}: data.task=regression needs a numeric target, but '{target}' is not numeric.") from None
        names = []
    return RawData(x, y, task, (x.shape[1],), names, [str(c) for c in features.columns])


def _read_csv(path: Path, delimiter: str):
    import pandas as pd

    if not path.is_file():
        raise DataError(f"data.path: no file at '{path}' (from {Path.cwd()}). Give an existing CSV: data.path=FILE.")
    try:
        frame = pd.read_csv(path, sep=delimiter)
    except pd.errors.EmptyDataError:
        raise DataError(f"data.path: '{path}' is empty; it needs a header row and data rows.") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as error:
        raise DataError(f"data.path: cannot read '{path}' as CSV: {str(error).splitlines()[0]}") from None
    if frame.empty:
        raise DataError(f"data.path: '{path}' has a header but no data rows.")
    return frame


def _check_numeric(features, path) -> None:
    import pandas as pd

    bad = [str(c) for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    if bad:
        raise DataError(
            f"{path}: feature columns {', '.join(repr(b) for b in bad)} are not numeric. "
            "dlrun trains on numeric features: encode these columns as numbers or drop them."
        )


def _infer_task(column) -> str:
    import pandas as pd

    if not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        return "classification"
    values = column.to_numpy(dtype=np.float64)
    integral = np.all(np.equal(np.mod(values, 1), 0))
    return "classification" if integral and len(np.unique(values)) <= 20 else "regression"
