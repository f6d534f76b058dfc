"""MLflow's own system metrics for a run while it trains (`tracking.system_metrics`).

MLflow's SystemMetricsMonitor samples CPU, memory, disk and network (and NVIDIA or AMD GPUs where
their libraries find one) in a thread of its own and logs them as `system/...` metrics, one step per
sample. MLflow's variables set how often: MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL (seconds, 10 by
default) and MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING (samples averaged into one step, 1).
The monitor writes through its own client; while a tracking server is gone it stops on its own, and
dlrun does not wait for it.
"""

from __future__ import annotations

import logging

PREFIX = "system/"  # how MLflow names its system metrics


def model_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """metrics without MLflow's system metrics: those describe the machine, not the model, so that
    reproduce and diff never compare them."""
    return {name: value for name, value in metrics.items() if not name.startswith(PREFIX)}


class SystemMetrics:
    """The monitor of one run: started once the run exists, stopped before the run is closed (a
    closed run takes no more metrics)."""

    def __init__(self, run_id: str, uri: str, resume: bool):
        """Start sampling.

        Args:
            run_id: the MLflow run to log to.
            uri: the tracking URI.
            resume: the run is continued (dlrun resume): steps follow its last system metrics.
        """
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        # Its start and a missing GPU library are INFO lines that would mix with dlrun's own output.
        logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
        self._monitor = SystemMetricsMonitor(run_id, resume_logging=resume, tracking_uri=uri)
        self._monitor.start()

    def stop(self, wait: bool) -> None:
        """Stop sampling; with `wait`, its last samples are sent first (no wait while the server is gone)."""
        if wait:
            self._monitor.finish()
            self._last_sample()
        else:  # its thread must not go on logging into a closed run (a sweep or a notebook goes on)
            self._monitor._shutdown_event.set()

    def _last_sample(self) -> None:
        """One sample as the run ends: MLflow's loop publishes only after a full interval, so a run shorter
        than one (a quick trial) would otherwise record no system metrics at all."""
        monitor = self._monitor
        try:
            monitor.collect_metrics()
            monitor.publish_metrics(monitor.aggregate_metrics())
            monitor.mlflow_logger.flush()
        except Exception:  # a closing run must not fail on a sample of the machine
            logging.getLogger(__name__).debug("no last system-metrics sample", exc_info=True)
