"""Raw features that stay where they are (files on disk) and are read a batch of rows at a time.

A source returns `RawData.x` either as an in-memory float32 array or as a `LazyFeatures`:
memory-mapped arrays (.npy, uncompressed .npz, a CSV's converted cache) or files decoded
on demand (image_folder). Which one is the source's choice, from `data.in_memory`
(`auto | true | false`) and the size the features would take as float32 (`stream_it`).

Nothing here imports torch: config validation imports the sources.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Protocol, Union, runtime_checkable

import numpy as np

from dlrun.registry import Choice

# `auto` keeps data in memory up to this many bytes of float32 features, and streams it beyond.
IN_MEMORY_LIMIT_BYTES = 1 << 30  # 1 GiB
# Rows read per step when a whole data set is materialized or scanned (scaling, fingerprint): at most
# CHUNK_ROWS, and no more than CHUNK_BYTES of float64 (a chunk of 224x224 images would be GBs).
CHUNK_ROWS = 4096
CHUNK_BYTES = 64 << 20  # 64 MiB

InMemory = Annotated[Union[bool, str], Choice("auto", True, False)]


@runtime_checkable
class LazyFeatures(Protocol):
    """Raw features of shape (N, F) whose rows are read on demand.

    Implementations must be picklable cheaply (DataLoader workers receive them):
    hold paths and small metadata, open files lazily.
    """

    shape: tuple[int, int]

    def __len__(self) -> int: ...

    def rows(self, indices: np.ndarray) -> np.ndarray:
        """float32 (len(indices), F), in the order given; a DataError naming the file for a bad one."""

    def fingerprint_into(self, digest: "hashlib._Hash") -> None:
        """Feed what identifies the features (their bytes, or the files' contents) into a sha256."""

    def describe(self) -> str:
        """Where the features come from, for messages and MLflow's dataset source (a path)."""


class MemmapFeatures:
    """Features in a memory-mapped array (np.load(mmap_mode='r') or np.memmap) of any sample shape.

    Args:
        path: the .npy file (or the .npz archive's path, for messages).
        array: the memory-mapped array, shape (N, ...): rows are flattened to (N, F) when read.
        offset_path: where to reopen the map in a worker (defaults to path): a pickled memmap
            would copy its data, so the map is reopened from (offset_path, offset, dtype, shape).
    """

    def __init__(self, path: str, array: np.ndarray, offset: int | None = None, offset_path: str | None = None):
        self.path = path
        self._source = (offset_path or path, offset, array.dtype.str, tuple(array.shape))
        self._array = array
        self.shape = (int(array.shape[0]), int(np.prod(array.shape[1:], dtype=np.int64)))

    def __len__(self) -> int:
        return self.shape[0]

    def __getstate__(self):
        return {"path": self.path, "_source": self._source, "shape": self.shape}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._array = None

    def _mapped(self) -> np.ndarray:
        if self._array is None:
            file, offset, dtype, shape = self._source
            if offset is None:
                self._array = np.load(file, mmap_mode="r", allow_pickle=False)
            else:
                self._array = np.memmap(file, dtype=np.dtype(dtype), mode="r", offset=offset, shape=shape)
        return self._array

    def rows(self, indices: np.ndarray) -> np.ndarray:
        picked = self._mapped()[np.asarray(indices)]
        return np.asarray(picked, dtype=np.float32).reshape(len(picked), self.shape[1])

    def fingerprint_into(self, digest) -> None:
        step = chunk_rows(self)
        for start in range(0, len(self), step):
            digest.update(np.ascontiguousarray(self.rows(np.arange(start, min(start + step, len(self))))).tobytes())

    def describe(self) -> str:
        return self.path


def stream_it(in_memory: bool | str, float32_bytes: int) -> bool:
    """Whether a source should hand out LazyFeatures: in_memory=false always, true never, and auto
    when the features would take more than IN_MEMORY_LIMIT_BYTES as float32."""
    if in_memory == "auto":
        return float32_bytes > IN_MEMORY_LIMIT_BYTES
    return not in_memory


def chunk_rows(features: LazyFeatures) -> int:
    """Rows per chunk of a pass over `features`: CHUNK_ROWS, fewer for wide rows (CHUNK_BYTES as float64)."""
    return max(1, min(CHUNK_ROWS, CHUNK_BYTES // (8 * max(1, features.shape[1]))))


def materialize(features: LazyFeatures) -> np.ndarray:
    """All rows in memory, read in chunks (float32, (N, F))."""
    out = np.empty(features.shape, dtype=np.float32)
    step = chunk_rows(features)
    for start in range(0, len(features), step):
        stop = min(start + step, len(features))
        out[start:stop] = features.rows(np.arange(start, stop))
    return out
