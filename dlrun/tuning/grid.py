"""`dlrun train -m`: every combination of the listed values, under one parent run.

Every combination is composed and validated before the first trial, so a typo in the
last one stops the sweep before any training. Trials run one after another in this
process, or `--jobs N` at once in worker processes with cores / N torch threads each.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Callable

from dlrun.errors import TrainingFailed
from dlrun.tuning.report import TrialRow, best_row, final_table, progress_line, rerun_command
from dlrun.tuning.states import TrialState
from dlrun.tuning.trial import TrialOutcome, run_trial


@dataclass
class SweepResult:
    parent_run_id: str
    rows: list[TrialRow]
    metric: str
    direction: str
    base_overrides: list[str]
    config_dir: str | None

    def summary(self) -> str:
        lines = ["", final_table(self.rows, self.metric, self.direction)]
        best = best_row(self.rows, self.direction)
        if best is not None:
            lines += [f"best: trial {best.number}  {self.metric}={best.value:.6g}  run {best.run_id}",
                      f"  overrides: {' '.join(best.overrides) or '(the base run)'}",
                      f"  train it again: {rerun_command(self.base_overrides, best, self.config_dir)}"]
        lines.append(f"run_id: {self.parent_run_id}")
        return "\n".join(lines)


def run_grid(overrides: list[str], config_dir: str | None, jobs: int, metric: str,
             echo: Callable[[str], None]) -> SweepResult:
    """Run every combination of `overrides`; the result holds every trial, failed ones included."""
    from dlrun.config.paths import config_roots, group_options
    from dlrun.tuning.check import check_base, check_metric_fits, compose_run
    from dlrun.tuning.parent import SweepParent
    from dlrun.tuning.space import grid, parse
    from dlrun.tracking.store import tracking_uri

    combinations = grid(overrides, group_options(config_roots(config_dir)))
    varying = {o.input_line for o in parse(overrides, "override") if o.is_sweep_override()}
    base = [o for o in overrides if o not in varying]
    runs = [compose_run(c, config_dir, f"trial {n} ({' '.join(c)})") for n, c in enumerate(combinations)]
    checked = check_base(combinations[0], config_dir, metric, None, "dlrun train -m")
    check_metric_fits(runs, metric, f"dlrun train -m --metric {metric}")
    uri = tracking_uri(checked.run.tracking["uri"])
    own = [[v for v in combination if v not in base] for combination in combinations]

    parent = SweepParent(uri, checked.run.tracking["experiment"])
    parent.start("grid", "train -m", {"overrides": " ".join(overrides), "trials": str(len(combinations)),
                                      "metric": metric}, {"overrides.txt": "\n".join(overrides) + "\n"})
    echo(f"dlrun: grid of {len(combinations)} trials under parent run {parent.run_id}"
         + (f", {jobs} at once" if jobs > 1 else ""))
    rows: list[TrialRow] = []

    def finished(number: int, outcome: TrialOutcome) -> None:
        row = TrialRow(number, outcome.state, outcome.value, own[number], outcome.run_id, outcome.epochs,
                       outcome.fit_seconds, outcome.message, outcome.test_metrics)
        rows.append(row)
        echo(progress_line(row, len(rows), len(combinations), rows, metric, checked.direction))
        parent.log_best(rows, metric, checked.direction, step=number)

    from dlrun.tuning.parent import child_tags
    from dlrun.training.outcome import Interrupted

    jobs_args = [(c, config_dir, metric, uri, child_tags(parent.run_id, "grid", n)) for n, c in enumerate(combinations)]
    try:
        if jobs == 1:
            for number, args in enumerate(jobs_args):
                finished(number, run_trial(*args))
        else:
            _run_in_pool(jobs_args, jobs, finished)
    except (Interrupted, KeyboardInterrupt):
        parent.finish(rows, metric, checked.direction, "KILLED")
        raise Interrupted(f"the grid was interrupted after {len(rows)} of {len(combinations)} trials; "
                          f"parent run {parent.run_id} is marked KILLED.") from None
    parent.finish(rows, metric, checked.direction, "FINISHED")
    result = SweepResult(parent.run_id, rows, metric, checked.direction, base, config_dir)
    if all(r.state == TrialState.FAILED for r in rows):
        echo(result.summary())
        raise TrainingFailed(f"every trial of the grid failed; parent run {parent.run_id}.")
    return result


def _run_in_pool(jobs_args: list[tuple], jobs: int, finished: Callable[[int, TrialOutcome], None]) -> None:
    """Trials in `jobs` worker processes; on Ctrl-C or SIGTERM each worker stops its trial with a checkpoint."""
    threads = max(1, (os.cpu_count() or 1) // jobs)
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_start_trial_process, initargs=(threads,))
    try:
        futures = {pool.submit(run_trial, *args): number for number, args in enumerate(jobs_args)}
        for future in as_completed(futures):
            error = future.exception()
            if error is not None:
                raise error
            finished(futures[future], future.result())
    except BaseException:
        for child in multiprocessing.active_children():
            if child.pid is not None:
                os.kill(child.pid, signal.SIGTERM)  # each stops its trial at a batch boundary, KILLED
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _start_trial_process(threads: int) -> None:
    # A process group of its own: a Ctrl-C in the terminal reaches the grid's process only, which
    # forwards one SIGTERM (a second signal would stop a trial at once, without its checkpoint).
    os.setpgrp()
    set_threads(threads)


def set_threads(threads: int) -> None:
    """Share the cores among trial processes: each gets its own torch thread count."""
    import torch

    torch.set_num_threads(threads)
