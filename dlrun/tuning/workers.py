"""n_jobs > 1: this process works on the study too, beside n_jobs - 1 `dlrun sweep --worker` processes.

Each worker is the same command a user would start on another machine, with
cores / n_jobs torch threads; its output goes to a log file in OUTPUT_DIR/sweeps/NAME/.
The workers are started warm (warm_worker.py) before this process checks the sweep, so that
their imports (about 5 s on a small machine) overlap its own; this process trains trials of
its own beside them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from dlrun.tuning import budget, storage
from dlrun.tuning.session import StudySession

LOST_GRACE_S = 60.0  # a worker notices a lost database at its next write: an epoch's end, at most


def start_warm(count: int) -> list[subprocess.Popen]:
    """count processes importing the heavy stack, each waiting for its worker command (run_workers).
    Their own session: a Ctrl-C in the terminal reaches this process only, which then forwards one
    SIGTERM (a second signal would stop a trial at once, without its checkpoint)."""
    return [subprocess.Popen([sys.executable, "-m", "dlrun.tuning.warm_worker"], stdin=subprocess.PIPE,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            for _ in range(count)]


def dismiss(processes: list[subprocess.Popen]) -> None:
    """Warm processes that will get no command (the sweep was refused or interrupted): they end at once."""
    for process in processes:
        if process.stdin and not process.stdin.closed:
            process.stdin.close()  # an empty line to a process that already reads it
        if process.poll() is None:
            process.kill()  # still importing: nothing of it is written anywhere
        process.wait()


def run_workers(session: StudySession, jobs: int, echo: Callable[[str], None], on_row: Callable,
                work_here: Callable[[Callable[[str], None]], None], warm: list[subprocess.Popen]) -> None:
    """Give the warm processes (start_warm, jobs - 1 of them) their worker commands on the study, work on it
    here (work_here, given a progress printer), and report each trial any process finishes until all have
    exited."""
    from dlrun.tuning.grid import set_threads

    options = session.options
    threads = options.threads or max(1, (os.cpu_count() or 1) // jobs)
    command = ["sweep", str(session.spec.path), *options.overrides, "--worker",
               "--study-name", session.name, "--n-trials", str(session.n_trials),
               "--threads", str(threads), *(["--config-dir", options.config_dir] if options.config_dir else [])]
    # The storage through the environment: a database URL's password stays out of ps and the trials' records.
    environment = {storage.STORAGE_ENV: session.storage_url}
    logs = Path(session.output_dir) / "sweeps" / session.name
    logs.mkdir(parents=True, exist_ok=True)
    processes = warm
    for index, process in enumerate(processes):
        order = {"argv": command, "log": str((logs / f"worker-{index}.log").resolve()), "environment": environment}
        try:
            process.stdin.write((json.dumps(order) + "\n").encode())
            process.stdin.close()
        except BrokenPipeError:  # it died while importing: told below with its exit code
            pass
    echo(f"dlrun: {jobs} processes (this one and {jobs - 1} worker{'s' if jobs > 2 else ''}), {threads} torch "
         f"thread{'s' if threads > 1 else ''} each; worker logs in {logs}")
    set_threads(threads)
    seen = {r.number for r in budget.rows_of(session.study) if r.state.is_finished()}
    try:
        # Every process's finished trials, in order, after each trial of this one.
        work_here(lambda _line: _report_new(session, seen, on_row))
        while True:
            alive = [p for p in processes if p.poll() is None]
            _report_new(session, seen, on_row)
            if not alive:
                break
            time.sleep(1.0)
    except storage.StorageLost:
        _stop(processes, grace_s=LOST_GRACE_S)  # each fails its trial at its next write, or is stopped
        _tell_failed(processes, logs, echo)
        raise
    except Exception as error:
        if "://" not in session.storage_url or not storage.is_lost_connection(error):
            _stop(processes)
            raise
        _stop(processes, grace_s=LOST_GRACE_S)
        _tell_failed(processes, logs, echo)
        raise storage.lost(session.storage_url, session.name, error) from None
    except KeyboardInterrupt:
        _stop(processes)
        raise
    _tell_failed(processes, logs, echo)


def _stop(processes: list[subprocess.Popen], grace_s: float = 0.0) -> None:
    """Wait grace_s for the workers to exit by themselves; then SIGTERM stops the trials still training
    at a batch boundary (KILLED)."""
    deadline = time.time() + grace_s
    while time.time() < deadline and any(p.poll() is None for p in processes):
        time.sleep(0.5)
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        process.wait(timeout=120)


def _tell_failed(processes: list[subprocess.Popen], logs: Path, echo: Callable[[str], None]) -> None:
    for index, process in enumerate(processes):
        if process.returncode != 0:
            echo(f"dlrun: worker {index} exited with code {process.returncode}; see {logs / f'worker-{index}.log'}")


def _report_new(session: StudySession, seen: set[int], on_row: Callable) -> None:
    rows = budget.rows_of(session.study)
    for row in sorted(rows, key=lambda r: r.number):
        if row.number not in seen and row.state.is_finished():
            seen.add(row.number)
            on_row(row, rows, sum(r.state.spent_budget() and r.number in seen for r in rows))
