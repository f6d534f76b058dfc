"""`csv`: the user's CSV file, one row per sample, one column the target."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np

from dlrun.data.raw import DATASETS, RawData
from dlrun.errors import DataError, did_you_mean
from dlrun.registry import Choice

Task = Annotated[str, Choice("auto", "classification", "regression")]


@DATASETS.register("csv", "Your CSV file: data.path=FILE data.target=COLUMN")
def csv(path: str | None = None, target: str | None = None, task: Task = "auto", delimiter: str = ",") -> RawData:
    """Every column but `target` is a numeric feature; the task is inferred from the target unless given."""
    if not path:
        raise DataError("data=csv needs the file: set data.path=FILE (and data.target=COLUMN).")
    if not target:
        raise DataError(f"data=csv needs the target column: set data.target=COLUMN for {path}.")
    frame = read_csv_file(Path(path), delimiter)
    check_column(frame, target, path, "data.target")
    features = frame.drop(columns=[target])
    if features.shape[1] == 0:
        raise DataError(f"{path} has no feature columns besides the target '{target}'.")
    _check_numeric(features, path)
    with np.errstate(over="ignore", invalid="ignore"):  # values beyond float32 become inf, reported below
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
            with np.errstate(over="ignore", invalid="ignore"):
                y = column.to_numpy(dtype=np.float32).reshape(-1, 1)
        except ValueError:
            raise DataError(f"{path}: data.task=regression needs a numeric target, but '{target}' is not numeric.") from None
        if not np.isfinite(y).all():  # an infinite target makes the loss NaN at the first step
            raise DataError(f"{path}: the target column '{target}' holds infinite or too large values (beyond "
                            "float32); fix or drop those rows.")
        names = []
    return RawData(x, y, task, (x.shape[1],), names, [str(c) for c in features.columns])


def read_csv_file(path: Path, delimiter: str):
    """The file as a pandas DataFrame with at least one data row, or a DataError naming it."""
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


def check_column(frame, column: str, path: str, key: str) -> None:
    """A DataError with did-you-mean unless `column` (the value of config key `key`) is in the file."""
    if column not in frame.columns:
        columns = [str(c) for c in frame.columns]
        raise DataError(
            f"column '{column}' ({key}) is not in {path}.{did_you_mean(column, columns)} "
            f"Its columns: {', '.join(columns)}."
            + (" The file has one column: is data.delimiter right?" if len(columns) == 1 else "")
        )


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
