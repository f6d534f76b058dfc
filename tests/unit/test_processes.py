"""Whether the process that owns a run or a trial still runs: host, pid, boot, PID namespace and start time."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dlrun import processes
from dlrun.processes import Owner, is_gone, pid_of, runs_here, this_process

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux /proc")


@pytest.fixture
def child():
    """A live process of this host and namespace, not this one."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield process
    process.kill()
    process.wait(timeout=60)


def owner_of(pid: int, **changes) -> str:
    """The owner string pid would record, with fields replaced by changes."""
    here = processes._this_owner()
    return str(dataclasses.replace(here, **{"pid": pid, "start": processes._start_time(pid), **changes}))


def test_this_process_is_alive_and_not_another_writer():
    owner = this_process()
    assert not is_gone(owner)
    assert not runs_here(owner)  # `dlrun resume` must not refuse a run because of itself


def test_a_live_child_runs_here_and_is_gone_once_it_finished(child):
    owner = owner_of(child.pid)
    assert runs_here(owner) and not is_gone(owner)
    child.kill()
    child.wait(timeout=60)
    assert is_gone(owner) and not runs_here(owner)


def _pid_of_exited() -> int:
    """The pid of a child process that finished and was waited for."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait(timeout=60)
    return process.pid


def test_the_same_pid_with_another_start_time_is_a_reused_pid(child):
    reused = owner_of(child.pid, start=str(int(processes._start_time(child.pid)) + 1))
    assert is_gone(reused) and not runs_here(reused)
    assert is_gone(owner_of(os.getpid(), start="1"))  # `dlrun resume` got the dead run's pid


def test_another_boot_of_this_host_means_the_process_is_gone(child):
    rebooted = owner_of(child.pid, boot="00000000-0000-0000-0000-000000000000")
    assert is_gone(rebooted) and not runs_here(rebooted)


def test_a_process_of_another_pid_namespace_cannot_be_judged(child):
    finished = Owner(socket.gethostname(), _pid_of_exited(), processes._boot_id(), "1", "1")
    assert not is_gone(str(finished))  # another container on this host: its pids are not ours to look up
    assert not runs_here(owner_of(child.pid, pid_namespace="1"))


def test_a_process_of_another_host_cannot_be_judged():
    assert not is_gone(str(Owner("another-host", _pid_of_exited())))
    assert not runs_here(owner_of(os.getpid(), host="another-host"))


def test_an_owner_of_the_old_format_is_judged_by_host_and_pid(child):
    host = socket.gethostname()
    assert is_gone(f"{host}:{_pid_of_exited()}")
    assert runs_here(f"{host}:{child.pid}") and not is_gone(f"{host}:{child.pid}")
    assert not runs_here(f"{host}:{os.getpid()}")  # this process took the pid of the run's dead one
    assert not is_gone(f"another-host:{_pid_of_exited()}")


def test_the_pid_is_read_from_either_format():
    assert pid_of(this_process()) == str(os.getpid())
    assert pid_of("somehost:4242") == "4242"
    assert this_process().split(":")[2:] == [processes._boot_id(), processes._pid_namespace(),
                                             processes._start_time(os.getpid())]
    assert all(this_process().split(":")[2:]), this_process()  # boot, namespace and start time all known here
