"""Batches by indexing whole slices of in-memory tensors.

No per-sample __getitem__ and no collation: one index operation per batch, the
cheapest path torch offers for data that fits in memory. The order of the batches
(`BatchLoader.batch_plan`) is shared with the streaming loader (dlrun.data.streaming),
which reads the same rows from disk.
"""

from __future__ import annotations

import math
from typing import Iterator, NamedTuple, Protocol

import torch


class Progress(Protocol):
    """What the training loop tells the training loader (dlrun.training.trainer.TrainerProgress)."""

    def position(self) -> tuple[int, int]:
        """(epoch, batches of it trained so far): where a checkpoint taken now resumes."""

    def epoch(self) -> int:
        """The epoch being trained."""

    def shard(self) -> tuple[int, int]:
        """(rank, world size): under DDP each rank trains its own share of an epoch."""


class BatchJob(NamedTuple):
    """One batch to make: the rows of the split it holds, in order (a slice for data read in order), and the
    seed of its augmentation (None: not augmented)."""

    rows: "torch.Tensor | slice"
    augment_seed: int | None


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
        for job in self.batch_plan():
            inputs = self.x[job.rows]
            if job.augment_seed is not None:
                inputs = self.augment(inputs, torch.Generator().manual_seed(job.augment_seed))
            yield inputs, self.y[job.rows]

    def batch_plan(self) -> Iterator[BatchJob]:
        """The batches of the pass an iterator opened now produces, as row indices and augmentation seeds.

        Calling it starts the pass (it moves the loader to the next epoch), so each __iter__ calls it once;
        the streaming loader (dlrun.data.streaming) hands the same jobs to its workers.
        """
        n = len(self.x)
        if not self.shuffle:
            for start in range(0, n, self.batch_size):
                yield BatchJob(slice(start, min(start + self.batch_size, n)), None)  # a view of in-memory rows
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
            slot = batch * world + rank + 1
            yield BatchJob(rows, self._seed(epoch, slot) if self.augment is not None else None)

    def _seed(self, epoch: int, batch: int = 0) -> int:
        return (self.seed * 1_000_003 + epoch) * 1_000_003 + batch
