"""A tracking server that stops answering while a run trains: what waits, what is re-sent, what is kept locally.

Training must not stop because the server went away. While it does not answer, each
epoch's metrics wait here and are sent once it answers again (one try every
RETRY_EVERY_S); other writes are noted as not sent. What still waits when the run
ends is written to the run's local folder, beside its checkpoints.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from dlrun.tracking.server import is_connection_error
from dlrun.tracking.store import retry_while_locked


class OfflineBuffer:
    """The writes of one run's record that a gone server could not take, and when to try again."""

    RETRY_EVERY_S = 30.0
    METRICS_PER_BATCH = 1000  # MLflow's limit for one log_batch

    def __init__(self, uri: str, client):
        """Args:
        uri: the tracking server's URI, for messages.
        client: the MlflowClient the record writes through.
        """
        self.uri = uri
        self.client = client
        self.local_dir: Path | None = None  # the run's local folder (OUTPUT_DIR/RUN_ID), where what waits is saved
        self.offline_since: str | None = None  # why the server stopped answering, while it does not
        self.saved_locally: list[str] = []  # what went to local files instead of the server, for the note
        self._unsent: list[tuple[str, int, int, dict[str, float]]] = []  # (run id, step, time ms, metrics)
        self._not_sent: list[str] = []  # artifacts and tags given up on
        self._retry_at = 0.0

    def add_metrics(self, run_id: str, metrics: dict[str, float], step: int, send: bool = True) -> None:
        """Queue one step's metrics (timestamped now) and, when send, every queued step the server takes now."""
        from mlflow.utils.time import get_current_time_millis

        self._unsent.append((run_id, step, get_current_time_millis(), {k: float(v) for k, v in metrics.items()}))
        if send:
            self.flush()

    def flush(self) -> None:
        """Send every queued step the server takes now."""
        if self._unsent and self.server_answers():
            self._send_metrics()

    def send(self, what: str, call, *args, **kwargs) -> None:
        """call(*args, **kwargs), a write that must not stop training: while the server is gone, `what` is
        noted as not sent. Other errors (a locked store, after its retries; a refused request) are raised."""
        if not self.server_answers():
            self._not_sent.append(what)
            return
        try:
            retry_while_locked(call, *args, **kwargs)
        except Exception as error:
            if not is_connection_error(error):
                raise
            self.go_offline(error)
            self._not_sent.append(what)

    def server_answers(self) -> bool:
        """True while the server answers; offline, one attempt every RETRY_EVERY_S to send what waits."""
        if self.offline_since is None:
            return True
        if time.monotonic() < self._retry_at:
            return False
        reason, self.offline_since = self.offline_since, None
        self._send_metrics()
        if self.offline_since is None:
            print(f"dlrun: the tracking server at {self.uri} answers again; the kept metrics are sent.",
                  file=sys.stderr)
            return True
        self.offline_since = reason  # still gone: the first reason is the one to report
        return False

    def go_offline(self, error: BaseException) -> None:
        """Note that the server stopped answering (warning once) and wait RETRY_EVERY_S before the next try."""
        if self.offline_since is None:
            print(f"dlrun: warning: the tracking server at {self.uri} stopped answering "
                  f"({type(error).__name__}). Training goes on; metrics are kept and sent when it answers "
                  f"again; checkpoints stay in {self.local_dir or 'the output folder'}.", file=sys.stderr)
        self.offline_since = f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"
        self._retry_at = time.monotonic() + self.RETRY_EVERY_S

    def try_now(self) -> None:
        """Let the next write try the server at once (the run's last writes should not wait out the pause)."""
        self._retry_at = 0.0

    def save_unsent(self, run_id: str | None, status: str) -> None:
        """Write the metrics that still wait, and the run's final status, to unsent_record.json in local_dir."""
        folder = self.local_dir or Path.cwd()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "unsent_record.json"
        path.write_text(json.dumps({"tracking_uri": self.uri, "run_id": run_id, "status": status,
                                    "metrics": [{"step": s, "timestamp": t, "values": m}
                                                for _, s, t, m in self._unsent],
                                    "not_sent": self._not_sent}, indent=2))
        self.saved_locally.append(f"{len(self._unsent)} epochs of metrics and the run's status ({status}) in {path}")

    def note(self) -> str | None:
        """What did not reach the tracking server, and where it is instead; None when all did."""
        if not (self.saved_locally or self._not_sent):
            return None
        parts = [f"the tracking server at {self.uri} stopped answering ({self.offline_since or 'then came back'})"]
        parts += [f"saved locally: {', '.join(self.saved_locally)}"] if self.saved_locally else []
        parts += [f"not sent: {', '.join(self._not_sent)}"] if self._not_sent else []
        return "; ".join(parts)

    def _send_metrics(self) -> None:
        from mlflow.entities import Metric

        try:
            while self._unsent:
                # Queued steps of one run go in one log_batch, up to MLflow's 1000 metrics a batch.
                run_id, taken, batch = self._unsent[0][0], 0, []
                for queued_run, step, when, metrics in self._unsent:
                    if queued_run != run_id or (batch and len(batch) + len(metrics) > self.METRICS_PER_BATCH):
                        break
                    batch += [Metric(k, v, when, step) for k, v in metrics.items()]
                    taken += 1
                retry_while_locked(self.client.log_batch, run_id, metrics=batch)
                del self._unsent[:taken]
        except Exception as error:
            if not is_connection_error(error):
                raise
            self.go_offline(error)
