"""The scaling of streamed features, fitted on the training rows by one chunked pass (float64).

Each chunk's count, sum and sum of squared deviations from its own mean are merged in chunk
order (Chan, Golub and LeVeque's pairwise update), which keeps the variance as accurate as the
two-pass formula that NumPy's std uses on data held in memory: the two agree to about 1e-15
relative. Chunks are read by DataLoader workers (data.num_workers) and merged in order, so the
result does not depend on how many there are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from dlrun.data.lazy import chunk_rows
from dlrun.errors import DataError

if TYPE_CHECKING:
    from dlrun.data.lazy import LazyFeatures


def fit_scaling(features: "LazyFeatures", rows: np.ndarray, shared: bool, num_workers: int = 0):
    """(mean, std) of the features over `rows`, float64 arrays of length F: per feature, or one value
    repeated when `shared` (pixels, lagged values of one series), as dlrun.data.prepare fits data in memory.
    """
    from dlrun.data.streaming import raise_if_unreadable, read_by_workers, worker_loader

    step = chunk_rows(features)
    chunks = [rows[start : start + step] for start in range(0, len(rows), step)]
    count, total, squares = 0, 0.0, 0.0
    loader = worker_loader(_ChunkMoments(features, shared), chunks, num_workers)
    for item in read_by_workers(loader, features.describe()):
        n, chunk_sum, chunk_squares = raise_if_unreadable(item)
        if count:  # merge with what came before: the gap between the two means adds to the squares
            delta = chunk_sum / n - total / count
            squares = squares + chunk_squares + delta * delta * (count * n / (count + n))
        else:
            squares = chunk_squares
        count, total = count + n, total + chunk_sum
    mean, std = total / count, np.sqrt(squares / count)
    width = features.shape[1]
    if shared:
        return np.full(width, float(mean)), np.full(width, float(std))
    return np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)


class _ChunkMoments:
    """dataset[rows] -> (count, sum, sum of squared deviations from the chunk's mean) of those rows, float64."""

    def __init__(self, features: "LazyFeatures", shared: bool):
        self.features, self.shared = features, shared

    def __getitem__(self, rows: np.ndarray):
        from dlrun.data.streaming import Unreadable

        try:
            chunk = self.features.rows(rows).astype(np.float64)
        except DataError as error:
            return Unreadable(str(error))
        axis = None if self.shared else 0
        n = chunk.size if self.shared else len(chunk)
        chunk_sum = chunk.sum(axis=axis)
        deviations = chunk - chunk_sum / n
        return n, chunk_sum, np.square(deviations).sum(axis=axis)
