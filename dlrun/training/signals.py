"""What SIGINT and SIGTERM do at each stage of a run.

In fit they ask for a stop at the next batch boundary, where a checkpoint is saved
(stop_on_signals); while the MLflow run is created or closed they wait, so that no run
is half-written (signals_deferred); elsewhere they raise KeyboardInterrupt, also for
SIGTERM, which would otherwise end the process at once (signals_raise). Each restores
the handlers it found when its block ends.
"""

from __future__ import annotations

import signal
from contextlib import contextmanager
from dataclasses import dataclass

SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class Received:
    """How many of the signals arrived while a block ran."""

    count: int = 0


@contextmanager
def handling(handler):
    """handler for SIGINT and SIGTERM inside the block; the previous handlers afterwards."""
    try:
        previous = {number: signal.signal(number, handler) for number in SIGNALS}
    except ValueError:  # not the main thread: signals are not this thread's to handle
        previous = {}
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


def stop_on_signals(stopper):
    """Signals ask `stopper` (a StopOnSignal callback) to stop at the next batch boundary."""
    return handling(stopper.request)


@contextmanager
def signals_deferred(received: Received):
    """The first signal is noted in `received` and waits until the block is done; a second one
    raises KeyboardInterrupt at once (the user insists, even if a run is left RUNNING)."""

    def note(*_signal_args) -> None:
        received.count += 1
        if received.count > 1:
            raise KeyboardInterrupt

    with handling(note):
        yield received


@contextmanager
def signals_raise(received: Received):
    """Each signal is counted in `received` and raises KeyboardInterrupt."""

    def stop(*_signal_args) -> None:
        received.count += 1
        raise KeyboardInterrupt

    with handling(stop):
        yield received
