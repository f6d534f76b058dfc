"""Checkpoints and metrics on an interval: best.ckpt and last.ckpt written together after the first epoch,
then every PERSIST_EVERY_S and at the end; the epochs' metrics sent at the same moments, in one batch;
the fused optimizers. Real short fits of a linear model on 32 rows (a second or so each)."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from dlrun.components.losses import LOSSES
from dlrun.config.compose import compose
from dlrun.config.validate import validate
from dlrun.data.loader import BatchLoader
from dlrun.errors import DataError
from dlrun.tracking.offline import OfflineBuffer
from dlrun.training import setup as train_setup
from dlrun.training import callbacks
from dlrun.training.callbacks import EpochMetricsToMlflow, StopOnSignal
from dlrun.training.module import DlrunModule
from dlrun.training.trainer import build_trainer


class _Record:
    """Stands in for the RunRecord: what was queued, and when it was flushed (after how many epochs)."""

    def __init__(self):
        self.queued: list[tuple[int, bool]] = []
        self.flushed_after: list[int] = []

    def log_metrics(self, metrics, step, send=True):
        self.queued.append((step, send))

    def flush_metrics(self):
        self.flushed_after.append(len(self.queued))


def _fit(tmp_path, epochs: int, every_s: float, monkeypatch, loader=BatchLoader):
    monkeypatch.setattr(callbacks, "PERSIST_EVERY_S", every_s)
    run = validate(compose(["data=iris", "data.batch_size=8", "model=linear", "trainer.enable_progress_bar=false",
                            f"trainer.max_epochs={epochs}"]))
    torch.manual_seed(0)
    x = torch.randn(32, 4)
    y = (x[:, 0] > 0).long()
    name, options = run.loss
    module = DlrunModule(nn.Linear(4, 2), LOSSES.get(name).builder(2, **options), train_setup._optimizer_factory(run),
                         "classification")
    record = _Record()
    trainer = build_trainer(run, "classification", tmp_path, EpochMetricsToMlflow(record),
                            StopOnSignal(tmp_path / "last.ckpt"))
    writes = []
    save = trainer.save_checkpoint
    monkeypatch.setattr(trainer, "save_checkpoint", lambda path, *a, **k: (writes.append(trainer.global_step),
                                                                            save(path, *a, **k)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, loader(x, y, 8, shuffle=True), BatchLoader(x, y, 8, shuffle=False))
    return trainer, record, writes


def test_a_short_run_writes_its_checkpoints_after_the_first_epoch_and_at_the_end_only(tmp_path, monkeypatch):
    trainer, record, writes = _fit(tmp_path, 6, 3600.0, monkeypatch)
    assert writes == [4, 24]  # last.ckpt after the first epoch (4 steps) and after the last, not between
    last = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert last["global_step"] == trainer.global_step == 6 * 4
    best = torch.load(tmp_path / "best.ckpt", weights_only=True)
    recorded_best = last["callbacks"][next(k for k in last["callbacks"] if k.startswith("ModelCheckpoint{"))]
    assert recorded_best["best_model_path"].endswith("best.ckpt")
    assert best["global_step"] <= trainer.global_step
    # Every epoch queued unsent; flushed with each write (after epochs 1 and 6) and once more at the end.
    assert record.queued == [(epoch, False) for epoch in range(6)]
    assert record.flushed_after[:2] == [1, 6] and set(record.flushed_after) == {1, 6}


def test_once_the_interval_is_up_a_write_comes_at_the_next_batch_even_mid_epoch(tmp_path, monkeypatch):
    _, record, writes = _fit(tmp_path, 3, 0.0, monkeypatch)
    assert writes == list(range(1, 13))  # every step of 3 epochs of 4 batches
    assert record.flushed_after[-1] == 3 and record.flushed_after == sorted(record.flushed_after)


class _UnreadableInEpoch3(BatchLoader):
    """Training batches that cannot be read from epoch 3 on, the way a streamed file that broke stops fit."""

    passes = 0

    def __iter__(self):
        type(self).passes += 1
        if type(self).passes > 3:
            raise DataError("cannot read image 'b/2.png'")
        yield from super().__iter__()


def test_a_stop_on_unreadable_data_writes_the_best_that_last_ckpt_names(tmp_path, monkeypatch):
    # Written after epoch 0 only (a long interval): the better epochs 1 and 2 are held in memory when epoch 3
    # fails; last.ckpt, written where fit stopped, names that best, and best.ckpt must be it.
    with pytest.raises(DataError):
        _fit(tmp_path, 6, 3600.0, monkeypatch, loader=_UnreadableInEpoch3)
    last = torch.load(tmp_path / "last.ckpt", weights_only=True)
    best = torch.load(tmp_path / "best.ckpt", weights_only=True)
    assert last["global_step"] == 12  # three epochs of 4 batches
    recorded = last["callbacks"][next(k for k in last["callbacks"] if k.startswith("ModelCheckpoint{"))]
    held = best["callbacks"][next(k for k in best["callbacks"] if k.startswith("ModelCheckpoint{"))]
    assert best["epoch"] >= 1, "a best of a later epoch than the first write"
    assert float(held["current_score"]) == float(recorded["best_model_score"])


class _Client:
    def __init__(self):
        self.batches: list[list] = []

    def log_batch(self, run_id, metrics=()):
        self.batches.append(list(metrics))


def test_queued_epochs_go_to_the_store_in_one_batch_up_to_mlflows_limit():
    client = _Client()
    buffer = OfflineBuffer("sqlite:///unused.db", client)
    for step in range(5):
        buffer.add_metrics("run", {"a": 1.0, "b": 2.0}, step, send=False)
    assert client.batches == []
    buffer.flush()
    assert len(client.batches) == 1 and sorted(m.step for m in client.batches[0]) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    buffer.METRICS_PER_BATCH = 4
    for step in range(5):
        buffer.add_metrics("run", {"a": 1.0, "b": 2.0}, step, send=False)
    buffer.flush()
    assert [len(b) for b in client.batches[1:]] == [4, 4, 2]


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "adagrad"])
def test_optimizers_with_a_fused_kernel_on_this_device_use_it(name):
    run = validate(compose([f"optim={name}"]))
    optimizer = train_setup._optimizer_factory(run)(nn.Linear(3, 2).parameters())
    assert optimizer.defaults["fused"] is True


def test_an_optimizer_without_one_keeps_torchs_default():
    run = validate(compose(["optim=rmsprop"]))
    optimizer = train_setup._optimizer_factory(run)(nn.Linear(3, 2).parameters())
    assert not optimizer.defaults.get("fused")
