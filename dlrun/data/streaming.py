"""Splits read from disk a batch at a time, and the loader that reads them in worker processes.

A `LazySplit` is what a DataBundle holds for a split of streamed features (dlrun.data.lazy): its
rows of the source and the preprocessing, applied per batch. `StreamingLoader` makes the same
batches as BatchLoader, in the same order: it takes BatchLoader's batch plan (rows and
augmentation seed of each batch, drawn in the main process) and hands each job to a torch
DataLoader (batch_size=None) whose workers only read the rows, preprocess and augment them. So
every batch is still a pure function of (seed, epoch, batch index), whatever the number of
workers, and a resumed run reads exactly the batches the uninterrupted one would have.

A file that cannot be read in a worker comes back as a value, not as the worker's exception (which
torch would re-raise with the worker's traceback in its message), and is raised here as the
source's DataError. A worker that dies (killed for memory, a SIGBUS on a memory-mapped file that
shrank, a decoder that crashed) is torch's RuntimeError, turned into a WorkerDied naming the source.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import re
import signal
import sys
from typing import TYPE_CHECKING, Union

import numpy as np
import torch

from dlrun.data.loader import BatchJob, BatchLoader
from dlrun.errors import DataError, WorkerDied

if TYPE_CHECKING:
    from dlrun.data.lazy import LazyFeatures

# data.num_workers=auto: one worker per core but one (the training process's), at most this many.
MAX_AUTO_WORKERS = 8
NumWorkers = Union[int, str]  # a count >= 0, or "auto" (checked in dlrun.config.validate)


def resolve_num_workers(value: NumWorkers | None, ranks_here: int = 1) -> int:
    """The worker processes to read streamed data with: `auto` (or a config without the key) gives one per
    core the process may use (its share, when `ranks_here` DDP ranks train on this machine), less one for
    training itself, at most MAX_AUTO_WORKERS, on Linux (elsewhere workers would be spawned, and an
    augmentation need not pickle: 0); 0 reads in the training process. A daemonic process cannot start
    processes: 0 there."""
    if multiprocessing.current_process().daemon:
        return 0
    if value is None or value == "auto":
        if not sys.platform.startswith("linux"):
            return 0
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(0, min(MAX_AUTO_WORKERS, cores // max(1, ranks_here) - 1))
    return int(value)


class LazySplit:
    """The model inputs of one split, read on demand: `split[positions]` reads those rows of the split from
    the source and preprocesses them (a float32 tensor of shape (len(positions), *sample_shape)).

    Args:
        features: the source's LazyFeatures (raw rows, float32).
        rows: the split's rows of the source, in the split's order.
        preprocess: the bundle's preprocessing (raw (N, F) -> model input), fitted on the training split.
        sample_shape: the model's view of one sample.
    """

    def __init__(self, features: "LazyFeatures", rows: np.ndarray, preprocess: torch.nn.Module,
                 sample_shape: tuple[int, ...]):
        self.features, self.rows, self.preprocess = features, np.asarray(rows, dtype=np.int64), preprocess
        self.shape = (len(self.rows), *sample_shape)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, positions) -> torch.Tensor:
        if isinstance(positions, torch.Tensor):
            positions = positions.numpy()
        picked = np.atleast_1d(self.rows[positions])
        with torch.no_grad():
            return self.preprocess(torch.from_numpy(self.features.rows(picked))).contiguous()


def worker_loader(dataset, jobs, num_workers: int, pin_memory: bool = False, persistent: bool = False):
    """A torch DataLoader that turns each of `jobs` (any iterable of keys) into `dataset[job]`, in order.

    Its workers are forked on Linux (the dataset holds functions, such as an augmentation, that need not
    pickle), and its own generator draws the workers' base seed, which torch would otherwise take from the
    global generator that dropout draws from: reading with workers must not change training.
    """
    from torch.utils.data import DataLoader

    fork = num_workers > 0 and sys.platform.startswith("linux")
    return DataLoader(dataset, batch_size=None, sampler=jobs, num_workers=num_workers, pin_memory=pin_memory,
                      persistent_workers=persistent and num_workers > 0, generator=torch.Generator().manual_seed(0),
                      multiprocessing_context="fork" if fork else None, collate_fn=_as_made,
                      worker_init_fn=_start_worker)


def _start_worker(_worker_id: int) -> None:
    """What a worker does first: leave Ctrl-C to training, and keep its heap from growing over a pass."""
    _leave_signals_to_training()
    _map_large_buffers()


def _leave_signals_to_training() -> None:
    """Ctrl-C in a terminal reaches every process of the group: a worker that died of it would fail the next
    batch, where training stops at a batch boundary with a checkpoint. The training process answers it and
    ends its workers (which also end when it is gone). SIGTERM keeps its default: it is how workers are
    ended at exit, and training stops on a SIGTERM to the group whatever its workers do (StopOnSignal)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):  # forked with Ctrl-C held back (_ctrl_c_held): ignored from now on
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _forks(loader) -> bool:
    """Whether iter(loader) forks workers: every pass without persistent workers, their first pass with."""
    return loader.num_workers > 0 and not (loader.persistent_workers and getattr(loader, "_iterator", None))


