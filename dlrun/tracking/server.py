"""A remote tracking server: reachable before anything starts, and tolerated when it goes away.

MLflow retries a failed HTTP request for minutes by default; dlrun answers within seconds
instead: an unreachable server before training is a ConfigError (exit 2), and one that goes
away during training turns the record offline (tracking/offline.py) while training goes on.
"""

from __future__ import annotations

import os

from dlrun.database import check_database, is_database_url
from dlrun.errors import ConfigError

REACH_TIMEOUT_S = 5.0


def is_remote(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def prefer_quick_retries(uri: str) -> None:
    """Fewer, shorter HTTP retries than MLflow's default (7, backing off for minutes), unless the user set them."""
    if is_remote(uri):
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")


def check_reachable(uri: str) -> None:
    """A ConfigError within seconds when the tracking server, or the database store, at uri does not answer."""
    if is_database_url(uri):  # postgresql://...: MLflow itself would wait on it for minutes
        check_database(uri, "the MLflow store (tracking.uri / MLFLOW_TRACKING_URI / --tracking-uri)")
        return
    if not is_remote(uri):
        return
    prefer_quick_retries(uri)
    import requests

    try:
        requests.get(f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/search", params={"max_results": 1},
                     timeout=REACH_TIMEOUT_S)
    except requests.RequestException as error:
        reason = "no answer within 5 s" if isinstance(error, requests.Timeout) else type(error).__name__
        raise ConfigError(f"cannot reach the MLflow tracking server at {uri} ({reason}). Start it, or point "
                          "tracking.uri / MLFLOW_TRACKING_URI / --tracking-uri at one that runs; unset them to "
                          "record in ./mlflow.db. Nothing was trained or recorded.") from None


def is_connection_error(error: BaseException) -> bool:
    """True for a server that does not answer (refused, reset, timed out), not for a refused request."""
    import requests
    from mlflow.exceptions import MlflowException

    if isinstance(error, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError)):
        return True
    text = str(error)
    return isinstance(error, MlflowException) and any(
        mark in text for mark in ("Max retries exceeded", "Connection refused", "ConnectionError", "timed out",
                                  "Connection aborted", "RemoteDisconnected"))
