"""What dlrun leaves out of Lightning's per-batch path, and that what it leaves out was doing nothing:
hooks its callbacks and module do not define, the hook-name bookkeeping, moving a batch already on its
device, a clipping check without clipping, self.log for the epoch's own metrics."""

from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from dlrun.data.loader import BatchLoader
from dlrun.training import callbacks
from dlrun.training.hooks import PER_BATCH_HOOKS, PER_EVALUATION_BATCH_HOOKS, SkipsUnusedHooks
from dlrun.training.module import DlrunModule
from dlrun.training.trainer import build_trainer
from tests.unit.test_components import _fit, _Metrics, _run

DLRUN_CALLBACKS = {
    "EpochMetricsToMlflow": lambda: callbacks.EpochMetricsToMlflow(_Metrics()),
    "IntervalCheckpoint": lambda: callbacks.IntervalCheckpoint(Path("unused"), on_write=lambda: None),
    "StopOnSignal": lambda: callbacks.StopOnSignal(Path("unused/last.ckpt")),
    "RandomState": callbacks.RandomState, "AgreeToStop": callbacks.AgreeToStop,
    "EndSanityCheckPass": callbacks.EndSanityCheckPass}


@pytest.mark.parametrize("name", DLRUN_CALLBACKS)
def test_each_dlrun_callback_keeps_the_per_batch_hooks_it_defines_and_drops_the_empty_ones(name):
    callback = DLRUN_CALLBACKS[name]()
    for hook in PER_BATCH_HOOKS + PER_EVALUATION_BATCH_HOOKS:
        kept = getattr(callback, hook)
        assert kept is None or kept.__func__ is not getattr(pl.Callback, hook), f"{name}.{hook} is Lightning's empty one"
    assert callable(DLRUN_CALLBACKS["IntervalCheckpoint"]().on_train_batch_end)  # the interval's mid-epoch write
    assert callable(DLRUN_CALLBACKS["StopOnSignal"]().on_train_batch_end)  # a signal's stop at the batch boundary
    assert callbacks.RandomState().on_train_batch_end is None


def test_a_subclass_keeps_the_hooks_it_defines_calls_super_from_and_mixes_in():
    calls = []

    class Mine(callbacks.RandomState):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            super().on_train_batch_end(trainer, module, outputs, batch, batch_idx)  # Lightning's empty one
            calls.append("mine")

    class Other(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            calls.append("other")

    class Mixed(callbacks.AgreeToStop, Other):
        pass

    Mine().on_train_batch_end(None, None, None, None, 0)
    Mixed().on_train_batch_start(None, None, None, 0)
    assert calls == ["mine", "other"]
    assert Mine().on_before_backward is None and Mixed().on_train_batch_end is None
    assert callbacks.RandomState.on_train_batch_end is pl.Callback.on_train_batch_end  # the class keeps its method


def test_a_fit_calls_the_hooks_a_callback_defines_and_skips_the_rest(tmp_path):
    class CountsBatches(SkipsUnusedHooks, pl.Callback):
        ends = 0

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self.ends += 1

    class AlsoBeforeBackward(CountsBatches):
        befores = 0

        def on_before_backward(self, trainer, module, loss):
            self.befores += 1

    counting, both = CountsBatches(), AlsoBeforeBackward()
    assert counting.on_before_backward is None and callable(both.on_before_backward)
    run = _run("data=iris", "data.batch_size=8", "model=linear", "trainer.enable_progress_bar=false",
               "trainer.max_epochs=2")
    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
    y = (x[:, 0] > 0).long()
    module = DlrunModule(nn.Linear(4, 2), nn.CrossEntropyLoss(), lambda p: torch.optim.SGD(p, lr=0.1),
                         "classification")
    assert module.on_train_batch_start is None and module.on_before_backward is None
    trainer = build_trainer(run, "classification", tmp_path, callbacks.EpochMetricsToMlflow(_Metrics()),
                            callbacks.StopOnSignal(tmp_path / "last.ckpt"), extra_callbacks=[counting, both])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, BatchLoader(x, y, 8, shuffle=True), BatchLoader(x, y, 8, shuffle=False))
    assert (counting.ends, both.ends, both.befores) == (8, 8, 8)  # 4 batches, 2 epochs