@contextlib.contextmanager
def _ctrl_c_held(forking: bool):
    """Ctrl-C held back in this thread while it forks workers: a worker is born with it blocked, and a
    Ctrl-C that comes before it ignores Ctrl-C (_start_worker) is dropped rather than the death of the
    worker. Held only where workers are forked: reopening persistent workers waits for them, and a Ctrl-C
    must still stop a wait on a worker that hangs. (Another of this process's threads may take the Ctrl-C
    meanwhile; Python answers it in this thread either way.)"""
    if not forking or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


# glibc's mallopt parameter, and the size from which a worker's buffers get pages of their own
_M_MMAP_THRESHOLD = -3
LARGE_BUFFER_BYTES = 1 << 20


TRIM_EVERY = 8  # batches between two returns of this process's free heap pages to the system


def _trim_heap() -> None:
    """Give the free pages inside this process's heap back (glibc's malloc_trim). The batches it receives
    fragment its heap as they do a worker's; a fixed mmap threshold, as in the workers, would cure that here
    too but would map every large activation of a training step afresh (half the speed, measured)."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _map_large_buffers() -> None:
    """Give every buffer of LARGE_BUFFER_BYTES or more (a batch's pixels, its tensor) pages of its own.

    glibc raises its threshold for that each time such a buffer is freed, after which batch-sized buffers
    come from the heap between the decoder's small ones, and the heap fragments: a worker grew by ~190 MiB
    over a 10,000-image epoch of 64x64 PNGs, where with this fixed threshold it stayed at ~30-50 MiB.
    Elsewhere than glibc this does nothing.
    """
    try:
        ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, LARGE_BUFFER_BYTES)
    except (OSError, AttributeError):
        pass


def _as_made(item):
    """The dataset's item as it made it (torch's default would turn NumPy values into tensors)."""
    return item


class Unreadable:
    """What a worker returns for a batch it could not read: the DataError's message (it names the file)."""

    def __init__(self, message: str):
        self.message = message


def raise_if_unreadable(item):
    """item, or the DataError a worker sent back instead of it."""
    if isinstance(item, Unreadable):
        raise DataError(item.message)
    return item


# torch's words for a DataLoader worker that died: from its SIGCHLD handler ("is killed by signal: Killed",
# "exited unexpectedly with exit code 1") or from the wait for a batch ("(pid(s) N) exited unexpectedly").
_WORKER_DIED = re.compile(r"DataLoader worker \(pid(?:\(s\))? [\d, ]+\) (?:is killed by signal: ([^.]+)"
                          r"|exited unexpectedly(?: with exit code (-?\d+))?)")


def worker_death(error: BaseException, source: str | None, exit_codes=()) -> WorkerDied | None:
    """The WorkerDied for torch's error about a DataLoader worker that died (None for any other error).

    Args:
        error: what was raised: where a batch was awaited, or anywhere in this process (torch raises it
            from its SIGCHLD handler).
        source: what the workers read (LazyFeatures.describe()), where known.
        exit_codes: the workers' exit codes, where known (negative: the signal that ended one).
    """
    found = _WORKER_DIED.search(str(error)) if isinstance(error, RuntimeError) else None
    if found is None:
        return None
    died = [code for code in exit_codes if code]
    how = f"signal: {found[1]}" if found[1] else f"exit code {found[2]}" if found[2] else "it exited"
    if not (found[1] or found[2]) and died:  # the wait for a batch names no cause: the exit code does
        how = f"signal: {signal.strsignal(-died[0]) or -died[0]}" if died[0] < 0 else f"exit code {died[0]}"
    return WorkerDied(f"a process reading {source or 'the streamed data'} died ({how}: often out of memory, "
                      "or the file changed while it was read). Free memory or restore the file, or lower "
                      "data.num_workers or data.batch_size.")


