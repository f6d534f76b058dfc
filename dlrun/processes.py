"""Which process owns a run or a trial, and whether that process is gone.

A process killed with SIGKILL (or a machine that lost power) cannot close its MLflow run or
Optuna trial; they stay RUNNING. The owner recorded at the start tells, on the same host,
that nothing is running them any more. A pid alone does not name a process: after a reboot,
or in a restarted container whose pids start over, another process may have it; and containers
that share a hostname (docker --network host) each count pids of their own. So the owner is
host:pid:boot id:PID namespace:start time, and a process is judged only where all of these can
be compared. Owners on other hosts or in other PID namespaces cannot be checked. An owner written
before (host:pid) is judged by host and pid alone.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    boot: str = ""  # /proc/sys/kernel/random/boot_id; "" where unknown (no /proc, or an old owner)
    pid_namespace: str = ""  # the inode of /proc/self/ns/pid: pids are unique only within one
    start: str = ""  # field 22 of /proc/PID/stat, clock ticks from boot: a reused pid has another

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}:{self.boot}:{self.pid_namespace}:{self.start}"


def this_process() -> str:
    return str(_this_owner())


def pid_of(owner: str) -> str:
    """The pid in an owner string, for messages (`kill PID`)."""
    parsed = _parse(owner)
    return str(parsed.pid) if parsed else owner


def is_gone(owner: str) -> bool:
    """True when owner is a process of this host that no longer runs (or is a zombie, or its pid now
    belongs to another process); False where that cannot be told."""
    recorded, here = _parse(owner), _this_owner()
    if recorded is None or recorded.host != here.host:
        return False
    if _differ(recorded.boot, here.boot):
        return True  # the machine rebooted since: no process of before runs
    if _differ(recorded.pid_namespace, here.pid_namespace):
        return False  # another container's pids: not ours to look up
    return not _is_alive(recorded)


def runs_here(owner: str) -> bool:
    """True when owner is a live process of this host and PID namespace, other than this one."""
    recorded, here = _parse(owner), _this_owner()
    return (recorded is not None and recorded.host == here.host and not _differ(recorded.boot, here.boot)
            and not _differ(recorded.pid_namespace, here.pid_namespace) and recorded.pid != here.pid
            and _is_alive(recorded))


def _this_owner() -> Owner:
    pid = os.getpid()
    return Owner(socket.gethostname(), pid, _boot_id(), _pid_namespace(), _start_time(pid))


def _parse(owner: str) -> Owner | None:
    """An Owner from host:pid:boot:namespace:start, or from the older host:pid; None if malformed."""
    parts = owner.split(":")
    if len(parts) == 5:
        host, pid, boot, namespace, start = parts
    else:
        (host, _, pid), boot, namespace, start = owner.rpartition(":"), "", "", ""
    return Owner(host, int(pid), boot, namespace, start) if pid.isdigit() else None


def _differ(recorded: str, here: str) -> bool:
    """Both known and not the same (an unknown value, as in an old owner, is not compared)."""
    return bool(recorded and here and recorded != here)


def _is_alive(owner: Owner) -> bool:
    try:
        os.kill(owner.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        pass
    fields = _stat_fields(owner.pid)
    if fields is None:  # no /proc (macOS): the pid is all there is to go by; on Linux, it just exited
        return not Path("/proc/self/stat").is_file()
    return not fields[0].startswith("Z") and not _differ(owner.start, fields[19])


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat from field 3 (state) on; the command name before it may hold spaces and ')'."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def _start_time(pid: int) -> str:
    fields = _stat_fields(pid)
    return fields[19] if fields else ""


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _pid_namespace() -> str:
    try:
        return "".join(c for c in os.readlink("/proc/self/ns/pid") if c.isdigit())  # pid:[4026531836]
    except OSError:
        return ""
