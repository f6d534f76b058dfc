"""What SIGINT and SIGTERM do at each stage of a run.

In fit they ask for a stop at the next batch boundary, where a checkpoint is saved
(stop_on_signals); while the MLflow run is created they wait, so that no run is
half-written (signals_deferred); elsewhere they raise KeyboardInterrupt, also for
SIGTERM, which would otherwise end the process at once (signals_raise); while a
KILLED run is closed they are ignored (signals_ignored).
"""

from __future__ import annotations

import signal


class stop_on_signals:
    """SIGINT and SIGTERM ask `stopper` to stop at the next batch boundary."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, stopper):
        self.stopper = stopper
        self.previous: dict = {}

    def __enter__(self):
        try:
            self.previous = {s: signal.signal(s, self.stopper.request) for s in self.SIGNALS}
        except ValueError:  # not the main thread: leave signals alone
            self.previous = {}
        return self

    def __exit__(self, *exc):
        for number, handler in self.previous.items():
            signal.signal(number, handler)
        return False


class signals_deferred(stop_on_signals):
    """SIGINT and SIGTERM are noted (`received`) and wait until the block is done."""

    def __init__(self):
        super().__init__(self)
        self.received = False

    def request(self, *_signal_args) -> None:
        self.received = True


class signals_raise(stop_on_signals):
    """SIGINT and SIGTERM raise KeyboardInterrupt (SIGTERM would otherwise end the process at once)."""

    def __init__(self):
        super().__init__(self)
        self.received = False

    def request(self, *_signal_args) -> None:
        self.received = True
        raise KeyboardInterrupt


class signals_ignored(stop_on_signals):
    """SIGINT and SIGTERM are ignored for the block."""

    def __init__(self):
        super().__init__(self)

    def request(self, *_signal_args) -> None:
        pass
