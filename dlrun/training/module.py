"""The one LightningModule that trains any composed model.

Loss, weight penalties and metrics come from the config; the per-step path does
one forward pass, one loss, and the penalties only when their coefficients are set.
"""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
from torch import nn

from dlrun.errors import TrainingFailed
from dlrun.training.hooks import PER_BATCH_HOOKS, skip_unused_hooks
from dlrun.training.metrics import quality_name


# Where a checkpoint keeps the running sum of an unfinished epoch's training loss.
EPOCH_LOSS_KEY = "dlrun_epoch_train_loss"


def penalized_parameters(net: nn.Module) -> list[nn.Parameter]:
    """The weights L1/L2 act on: matrices and kernels, not biases or norm scales."""
    return [p for p in net.parameters() if p.requires_grad and p.ndim > 1]


class DlrunModule(pl.LightningModule):
    """Trains `net` on batches of (inputs, targets) with the configured loss.

    Args:
        net: the model built from the YAML layer list.
        loss_fn: callable(outputs, targets) -> scalar loss.
        make_optimizer: callable(parameters) -> torch optimizer.
        make_scheduler: callable(optimizer) -> Lightning lr-scheduler dict, or None.
        task: "classification" or "regression".
        l1, l2: penalty coefficients over penalized_parameters(net).
        target_scale: regression targets are standardized; MAE is reported in the
            user's units by multiplying back by this scale.
        extra_metrics: more metrics (`metrics: [...]`): name -> a function that makes one.
    """

    def __init__(self, net: nn.Module, loss_fn, make_optimizer, task: str,
                 l1: float = 0.0, l2: float = 0.0, target_scale: torch.Tensor | None = None,
                 make_scheduler=None, extra_metrics=None):
        super().__init__()
        self.net = net
        self.loss_fn = loss_fn
        self.make_optimizer = make_optimizer
        self.make_scheduler = make_scheduler
        self.task = task
        self.l1, self.l2 = l1, l2
        self._penalized = penalized_parameters(net) if (l1 or l2) else []
        self.register_buffer("target_scale", target_scale if target_scale is not None else torch.ones(1))
        self.metric_name = quality_name(task)
        self.extra_metrics = nn.ModuleDict({
            stage: nn.ModuleDict({name: make() for name, make in (extra_metrics or {}).items()})
            for stage in ("val", "test")})
        self._sums: dict[str, list] = {}  # stage -> [sum of loss * rows, rows] over the epoch so far
        # stage -> [correct predictions (classification) or summed absolute error (regression), values]
        self._quality: dict[str, list] = {}
        skip_unused_hooks(self, pl.LightningModule, PER_BATCH_HOOKS)  # dlrun.training.hooks

    def __setattr__(self, name: str, value) -> None:
        # Lightning names the running hook here before and after each hook it calls, a few dozen times a
        # batch: a plain attribute, without nn.Module's checks for parameters, buffers and submodules.
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def penalty(self) -> torch.Tensor | float:
        """l1 * sum|w| + l2 * sum w^2 over the penalized weights."""
        total = 0.0
        for weight in self._penalized:
            if self.l1:
                total = total + self.l1 * weight.abs().sum()
            if self.l2:
                total = total + self.l2 * weight.pow(2).sum()
        return total

    def training_step(self, batch, batch_index):
        x, y = batch
        loss = self.loss_fn(self.net(x), y)
        if self._penalized:
            loss = loss + self.penalty()
        if self._not_finite_anywhere(loss):
            raise TrainingFailed(
                f"the training loss became {loss.item()} at step {self.global_step} "
                f"(epoch {self.current_epoch}, batch {batch_index}). Try a smaller optim.lr, "
                "gradient clipping (trainer.gradient_clip_val=1.0), or check the data for extreme values."
            )
        self._add_to_epoch_loss("train", loss, len(x), batch_index)
        return loss

    def _add_to_epoch_loss(self, stage: str, loss: torch.Tensor, rows: int, batch_index: int) -> None:
        """The epoch's mean loss, weighted by rows, made known once at its last batch."""
        finished = self._epoch_sum(self._sums, stage, loss.detach() * rows, rows, batch_index)
        if finished is not None:
            total, count = self._over_ranks(*finished)
            self._publish(f"{stage}/loss", total / count)

    def _add_to_epoch_quality(self, stage: str, quality: torch.Tensor, values: int, batch_index: int) -> None:
        """Accuracy (correct over rows) or MAE (absolute error over values), summed as tensors and made known
        once at the epoch's last batch, as the loss is: a torchmetrics object costs more than a small model's
        batch. The division in float64 rounds to the same float32 as torchmetrics' own."""
        finished = self._epoch_sum(self._quality, stage, quality, values, batch_index)
        if finished is not None:
            total, count = self._over_ranks(*finished)
            self._publish(f"{stage}/{self.metric_name}", (total.to(torch.float64) / count).to(torch.float32))

    def _over_ranks(self, total: torch.Tensor, count: int) -> tuple[torch.Tensor, int]:
        """An epoch's sum and count over every rank's rows (under DDP each rank holds its own share)."""
        trainer = self._trainer
        if trainer is None or trainer.world_size == 1:
            return total, count
        both = torch.stack([total.to(torch.float64), torch.tensor(float(count), dtype=torch.float64,
                                                                  device=total.device)])
        both = trainer.strategy.reduce(both, reduce_op="sum")
        return both[0].to(total.dtype), int(both[1].item())

    def _publish(self, name: str, value: torch.Tensor) -> None:
        """Where Lightning's callbacks (checkpoints, early stopping, a sweep's pruner, dlrun's metrics) and
        `tested_metrics` read an epoch's value. Put there directly rather than through self.log, whose
        bookkeeping costs about half a millisecond a call and more at every later batch; the value is the
        exact epoch mean, on every rank alike."""
        trainer = self._trainer
        if trainer is not None:  # a step called outside fit (tests): nobody reads it
            trainer.callback_metrics[name] = value

    def _epoch_sum(self, sums: dict[str, list], stage: str, value: torch.Tensor, count: int,
                   batch_index: int) -> list | None:
        """Adds a batch's value and count to the running sums of `stage`; at the epoch's last batch, returns
        [sum, count] and starts over. (A sum restored from a checkpoint is on the CPU: moved to the batch's device.)"""
        total = sums.get(stage) if batch_index else None
        sums[stage] = [value, count] if total is None else [total[0].to(value.device) + value, total[1] + count]
        return sums.pop(stage) if self._last_batch(stage, batch_index) else None

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """A checkpoint written mid-epoch (on its interval, or where a signal stopped) carries the epoch's
        training loss so far, so that the resumed run logs the same train/loss for that epoch."""
        if "train" in self._sums:
            summed, rows = self._sums["train"]
            checkpoint[EPOCH_LOSS_KEY] = [summed.detach().to("cpu", copy=True), rows]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get(EPOCH_LOSS_KEY)
        if saved is not None:
            self._sums["train"] = list(saved)

    def _last_batch(self, stage: str, batch_index: int) -> bool:
        trainer = self._trainer
        if trainer is None:  # a step called outside fit (tests): every batch is the last
            return True
        if stage == "train":
            return batch_index + 1 >= trainer.num_training_batches
        counts = trainer.num_val_batches if stage == "val" else trainer.num_test_batches
        last = counts[0] if isinstance(counts, list) else counts
        return batch_index + 1 >= last

    def _not_finite_anywhere(self, loss: torch.Tensor) -> bool:
        """A non-finite loss on any rank stops every rank (one rank alone stopping would hang the rest)."""
        bad = not math.isfinite(float(loss.detach()))
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1:
            bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        return bad

    def _evaluate(self, batch, stage: str, batch_index: int):
        x, y = batch
        outputs = self.net(x)
        loss = self.loss_fn(outputs, y)
        if self.task == "classification":
            predicted = outputs.argmax(dim=-1) if outputs.shape[-1] > 1 else (outputs[:, 0] > 0).long()
            targets = y
            quality = (predicted == targets).sum()
        else:
            predicted, targets = outputs * self.target_scale, y * self.target_scale
            quality = (predicted - targets).abs().sum()
        for metric in self.extra_metrics[stage].values():
            metric.update(predicted, targets)
        self._add_to_epoch_quality(stage, quality, targets.numel(), batch_index)
        self._add_to_epoch_loss(stage, loss, len(x), batch_index)
        if self._last_batch(stage, batch_index):  # the metric objects accumulate every batch; computed once
            for name, metric in self.extra_metrics[stage].items():
                self.log(f"{stage}/{name}", metric, on_step=False, on_epoch=True)

    def validation_step(self, batch, batch_index):
        self._evaluate(batch, "val", batch_index)

    def test_step(self, batch, batch_index):
        self._evaluate(batch, "test", batch_index)

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        # A batch of tensors already on the device (in-memory data on the CPU) is passed as it is, without
        # Lightning's walk over the batch's structure.
        if type(batch) in (tuple, list) and all(isinstance(part, torch.Tensor) and part.device == device
                                                 for part in batch):
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        if gradient_clip_val:  # trainer.gradient_clip_val: Lightning's own clipping; without it, no checks a step
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_optimizers(self):
        optimizer = self.make_optimizer(self.net.parameters())
        schedule = self.make_scheduler(optimizer) if self.make_scheduler else None
        return optimizer if schedule is None else {"optimizer": optimizer, "lr_scheduler": schedule}



def tested_metrics(trainer: pl.Trainer) -> dict[str, float]:
    """What the last `trainer.test` measured: test/loss, the quality metric and the configured extra metrics
    (Lightning returns only what went through self.log)."""
    return {name: float(value) for name, value in trainer.callback_metrics.items() if name.startswith("test/")}
