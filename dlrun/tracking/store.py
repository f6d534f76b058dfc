"""The tracking store, shared by runs and sweeps: where it is, its experiments, and its errors.

Many processes may write to one store at once (a sweep's workers, concurrent runs): an
experiment may be created twice, SQLite may be locked for longer than it waits, and a
new SQLite store must not be left half-made by a Ctrl-C.
"""

from __future__ import annotations

import errno
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path


def tracking_uri(configured: str | None) -> str:
    """tracking.uri, else $MLFLOW_TRACKING_URI, else the embedded SQLite store here.

    The default is MLflow's own (sqlite:///mlflow.db) made absolute: MLflow caches
    stores by URI, so a relative one would follow the first folder a process used.
    """
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


@contextmanager
def active_store(uri: str):
    """Point MLflow's fluent API at uri for a moment, then restore what was there.

    mlflow.set_tracking_uri also writes $MLFLOW_TRACKING_URI, which would leak into
    every later run of the same process (tests, sweeps); so both are put back.
    """
    import mlflow
    from mlflow.tracking._tracking_service import utils

    previous, environment = utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
        if environment is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = environment


# The experiment tag MLflow's UI reads for an experiment's kind: model training rather than GenAI.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def experiment_id_of(client, name: str) -> str:
    """The id of the experiment called name, created if missing (tagged as a model-training experiment,
    EXPERIMENT_KIND).

    Two processes may both find it missing and both create it: the loser's create
    fails, and the winner's experiment is taken.
    """
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name, tags=EXPERIMENT_KIND)
    except MlflowException:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


LOCKED_RETRY_DELAYS_S = (0.5, 1, 2, 4, 8, 16)


def is_database_locked(error: BaseException) -> bool:
    """True for SQLite's "database is locked", however MLflow wrapped it."""
    return "database is locked" in str(error)


def retry_while_locked(call, *args, **kwargs):
    """call(*args, **kwargs), tried again with a growing pause while SQLite says "database is locked".

    MLflow's SQLite store waits 20 s for a lock (busy_timeout) and then fails; many processes
    writing to one store (a sweep with n_jobs, concurrent runs) can wait longer than that.
    """
    for delay in LOCKED_RETRY_DELAYS_S:
        try:
            return call(*args, **kwargs)
        except Exception as error:
            if not is_database_locked(error):
                raise
            print(f"dlrun: the tracking store is locked by another process; trying again in {delay} s.",
                  file=sys.stderr)
            time.sleep(delay)
    return call(*args, **kwargs)


def create_sqlite_store_whole(uri: str) -> None:
    """Create a new SQLite store aside and move it in place once its tables exist.

    MLflow builds a new store through a dozen schema migrations; a Ctrl-C among
    them would leave a store that every later command fails on. Any other URI,
    or a store that exists, is left alone.
    """
    if not uri.startswith("sqlite:///"):
        return
    path = Path(uri.removeprefix("sqlite:///"))
    if path.exists():
        return
    from mlflow.tracking import MlflowClient

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    MlflowClient(tracking_uri=f"sqlite:///{partial}").search_experiments(max_results=1)
    try:
        os.link(partial, path)  # atomic, and never replaces a store another process made meanwhile
    except FileExistsError:
        pass
    finally:
        partial.unlink()


STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}
STORAGE_MESSAGES = ("No space left on device", "Disk quota exceeded", "Permission denied", "Read-only file system")


def is_storage_error(error: BaseException) -> bool:
    """True for a write the storage refused: a full disk, a quota, no permission, a read-only file system.

    Locally it is an OSError; from a tracking server's artifact store, only its message tells.
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:  # MLflow may wrap the OSError
        if isinstance(error, OSError) and error.errno in STORAGE_ERRNOS:
            return True
        if any(mark in str(error) for mark in STORAGE_MESSAGES):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False
