"""Batches by indexing whole slices of in-memory tensors.

No per-sample __getitem__ and no collation: one index operation per batch, the
cheapest path torch offers for data that fits in memory.
"""

from __future__ import annotations

import math

import torch


class BatchLoader:
    """An iterable of (x, y) batches over in-memory tensors.

    With shuffle, each pass draws a new permutation from a generator seeded by
    (seed, pass number), so the data order is repeatable run to run. `augment`
    (training only) maps a batch of inputs and that generator to new inputs, so
    augmentation is repeatable too.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool, seed: int = 0,
                 augment=None):
        self.x, self.y = x, y
        self.augment = augment
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def __iter__(self):
        n = len(self.x)
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(n, generator=generator)
            self.epoch += 1
            for start in range(0, n, self.batch_size):
                rows = order[start : start + self.batch_size]
                inputs = self.x[rows]
                if self.augment is not None:
                    inputs = self.augment(inputs, generator)
                yield inputs, self.y[rows]
        else:
            for start in range(0, n, self.batch_size):
                yield self.x[start : start + self.batch_size], self.y[start : start + self.batch_size]
