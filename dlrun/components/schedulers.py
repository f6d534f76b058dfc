"""Learning-rate schedules, chosen by the `scheduler` group.

A builder receives the optimizer and a ScheduleContext and returns Lightning's
lr-scheduler dict ({"scheduler": ..., "interval": "epoch" | "step", ...}), or
None for a constant rate.
"""

from __future__ import annotations

from dataclasses import dataclass

from dlrun.registry import Registry

# The optimizer and the ScheduleContext are supplied by dlrun.
SCHEDULERS = Registry("scheduler", skip_params=2)


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
