"""`csv`: the user's CSV file, one row per sample, one column the target.

A file that fits in memory is read whole with pandas; one that does not (data.in_memory=false, or
auto beyond lazy.IN_MEMORY_LIMIT_BYTES of float32 features, estimated from the file's first rows)
is converted once, chunk by chunk, into memory-mapped .npy files (dlrun.data.csv_cache).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from dlrun.data.csv_checks import (check_column, check_features, check_numeric, csv_delimiter, encode_target,
                                   float32_features, non_finite_error, read_csv_file)
from dlrun.data.lazy import InMemory, stream_it
from dlrun.data.raw import DATASETS, RawData
from dlrun.errors import DataError
from dlrun.registry import Choice

__all__ = ["csv", "check_column", "read_csv_file"]  # timeseries reads its CSV with the same checks

Task = Annotated[str, Choice("auto", "classification", "regression")]
SAMPLED_LINES = 1000  # lines read to estimate the features' float32 size for in_memory=auto


@DATASETS.register("csv", "Your CSV file: data.path=FILE data.target=COLUMN")
def csv(path: str | None = None, target: str | None = None, task: Task = "auto", delimiter: str = ",",
        in_memory: InMemory = "auto") -> RawData:
    """Every column but `target` is a numeric feature; the task is inferred from the target unless given.

    in_memory: true reads the whole file into memory; false converts it once into a memory-mapped
    cache (reused while the file and target, task and delimiter stay the same); auto streams when
    the features would take more than lazy.IN_MEMORY_LIMIT_BYTES as float32.
    """
    if not path:
        raise DataError("data=csv needs the file: set data.path=FILE (and data.target=COLUMN).")
    if not target:
        raise DataError(f"data=csv needs the target column: set data.target=COLUMN for {path}.")
    file, delimiter = Path(path), csv_delimiter(delimiter)  # one character before the cache key or pandas sees it
    if in_memory is not True and file.is_file() and stream_it(in_memory, estimated_float32_bytes(file, delimiter)):
        from dlrun.data.csv_cache import cached_csv

        return cached_csv(file, path, target, task, delimiter)
    frame = read_csv_file(file, delimiter)
    check_column(frame, target, path, "data.target")
    features = check_features(frame, target, path)
    check_numeric(features, path)
    x, finite = float32_features(features)
    if not finite.all():
        raise non_finite_error(path, [str(c) for c, ok in zip(features.columns, finite) if not ok])
    y, task, names = encode_target(frame[target], path, target, task)
    return RawData(x, y, task, (x.shape[1],), names, [str(c) for c in features.columns])


def estimated_float32_bytes(file: Path, delimiter: str) -> int:
    """The features' size as float32, from the file's size and its first SAMPLED_LINES lines (text bytes
    and values per row); quoted fields holding the delimiter or line breaks make it rougher, not wrong."""
    size = file.stat().st_size
    sep = delimiter.encode() or b","
    with file.open("rb") as stream:
        header = stream.readline()
        lines = [line for line in (stream.readline() for _ in range(SAMPLED_LINES)) if line]
    if not lines:
        return 0
    bytes_per_row = sum(len(line) for line in lines) / len(lines)
    features_per_row = max(1, header.count(sep))  # every column but the target
    return int((size - len(header)) / bytes_per_row * features_per_row * 4)
