"""Start a sweep of several processes so that each of them claims a trial.

The command trains trials too and has nothing to import, so on a loaded machine it could run short trials
alone before a worker is ready. The test holds the study's claim lock until every process of the sweep
waits for it (the kernel lists each waiter in /proc/locks), so the first trials go one to each process.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import time
from pathlib import Path


def waiting_for(lock: Path) -> int:
    """How many processes wait to take the flock on the file `lock`."""
    inode = f":{os.stat(lock).st_ino} "
    return sum("->" in line and inode in line for line in Path("/proc/locks").read_text().splitlines())


def start_with_every_process_claiming(args: list[str], cwd: Path, lock: Path, processes: int,
                                      timeout: float = 300) -> subprocess.Popen:
    """Popen `args`, once all its `processes` (the command and its workers) wait on the claim lock."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        process = subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + timeout
        while waiting_for(lock) < processes:
            assert time.time() < deadline and process.poll() is None, process.communicate()
            time.sleep(0.1)
    return process
