"""Which process owns a run or a trial (host:pid), and whether that process is gone.

A process killed with SIGKILL (or a machine that lost power) cannot close its MLflow run or
Optuna trial; they stay RUNNING. The owner recorded at the start tells, on the same host,
that nothing is running them any more. Owners on other hosts cannot be checked.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path


def this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def is_gone(owner: str) -> bool:
    """True when owner (host:pid) is a process of this host that no longer runs (or is a zombie)."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, owned by another user
        return False
    return _is_zombie(int(pid))


def runs_here(owner: str) -> bool:
    """True when owner (host:pid) is a live process of this host."""
    return owner.rpartition(":")[0] == socket.gethostname() and not is_gone(owner)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].startswith("Z")
    except OSError:
        return False
