"""n_jobs > 1: the study's trials in `dlrun sweep --worker` processes, progress read from the storage.

Each worker is the same command a user would start on another machine, with
cores / n_jobs torch threads; its output goes to a log file in OUTPUT_DIR/sweeps/NAME/.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from dlrun.sweep import budget
from dlrun.sweep.session import StudySession


def run_workers(session: StudySession, jobs: int, echo: Callable[[str], None], on_row: Callable) -> None:
    """Start `jobs` workers on the study and report each trial they finish until all have exited."""
    options = session.options
    threads = options.threads or max(1, (os.cpu_count() or 1) // jobs)
    command = [sys.executable, "-m", "dlrun", "sweep", str(session.spec.path), *options.overrides, "--worker",
               "--storage", session.storage_url, "--study-name", session.name, "--n-trials", str(session.n_trials),
               "--threads", str(threads), *(["--config-dir", options.config_dir] if options.config_dir else [])]
    logs = Path(session.output_dir) / "sweeps" / session.name
    logs.mkdir(parents=True, exist_ok=True)
    processes = []
    for index in range(jobs):
        with open(logs / f"worker-{index}.log", "ab") as log:
            # Their own session: a Ctrl-C in the terminal reaches this process only, which then
            # forwards one SIGTERM (a second signal would stop a trial at once, without its checkpoint).
            processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    echo(f"dlrun: {jobs} worker processes, {threads} torch thread{'s' if threads > 1 else ''} each; logs in {logs}")
    seen = {r.number for r in budget.rows_of(session.study) if r.state.is_finished()}
    try:
        while True:
            alive = [p for p in processes if p.poll() is None]
            _report_new(session, seen, on_row)
            if not alive:
                break
            time.sleep(1.0)
    except KeyboardInterrupt:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)  # each stops its trial at a batch boundary, KILLED
        for process in processes:
            process.wait(timeout=120)
        raise
    failed = [(i, p.returncode) for i, p in enumerate(processes) if p.returncode != 0]
    for index, code in failed:
        echo(f"dlrun: worker {index} exited with code {code}; see {logs / f'worker-{index}.log'}")


def _report_new(session: StudySession, seen: set[int], on_row: Callable) -> None:
    rows = budget.rows_of(session.study)
    for row in sorted(rows, key=lambda r: r.number):
        if row.number not in seen and row.state.is_finished():
            seen.add(row.number)
            on_row(row, rows, len(seen))
