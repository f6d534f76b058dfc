"""What every data source returns (RawData) and the registry sources register in.

A source returns the data as the user has it (raw features, float32, one row per
sample); preparation (split, scaling) happens in dlrun.data.prepare so that the
served model can embed it. The sources live in their own modules (bundled,
csv_file, npz_file, image_folder, timeseries, synthetic); dlrun.data.sources
imports them all, so importing it fills DATASETS.

Nothing here imports torch, pandas or PIL: config validation imports DATASETS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from dlrun.registry import Registry

DATASETS = Registry("data set")

# Keys under `data` that every source shares; the rest go to the source's builder.
# num_workers: the processes that read streamed data (dlrun.data.streaming); optional.
COMMON_KEYS = ("name", "batch_size", "val_fraction", "test_fraction", "num_workers")


@dataclass
class RawData:
    """Features and targets as loaded, before any split or scaling."""

    x: np.ndarray  # (N, features) float32
    y: np.ndarray  # (N,) int64 class indices, or (N, targets) float32 values
    task: str  # "classification" or "regression"
    sample_shape: tuple[int, ...]  # what the model sees per sample, e.g. (1, 8, 8)
    class_names: list[str] = field(default_factory=list)
    feature_names: list[str] = field(default_factory=list)
    image: bool = False  # samples are (channels, height, width) pixels: one shared scale
    shared_scale: bool = False  # every feature is the same quantity (e.g. lagged values): one mean and scale
    # (N, 2): the first and last time step each sample reads or predicts. When set, the
    # split is chronological (train, then val, then test) instead of shuffled.
    time_span: np.ndarray | None = None
    # Text data: the texts and how to tokenize them; x is then (N, 0), the ids come after the split.
    text: "TextColumn | None" = None


@dataclass
class TextColumn:
    """A CSV's text column and the tokenizer options to fit on its training rows (data=text)."""

    texts: list[str]  # one per row, in the file's order
    column: str  # its name in the file
    tokens: str  # "word" or "char"
    vocab_size: int | None  # distinct training tokens kept; None keeps all
    lowercase: bool
    max_length: int  # token ids per text
    source: str = ""  # where the rows came from (data.path) and the target column, for messages
    target: str = ""


def encode_labels(values: Iterable[Any]) -> tuple[np.ndarray, list[str]]:
    """Class indices 0..K-1 for arbitrary labels, and the labels' names in index order.

    Labels are sorted (numbers numerically, strings alphabetically), so the same
    labels always get the same indices.
    """
    values = list(values)
    labels = sorted(set(values), key=lambda v: (str(type(v)), v))
    index = {label: i for i, label in enumerate(labels)}
    return np.fromiter((index[v] for v in values), dtype=np.int64, count=len(values)), [str(v) for v in labels]