def read_by_workers(loader, source: str):
    """Iterate `loader` (a worker_loader); a worker that dies is a WorkerDied naming `source`.

    The workers are ended as soon as the last batch is in hand: Lightning takes as many batches as len()
    says and never asks past them, so a pass left open would keep its workers (and the pages they hold)
    alive through validation, which runs before the training epoch ends. The heap is trimmed before the
    workers are forked, so that they do not map the free pages this process will write again (each page
    written after the fork is copied, and the worker's old copy counts too)."""
    _trim_heap()
    batches, last = None, len(loader)
    try:
        with _ctrl_c_held(_forks(loader)):  # a worker may die before the first batch is asked for
            batches = iter(loader)
        for count, item in enumerate(batches, 1):
            if count == last:
                next(batches, None)  # the end of the pass, reached now: torch ends non-persistent workers there
            if count % TRIM_EVERY == 0 or count == last:
                _trim_heap()
            yield item
    except RuntimeError as error:
        # torch's iterator keeps its worker processes in `_workers`; their exit codes say how one died
        codes = [worker.exitcode for worker in getattr(batches, "_workers", ()) if worker.exitcode is not None]
        died = worker_death(error, source, codes)
        if died is None:
            raise
        raise died from None


class _BatchMaker:
    """dataset[job] -> (inputs, targets): the split's rows, preprocessed, then augmented with the job's seed."""

    def __init__(self, x: LazySplit, y: torch.Tensor, augment):
        self.x, self.y, self.augment = x, y, augment

    def __getitem__(self, job: BatchJob):
        rows = torch.arange(*job.rows.indices(len(self.x))) if isinstance(job.rows, slice) else job.rows
        try:
            inputs = self.x[rows]
        except DataError as error:
            return Unreadable(str(error))
        if job.augment_seed is not None:
            inputs = self.augment(inputs, torch.Generator().manual_seed(job.augment_seed))
        return inputs, self.y[rows]


class _Jobs:
    """The sampler of the loader's DataLoader: the current pass's batch jobs (set before each pass, so that
    persistent workers serve every pass)."""

    def __init__(self):
        self.current: list[BatchJob] = []

    def __iter__(self):
        return iter(self.current)

    def __len__(self) -> int:
        return len(self.current)


class StreamingLoader(BatchLoader):
    """BatchLoader over a LazySplit: the same batches, read by `num_workers` DataLoader workers.

    Args:
        x: the split's LazySplit; y: its targets (in memory); the rest as BatchLoader's.
        num_workers: worker processes (0: read in this process).
        pin_memory: on a GPU: batches in pinned memory (Lightning then copies them without blocking), and
            workers kept from one pass to the next.
    """

    def __init__(self, x: LazySplit, y: torch.Tensor, batch_size: int, shuffle: bool, seed: int = 0,
                 augment=None, progress=None, num_workers: int = 0, pin_memory: bool = False):
        super().__init__(x, y, batch_size, shuffle, seed=seed, augment=augment, progress=progress)
        self._jobs = _Jobs()
        self._loader = worker_loader(_BatchMaker(x, y, augment), self._jobs, num_workers, pin_memory,
                                     persistent=pin_memory)
        self._pass = None  # the pass being read, until it ends or end_pass() ends it

    def __iter__(self):
        self._jobs.current = list(self.batch_plan())
        self._pass = read_by_workers(self._loader, self.source)
        for item in self._pass:
            yield raise_if_unreadable(item)

    def end_pass(self) -> None:
        """End the pass being read, whose batches are no longer wanted (Lightning's sanity check reads the
        first batches of validation only): its workers end now rather than when the next pass starts.
        Persistent workers stay, as they do between passes."""
        if self._pass is not None:
            self._pass.close()
            self._pass = None

    @property
    def source(self) -> str:
        """Where the split's rows are read from (for messages)."""
        return self.x.features.describe()
