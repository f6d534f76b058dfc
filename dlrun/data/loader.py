"""Batches by indexing whole slices of in-memory tensors.

No per-sample __getitem__ and no collation: one index operation per batch, the
cheapest path torch offers for data that fits in memory.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch


class Progress(Protocol):
    """What the training loop tells the training loader (dlrun.training.trainer.TrainerProgress)."""

    def position(self) -> tuple[int, int]:
        """(epoch, batches of it trained so far): where a checkpoint taken now resumes."""

    def epoch(self) -> int:
        """The epoch being trained."""

    def shard(self) -> tuple[int, int]:
        """(rank, world size): under DDP each rank trains its own share of an epoch."""


class BatchLoader:
    """An iterable of (x, y) batches over in-memory tensors.

    With shuffle, pass number e draws its permutation from a generator seeded by
    (seed, e), and batch b of that pass augments with a generator seeded by
    (seed, e, b). Every batch is thus a pure function of (seed, e, b): the data
    order is repeatable run to run, and a run resumed mid-epoch sees exactly the
    batches the uninterrupted run would have.

    `state_dict` / `load_state_dict` make the loader resumable for Lightning: the
    state is the position (epoch, batches already trained), which `progress.position()`
    reports; the loader's own counters run ahead of training because Lightning
    prefetches a batch. For the same reason the pass number comes from
    `progress.epoch()` (the trainer's epoch) where there is a progress: after a
    resume, Lightning may open an iterator for the tail of a finished epoch.

    Args:
        progress: for the training loader, what the training loop says of itself (see
            `Progress`); None for held-out data and for a loader used on its own.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool, seed: int = 0,
                 augment=None, progress: "Progress | None" = None):
        self.x, self.y = x, y
        self.augment = augment
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.progress = progress
        self.epoch = 0  # the pass the next __iter__ produces, without a progress
        self.resume_at = (-1, 0)  # (epoch, batches to skip in it): a resumed, half-done epoch

    def _rank_and_world(self) -> tuple[int, int]:
        return self.progress.shard() if self.progress and self.shuffle else (0, 1)

    def __len__(self) -> int:
        rank, world = self._rank_and_world()
        return math.ceil(len(self.x) // world / self.batch_size) if world > 1 else math.ceil(len(self.x) / self.batch_size)

    def state_dict(self) -> dict:
        epoch, done = self.progress.position() if self.progress else (self.epoch, 0)
        if done >= len(self):  # a finished epoch resumes at the start of the next
            epoch, done = epoch + 1, 0
        return {"epoch": int(epoch), "batch": int(done)}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state["epoch"])
        self.resume_at = (self.epoch, int(state["batch"]))

    def __iter__(self):
        n = len(self.x)
        if not self.shuffle:
            for start in range(0, n, self.batch_size):
                yield self.x[start : start + self.batch_size], self.y[start : start + self.batch_size]
            return
        epoch = self.progress.epoch() if self.progress else self.epoch
        first = self.resume_at[1] if epoch == self.resume_at[0] else 0
        self.epoch, self.resume_at = epoch + 1, (-1, 0)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self._seed(epoch)))
        rank, world = self._rank_and_world()
        if world > 1:  # DDP: each rank its own equal share of the epoch's order (a lockstep needs equal lengths)
            order = order[rank : n - n % world : world]
        for batch in range(first, len(self)):
            rows = order[batch * self.batch_size : (batch + 1) * self.batch_size]
            inputs = self.x[rows]
            if self.augment is not None:
                slot = batch * world + rank + 1
                inputs = self.augment(inputs, torch.Generator().manual_seed(self._seed(epoch, slot)))
            yield inputs, self.y[rows]

    def _seed(self, epoch: int, batch: int = 0) -> int:
        return (self.seed * 1_000_003 + epoch) * 1_000_003 + batch
