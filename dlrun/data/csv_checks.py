"""What both ways of reading a CSV share (the whole file in memory, or chunk by chunk into a cache):
how a file that cannot be read is reported, the checks on its columns and values, and the target's
encoding, so that both give the same messages, tasks and class indices.

pandas is imported inside: config validation imports the sources.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dlrun.errors import DataError, did_you_mean


TAB_NAMES = ("\\t", "tab")  # how a tab can be typed: the override parser strips a literal tab ($'\t') to ''


def csv_delimiter(value) -> str:
    """The one character that separates a CSV's fields, from data.delimiter: `\\t` (backslash, t) or
    `tab` is a tab; anything else must be one character.

    Raises:
        DataError: an empty value (a tab typed as $'\\t' arrives so) or more than one character.
    """
    text = str(value)
    if text.lower() in TAB_NAMES:
        return "\t"
    if len(text) == 1:
        return text
    given = "empty" if not text else f"{text!r}, {len(text)} characters"
    raise DataError(f"data.delimiter is {given}; it must be one character (data.delimiter=';'). For a tab, write "
                    "data.delimiter=tab or data.delimiter='\\t' (a tab typed as $'\\t' is stripped to nothing by "
                    "the command line's parser).")


def read_csv_file(path: Path, delimiter: str):
    """The file as a pandas DataFrame with at least one data row, or a DataError naming it."""
    import pandas as pd

    check_is_file(path)
    try:
        frame = pd.read_csv(path, sep=csv_delimiter(delimiter))
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise read_error(path, error) from None
    if frame.empty:
        raise no_rows_error(path)
    return frame


def check_is_file(path: Path) -> None:
    if not path.is_file():
        raise DataError(f"data.path: no file at '{path}' (from {Path.cwd()}). Give an existing CSV: data.path=FILE.")


def read_error(path: Path, error: Exception) -> DataError:
    """The DataError for an exception pandas raised while reading the file (the whole of it or a chunk)."""
    import pandas as pd

    if isinstance(error, pd.errors.EmptyDataError):
        return DataError(f"data.path: '{path}' is empty; it needs a header row and data rows.")
    return DataError(f"data.path: cannot read '{path}' as CSV: {str(error).splitlines()[0]}")


def no_rows_error(path: Path) -> DataError:
    return DataError(f"data.path: '{path}' has a header but no data rows.")


def check_column(frame, column: str, path: str, key: str) -> None:
    """A DataError with did-you-mean unless `column` (the value of config key `key`) is in the file."""
    if column not in frame.columns:
        columns = [str(c) for c in frame.columns]
        raise DataError(
            f"column '{column}' ({key}) is not in {path}.{did_you_mean(column, columns)} "
            f"Its columns: {', '.join(columns)}."
            + (" The file has one column: is data.delimiter right?" if len(columns) == 1 else "")
        )


def check_features(frame, target: str, path: str):
    """The feature columns (every column but the target), or a DataError when there are none."""
    features = frame.drop(columns=[target])
    if features.shape[1] == 0:
        raise DataError(f"{path} has no feature columns besides the target '{target}'.")
    return features


def check_numeric(features, path) -> None:
    """A DataError naming the feature columns that pandas did not read as numbers."""
    import pandas as pd

    bad = [str(c) for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    if bad:
        raise DataError(
            f"{path}: feature columns {', '.join(repr(b) for b in bad)} are not numeric. "
            "dlrun trains on numeric features: encode these columns as numbers or drop them."
        )


def float32_features(features) -> tuple[np.ndarray, np.ndarray]:
    """The features as float32 (values beyond float32 become inf) and, per column, whether all are finite."""
    with np.errstate(over="ignore", invalid="ignore"):
        x = features.to_numpy(dtype=np.float32)
    return x, np.isfinite(x).all(axis=0)


def non_finite_error(path, columns: list[str]) -> DataError:
    return DataError(f"{path}: columns {', '.join(columns)} hold empty, NaN, infinite or too large values "
                     "(beyond float32); fill or drop those rows.")


def encode_target(column, path, target: str, task: str) -> tuple[np.ndarray, str, list[str]]:
    """The targets as the model gets them, the task (task=auto inferred) and the class names.

    Classification: int64 indices of the sorted labels (numbers numerically, strings alphabetically);
    regression: float32 values, shape (N, 1).
    """
    if column.isna().any():
        raise DataError(f"{path}: the target column '{target}' has empty values; fill or drop those rows.")
    task = infer_task(column) if task == "auto" else task
    if task == "classification":
        labels = sorted(column.unique().tolist(), key=lambda v: (str(type(v)), v))
        index = {label: i for i, label in enumerate(labels)}
        y = column.map(index).to_numpy(dtype=np.int64)
        if len(labels) < 2:
            raise DataError(f"{path}: the target '{target}' has a single class ({labels[0]!r}); classification needs two or more.")
        return y, task, [str(label) for label in labels]
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            y = column.to_numpy(dtype=np.float32).reshape(-1, 1)
    except ValueError:
        raise DataError(f"{path}: data.task=regression needs a numeric target, but '{target}' is not numeric.") from None
    if not np.isfinite(y).all():  # an infinite target makes the loss NaN at the first step
        raise DataError(f"{path}: the target column '{target}' holds infinite or too large values (beyond "
                        "float32); fix or drop those rows.")
    return y, task, []


def infer_task(column) -> str:
    """classification for non-numeric or boolean targets and for up to 20 distinct integers; else regression."""
    import pandas as pd

    if not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        return "classification"
    values = column.to_numpy(dtype=np.float64)
    integral = np.all(np.equal(np.mod(values, 1), 0))
    return "classification" if integral and len(np.unique(values)) <= 20 else "regression"
