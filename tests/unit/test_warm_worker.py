"""The warm sweep workers that n_jobs > 1 starts before the sweep is checked (dlrun/tuning/warm_worker.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import dlrun
from dlrun.errors import ConfigError
from dlrun.tuning.workers import dismiss, start_warm


def warm_children() -> list[int]:
    """The pids of this process's live children that run dlrun.tuning.warm_worker."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z" and b"dlrun.tuning.warm_worker" in cmdline:
            found.append(int(stat.parent.name))
    return found


def test_a_warm_worker_runs_the_command_it_is_given_with_its_log_and_environment(tmp_path):
    (process,) = start_warm(1)
    log = tmp_path / "worker-0.log"
    order = {"argv": ["configs"], "log": str(log), "environment": {"DLRUN_WARM_TEST": "1"}}
    process.stdin.write((json.dumps(order) + "\n").encode())
    process.stdin.close()
    assert process.wait(timeout=300) == 0
    listed = log.read_text()
    assert "model" in listed and "optim" in listed  # `dlrun configs` printed the config groups into the log


def test_a_warm_worker_given_no_command_ends_without_doing_anything(tmp_path):
    (process,) = start_warm(1)
    process.stdin.close()  # the sweep was refused: an empty stdin
    assert process.wait(timeout=300) == 0


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_a_refused_sweep_with_n_jobs_leaves_no_worker_process_behind(workdir):
    (workdir / "bad.yaml").write_text("metric: val/acc\nn_trials: 2\nn_jobs: 2\nparams:\n  optim.lrr: choice(0.1, 0.01)\n")
    with pytest.raises(ConfigError, match="optim.lrr"):
        dlrun.sweep(str(workdir / "bad.yaml"))
    assert warm_children() == []


def test_dismiss_ends_a_warm_worker_still_importing():
    processes = start_warm(2)
    dismiss(processes)
    assert all(p.returncode is not None for p in processes) and warm_children() == []
