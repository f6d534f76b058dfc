"""`timeseries`: one numeric column of a CSV file, cut into windows that forecast what follows.

Each sample is `window` consecutive values; its target is the next `horizon`
values (horizon=1: the next value). Samples carry the time steps they cover, so
the split is chronological (train earliest, then val, then test) with no window
straddling a split boundary; see dlrun.data.prepare.split_indices.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np

from dlrun.data.csv_file import check_column, read_csv_file
from dlrun.data.raw import DATASETS, RawData
from dlrun.errors import DataError
from dlrun.registry import Range

Steps = Annotated[int, Range(ge=1)]


@DATASETS.register("timeseries", "Your time series: data.path=FILE data.column=COLUMN, windows forecast the next values")
def timeseries(path: str | None = None, column: str | None = None, window: Steps = 24, horizon: Steps = 1,
               delimiter: str = ",") -> RawData:
    """Windows of `window` values of one column, each predicting the `horizon` values after it.

    The file's rows are its time steps, in order. A regression task with
    `horizon` targets; the model sees each window as (window,).
    """
    if not path:
        raise DataError("data=timeseries needs the file: set data.path=FILE (and data.column=COLUMN).")
    frame = read_csv_file(Path(path), delimiter)
    if column is None:
        if frame.shape[1] != 1:
            raise DataError(f"data=timeseries needs the column to forecast: set data.column=COLUMN for {path} "
                            f"(its columns: {', '.join(str(c) for c in frame.columns)}).")
        column = str(frame.columns[0])
    check_column(frame, column, path, "data.column")
    series = _numeric_series(frame[column], column, path)
    if len(series) < window + horizon:
        raise DataError(
            f"{path}: column '{column}' has {len(series)} rows, but data.window={window} + data.horizon={horizon} needs "
            f"at least {window + horizon} for one sample (and more for train, val and test). "
            "Use a longer series or a smaller data.window."
        )
    return windows(series, window, horizon, name=column)


def windows(series: np.ndarray, window: int, horizon: int, name: str = "value") -> RawData:
    """RawData of every run of `window` values (features) and the `horizon` values after it (targets).

    Args:
        series: one value per time step, in time order.
        window: steps the model sees per sample.
        horizon: steps after the window it predicts.
        name: the series' name, for feature names.
    """
    span = window + horizon
    runs = np.lib.stride_tricks.sliding_window_view(np.asarray(series, dtype=np.float32), span)
    starts = np.arange(len(runs))
    return RawData(
        x=np.ascontiguousarray(runs[:, :window]),
        y=np.ascontiguousarray(runs[:, window:]),
        task="regression",
        sample_shape=(window,),
        feature_names=[f"{name}[t-{lag}]" for lag in range(window - 1, -1, -1)],
        shared_scale=True,  # every feature is the same quantity, lagged
        time_span=np.stack([starts, starts + span - 1], axis=1),
    )


def _numeric_series(values, column: str, path: str) -> np.ndarray:
    import pandas as pd

    numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna() & values.notna()
    if bad.any():
        row = int(np.argmax(bad.to_numpy()))
        raise DataError(f"{path}: column '{column}' (data.column) is not numeric: data row {row + 1} holds "
                        f"{values.iloc[row]!r}. Pick a numeric column or fix that value.")
    series = numbers.to_numpy(dtype=np.float64)
    finite = np.isfinite(series) & (np.abs(series) < np.finfo(np.float32).max)
    if not finite.all():
        row = int(np.argmin(finite))
        raise DataError(f"{path}: column '{column}' has an empty, NaN, infinite or too large value at data row {row + 1}; "
                        "fill or drop those rows (a series needs a value at every step).")
    return series.astype(np.float32)
