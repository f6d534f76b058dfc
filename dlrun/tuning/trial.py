"""One trial of a sweep: a full `dlrun train` run, nested under the sweep's parent run.

A trial that fails (bad combination, NaN loss, an exception) is an outcome, not an
error: the sweep records it and goes on. Only an interruption (Ctrl-C, SIGTERM)
stops the sweep.
"""

from __future__ import annotations

import math
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from dlrun.errors import DlrunError
from dlrun.tuning.states import TrialState
from dlrun.tracking.store import retry_while_locked


@dataclass
class TrialOutcome:
    state: TrialState  # COMPLETE, PRUNED or FAILED
    value: float | None  # the metric in the last epoch trained
    run_id: str | None
    epochs: int = 0
    fit_seconds: float = 0.0
    test_metrics: dict[str, float] = field(default_factory=dict)
    message: str = ""  # why it failed


def run_trial(overrides: list[str], config_dir: str | Path | None, metric: str, store_uri: str,
              tags: dict[str, str], report: Callable[[float, int], bool] | None = None,
              on_start: Callable[[str], None] | None = None, is_best: Callable[[float], bool] | None = None,
              plots: bool = True, configs=None) -> TrialOutcome:
    """Train one trial's config as `dlrun train` would, under the sweep's tags.

    A trial does what a trial needs: with is_best, it logs its served model only when its final value is
    the best so far (the study's best always has one; predict and eval build the others' from best.ckpt),
    and its plots only when plots is True.

    Args:
        overrides: the whole override list (base run, then the trial's values).
        metric: the per-epoch metric that judges the trial.
        store_uri: the tracking store, where the child run's trial state is tagged.
        tags: tags of the child run, mlflow.parentRunId among them.
        report: called with (value, epoch) after each epoch; True stops the trial (pruned).
        on_start: called with the child run's id once it exists.
        is_best: whether a final value beats every finished trial's; None: every trial logs its model.
        plots: draw and log the trial's plots.
        configs: a TrialConfigs whose base begins overrides: the config composed from it (the same
            config, quicker).
    """
    from dlrun.tuning.check import compose_run
    from dlrun.training.outcome import Interrupted
    from dlrun.training.run import train

    run_id = None

    def started(new_id: str) -> None:
        nonlocal run_id
        run_id = new_id
        if on_start is not None:
            on_start(new_id)

    reporter = EpochReporter(metric, report)
    try:
        # Progress bars of many trials would bury the sweep's own progress; an explicit override still wins.
        if configs is not None and overrides[:len(configs.base)] == configs.base:
            run = configs.run(overrides[len(configs.base):], "trial", quiet=True)
        else:
            run = compose_run(["trainer.enable_progress_bar=false", *overrides], config_dir, "trial")
        result = train(run, extra_tags=tags, callbacks=[reporter.callback()], on_start=started,
                       log_model=None if is_best is None else lambda: reporter.best_so_far(is_best), plots=plots)
    except Interrupted:
        if run_id is not None:
            _tag_state(run_id, TrialState.INTERRUPTED, store_uri)
        raise
    except DlrunError as error:
        return _failed(run_id, store_uri, str(error))
    except Exception as error:  # a bug or a torch error in one trial must not end the sweep
        detail = "".join(traceback.format_exception_only(type(error), error)).strip()
        return _failed(run_id, store_uri, f"{detail} (traceback on stderr)", with_traceback=True)
    value = reporter.last_value
    if value is None:
        return _failed(result.run_id, store_uri, f"the run reported no finite {metric}")
    state = TrialState.PRUNED if reporter.pruned else TrialState.COMPLETE
    _tag_state(result.run_id, state, store_uri)
    return TrialOutcome(state, value, result.run_id, result.epochs, result.fit_seconds, result.test_metrics)


def _failed(run_id: str | None, store_uri: str, message: str, with_traceback: bool = False) -> TrialOutcome:
    if with_traceback:
        traceback.print_exc()
    if run_id is not None:
        _tag_state(run_id, TrialState.FAILED, store_uri)
    return TrialOutcome(TrialState.FAILED, None, run_id, message=message)


def _tag_state(run_id: str, state: TrialState, store_uri: str) -> None:
    from mlflow.tracking import MlflowClient

    retry_while_locked(MlflowClient(tracking_uri=store_uri).set_tag, run_id, "dlrun.trial_state", state)


class EpochReporter:
    """Hands the metric of each finished epoch to the sweep; stops training when told to."""

    def __init__(self, metric: str, report: Callable[[float, int], bool] | None):
        self.metric = metric
        self.report = report
        self.last_value: float | None = None
        self.pruned = False

    def best_so_far(self, is_best: Callable[[float], bool]) -> bool:
        """Whether the trial, trained to the end (not pruned), beats every finished trial."""
        return not self.pruned and self.last_value is not None and is_best(self.last_value)

    def callback(self):
        import pytorch_lightning as pl

        from dlrun.training.hooks import SkipsUnusedHooks

        reporter = self

        class _Report(SkipsUnusedHooks, pl.Callback):
            def setup(self, trainer, module, stage):
                # A trial needs no checkpoint after its first epoch: one whose process dies is run again
                # from the start. Its checkpoints are written on the interval and at its end.
                if hasattr(trainer.checkpoint_callback, "write_first_epoch"):
                    trainer.checkpoint_callback.write_first_epoch = False

            # on_train_epoch_end runs after the epoch's validation, so val/* are fresh.
            def on_train_epoch_end(self, trainer, module):
                if trainer.sanity_checking or reporter.metric not in trainer.callback_metrics:
                    return
                value = float(trainer.callback_metrics[reporter.metric])
                if not math.isfinite(value):
                    return
                reporter.last_value = value
                if reporter.report is not None and reporter.report(value, trainer.current_epoch):
                    reporter.pruned = True
                    trainer.should_stop = True

        return _Report()