def test_a_module_subclass_keeps_a_hook_it_defines():
    class Counting(DlrunModule):
        def on_after_backward(self):
            super().on_after_backward()

    module = Counting(nn.Linear(2, 2), nn.MSELoss(), lambda p: torch.optim.SGD(p, lr=0.1), "regression")
    module.on_after_backward()  # its own, and Lightning's empty one through super()
    assert module.on_before_backward is None and callable(module.on_after_backward)


def test_lightnings_hook_name_is_a_plain_attribute_and_submodules_still_register():
    module = DlrunModule(nn.Linear(2, 2), nn.MSELoss(), lambda p: torch.optim.SGD(p, lr=0.1), "regression")
    module._current_fx_name = "training_step"
    assert module.__dict__["_current_fx_name"] == "training_step"
    module.head = nn.Linear(2, 1)
    assert "head" in module._modules and "head" not in module.__dict__


def test_a_batch_on_its_device_is_passed_as_it_is_and_others_are_moved_by_lightning():
    module = DlrunModule(nn.Linear(2, 2), nn.MSELoss(), lambda p: torch.optim.SGD(p, lr=0.1), "regression")
    batch = (torch.zeros(3, 2), torch.ones(3))
    assert module.transfer_batch_to_device(batch, torch.device("cpu"), 0) is batch
    mapping = {"x": torch.zeros(3, 2)}
    moved = module.transfer_batch_to_device(mapping, torch.device("cpu"), 0)
    assert set(moved) == {"x"} and torch.equal(moved["x"], mapping["x"])


@pytest.mark.parametrize("clip", [None, 1e-4])
def test_gradient_clipping_clips_each_step_where_configured(tmp_path, clip):
    torch.manual_seed(0)
    torch.randn(32, 4)
    start = nn.Linear(4, 2).weight.detach().clone()  # the weights _fit's model starts from
    overrides = ["trainer.max_epochs=1", "optim=sgd", "optim.lr=1.0"]
    if clip:
        overrides += [f"trainer.gradient_clip_val={clip}", "+trainer.gradient_clip_algorithm=value"]
    trainer, _ = _fit(tmp_path, *overrides)
    moved = (trainer.lightning_module.net.weight.detach() - start).abs().max().item()
    if clip:
        assert moved <= 4 * clip * 1.0001  # 4 steps of lr 1.0, each gradient element within the clip value
    else:
        assert moved > 1e-2


class _TwoRanks:
    """A trainer of two ranks whose reduce adds the other rank's sums: [sum, count]."""

    world_size = 2
    num_val_batches = [1]

    def __init__(self, other: list[float]):
        self.callback_metrics: dict = {}
        self.reduced: list[str] = []
        self.strategy = SimpleNamespace(reduce=self._reduce)
        self.other = torch.tensor(other, dtype=torch.float64)

    def _reduce(self, both: torch.Tensor, reduce_op: str) -> torch.Tensor:
        self.reduced.append(reduce_op)
        return both + self.other


def test_under_ddp_an_epochs_value_is_the_mean_over_every_ranks_rows():
    net = nn.Linear(2, 2)
    module = DlrunModule(net, lambda outputs, y: nn.functional.cross_entropy(outputs, y),
                         lambda p: torch.optim.SGD(p, lr=0.1), "classification")
    x, y = torch.randn(6, 2, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 0, 1, 1, 0])
    with torch.no_grad():
        outputs = net(x)
    correct = float((outputs.argmax(-1) == y).sum())
    loss_sum = float(nn.functional.cross_entropy(outputs, y)) * 6
    module._trainer = _TwoRanks([10.0, 4.0])  # the other rank: a sum of 10 over 4 rows
    module._evaluate((x, y), "val", 0)
    published = module._trainer.callback_metrics
    assert module._trainer.reduced == ["sum", "sum"]
    assert float(published["val/acc"]) == pytest.approx((correct + 10) / 10)
    assert float(published["val/loss"]) == pytest.approx((loss_sum + 10) / 10, rel=1e-6)


def test_the_epochs_metrics_reach_lightnings_callbacks_without_self_log(tmp_path):
    trainer, logged = _fit(tmp_path, "trainer.max_epochs=2")
    assert set(trainer.callback_metrics) >= {"train/loss", "val/loss", "val/acc"}
    assert not trainer.logged_metrics  # nothing went through self.log
    assert [set(epoch) for epoch in logged] == [{"train/loss", "val/loss", "val/acc", "lr"}] * 2
    assert Path(trainer.checkpoint_callback.best_model_path).name == "best.ckpt"  # monitored val/loss
