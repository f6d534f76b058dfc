"""`dlrun resume`: continue an interrupted run from its last checkpoint, exactly.

The checkpoint holds the weights, the optimizer, Lightning's loop counters, the
random generators (RandomState) and the data position (BatchLoader), so on CPU a
run interrupted at any step ends as the uninterrupted run would have.
"""

from __future__ import annotations

import sys

from dlrun.errors import ConfigError
from dlrun.lifecycle.stored import load_run

RESUMABLE = ("KILLED", "FAILED", "RUNNING")  # RUNNING: a process that died without a word


def resume(run_id: str, overrides: list[str] | None = None, uri: str | None = None):
    """Continue run_id in the same MLflow run; a FINISHED run with overrides continues in a derived run."""
    from dlrun.training.run import Resume, train

    stored = load_run(run_id, uri)
    for what, then, now in stored.plugin_drift():  # a changed plugin may change what the rest trains
        print(f"dlrun: drift since run {run_id}: {what}: {then} -> {now}", file=sys.stderr)
    status = stored.run.info.status
    if status == "FINISHED":
        if not overrides:
            raise ConfigError(f"run {run_id} is FINISHED: there is nothing to resume. To train it longer in a new, "
                              f"derived run: dlrun resume {run_id} trainer.max_epochs=N")
        run = stored.run_config(overrides, uri)
        done = int(float(stored.run.data.params.get("trainer.max_epochs", 0)))
        if run.trainer["max_epochs"] <= done:
            raise ConfigError(f"run {run_id} already trained {done} epochs; extend it with trainer.max_epochs "
                              f"above {done}.")
        return train(run, extra_tags={"dlrun.derived_from": run_id},
                     resume=Resume(stored.checkpoint("last"), run_id=None))
    if status not in RESUMABLE:
        raise ConfigError(f"run {run_id} is {status}; only {', '.join(RESUMABLE)} runs can be resumed.")
    _refuse_if_still_running(stored.run)
    if overrides:
        raise ConfigError("an interrupted run resumes with its own config; overrides apply only to FINISHED runs.")
    run = stored.run_config(uri=uri)
    return train(run, resume=Resume(_last_checkpoint(stored), run_id=run_id))


def _last_checkpoint(stored):
    """The run's last.ckpt; None (train from step 0) for a run stopped before it trained an epoch or saved
    one. A run that logged epochs but whose checkpoint is gone cannot continue exactly: RunNotFound."""
    from dlrun.lifecycle.stored import RunNotFound
    from dlrun.tracking.system_metrics import model_metrics

    try:
        return stored.checkpoint("last")
    except RunNotFound:
        if model_metrics(stored.run.data.metrics):  # the machine's samples say nothing of training done
            raise
    print(f"dlrun: run {stored.run_id} stopped before its first checkpoint; it trains from step 0, "
          "in the same run.", file=sys.stderr)
    return None


def _refuse_if_still_running(run) -> None:
    """Two processes writing one run would mix their metrics and checkpoints: a RUNNING run resumes only
    once the process that runs it is gone (checked on this host; another host's process cannot be)."""
    from dlrun.processes import pid_of, runs_here
    from dlrun.tracking.record import PROCESS_TAG

    owner = run.data.tags.get(PROCESS_TAG)
    if run.info.status == "RUNNING" and owner and runs_here(owner):
        raise ConfigError(f"run {run.info.run_id} is still running, in process {pid_of(owner)}. Stop it first "
                          f"(Ctrl-C there, or kill {pid_of(owner)}), then resume it.")

