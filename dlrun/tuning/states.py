"""The states of a sweep's trials, as dlrun reports and stores them.

The values are what studies and MLflow runs hold (the `dlrun_state` trial attribute,
the `dlrun.trial_state` tag), so they never change: an old study still reads.
"""

from __future__ import annotations

import enum


class TrialState(str, enum.Enum):
    """A trial's state. Optuna's FAIL is split by cause: only FAILED (the trial's own fault)
    spends budget; CRASHED and INTERRUPTED trials are tried again, SURPLUS ones never ran."""

    COMPLETE = "complete"
    PRUNED = "pruned"
    FAILED = "failed"  # a bad combination, a non-finite loss, an error in the trial
    CRASHED = "crashed"  # its process died (kill -9, out of memory)
    INTERRUPTED = "interrupted"  # Ctrl-C or SIGTERM stopped it
    SURPLUS = "surplus"  # claimed by another machine past the budget's last place, closed unrun
    RUNNING = "running"
    WAITING = "waiting"

    def __str__(self) -> str:
        # The stored string, in messages, tables and tags too (3.10 has no enum.StrEnum).
        return self.value

    def is_finished(self) -> bool:
        """True once the trial has an outcome, that is neither running nor waiting."""
        return self not in (TrialState.RUNNING, TrialState.WAITING)

    def spent_budget(self) -> bool:
        """True for a finished trial that counts against n_trials (budget.counts, for a finished trial)."""
        return self in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAILED)
