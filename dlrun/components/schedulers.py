"""Learning-rate schedules, chosen by the `scheduler` group.

A builder receives the optimizer and a ScheduleContext and returns Lightning's
lr-scheduler dict ({"scheduler": ..., "interval": "epoch" | "step", ...}), or
None for a constant rate. Epoch schedules change the rate between epochs, step
schedules after every optimizer step; both start from optim.lr (onecycle: from
max_lr / div_factor). Builders take no defaults: each key's default is in
conf/scheduler/NAME.yaml (see dlrun.registry).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Annotated, Optional

from dlrun.registry import Choice, Range, Registry

# The optimizer and the ScheduleContext are supplied by dlrun.
SCHEDULERS = Registry("scheduler", skip_params=2, group="scheduler")

NonNegative = Annotated[float, Range(ge=0)]


@dataclass(frozen=True)
class ScheduleContext:
    """How long training runs, for schedules defined over the whole run."""

    max_epochs: int
    steps_per_epoch: int

    @property
    def total_steps(self) -> int:
        return self.max_epochs * self.steps_per_epoch


@SCHEDULERS.register("none", "A constant learning rate: optim.lr throughout")
def none(optimizer, ctx: ScheduleContext):
    return None


@SCHEDULERS.register("step", "Multiply the rate by gamma every step_size epochs")
def step(optimizer, ctx: ScheduleContext, step_size: Annotated[int, Range(ge=1)],
         gamma: Annotated[float, Range(gt=0, le=1)]):
    from torch.optim.lr_scheduler import StepLR

    return {"scheduler": StepLR(optimizer, step_size=step_size, gamma=gamma), "interval": "epoch"}


@SCHEDULERS.register("cosine", "Cosine annealing from optim.lr to eta_min over trainer.max_epochs")
def cosine(optimizer, ctx: ScheduleContext, eta_min: NonNegative):
    from torch.optim.lr_scheduler import CosineAnnealingLR

    return {"scheduler": CosineAnnealingLR(optimizer, T_max=ctx.max_epochs, eta_min=eta_min), "interval": "epoch"}


@SCHEDULERS.register("plateau", "Multiply the rate by factor when val/loss stalls for patience epochs")
def plateau(optimizer, ctx: ScheduleContext, factor: Annotated[float, Range(gt=0, lt=1)],
            patience: Annotated[int, Range(ge=0)], threshold: NonNegative, min_lr: NonNegative):
    from torch.optim.lr_scheduler import ReduceLROnPlateau

    scheduler = ReduceLROnPlateau(optimizer, mode="min", factor=factor, patience=patience,
                                  threshold=threshold, min_lr=min_lr)
    return {"scheduler": scheduler, "monitor": "val/loss", "interval": "epoch"}


@SCHEDULERS.register("onecycle", "One cycle per step: up to max_lr, then down far below optim.lr")
def onecycle(optimizer, ctx: ScheduleContext, max_lr: Optional[Annotated[float, Range(gt=0)]],
             pct_start: Annotated[float, Range(gt=0, lt=1)],
             anneal_strategy: Annotated[str, Choice("cos", "linear")],
             div_factor: Annotated[float, Range(gt=0)],
             final_div_factor: Annotated[float, Range(gt=0)]):
    """max_lr None: the optimizer's own rate (optim.lr) is the peak."""
    from torch.optim.lr_scheduler import OneCycleLR

    peak = max_lr if max_lr is not None else [group["lr"] for group in optimizer.param_groups]
    scheduler = OneCycleLR(optimizer, max_lr=peak, total_steps=ctx.total_steps, pct_start=pct_start,
                           anneal_strategy=anneal_strategy, div_factor=div_factor,
                           final_div_factor=final_div_factor)
    return {"scheduler": scheduler, "interval": "step"}


@SCHEDULERS.register("warmup_cosine", "Linear warm-up for warmup_epochs, then cosine down to eta_min (per step)")
def warmup_cosine(optimizer, ctx: ScheduleContext, warmup_epochs: NonNegative, eta_min: NonNegative):
    """A linear rise to optim.lr over warmup_epochs, then a half cosine down to eta_min at the end.

    A warm-up as long as training or longer (warmup_epochs >= trainer.max_epochs) warms up
    over what there is: the rate rises over every step, reaches optim.lr at the last one,
    and no cosine part follows. So a short run (trainer.max_epochs=1) works with any warm-up.
    """
    from torch.optim.lr_scheduler import LambdaLR

    warmup_steps = min(round(warmup_epochs * ctx.steps_per_epoch), ctx.total_steps)
    factors = [functools.partial(warmup_cosine_factor, warmup_steps=warmup_steps, total_steps=ctx.total_steps,
                                 floor=eta_min / group["lr"])
               for group in optimizer.param_groups]
    return {"scheduler": LambdaLR(optimizer, factors), "interval": "step"}


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int, floor: float) -> float:
    """The multiple of the base rate that optimizer step `step` (from 0) uses.

    Warm-up rises linearly to 1 at step warmup_steps - 1, so no step runs at rate 0;
    then a half cosine falls from 1 towards `floor` (eta_min / base rate) at total_steps.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
