"""Shared fixtures: each test works in its own empty folder with its own MLflow store."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """An empty current folder, with no tracking server configured."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DLRUN_PLUGINS", raising=False)  # a plugin a test loaded stays its own
    return tmp_path


def dlrun_command() -> list[str]:
    """The installed console script where there is one, else `python -m dlrun`."""
    script = shutil.which("dlrun")
    return [script] if script else [sys.executable, "-m", "dlrun"]


def run_dlrun(*args: str, cwd: Path, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run dlrun as a user would, in its own process."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "DLRUN_PLUGINS")}
    full_env.update(env or {})
    return subprocess.run([*dlrun_command(), *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def mlflow_runs(store: Path, experiment: str = "dlrun"):
    """All runs of an experiment in the SQLite store at `store`."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    found = client.get_experiment_by_name(experiment)
    return client, (client.search_runs([found.experiment_id]) if found else [])


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL server (tests/postgres.py), started once per test process.

    Skipped, with the reason, where none can be started (no PostgreSQL installed, no psycopg); where
    $DLRUN_REQUIRE_POSTGRES=1 (CI sets it), that fails the tests instead.
    """
    from tests.postgres import PostgresServer, PostgresUnavailable

    try:
        import psycopg  # noqa: F401  (the driver SQLAlchemy uses for postgresql://)

        server = PostgresServer()
    except (ImportError, PostgresUnavailable) as why:
        reason = f"PostgreSQL cannot be started here: {why}"
        if os.environ.get("DLRUN_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{reason} (DLRUN_REQUIRE_POSTGRES=1 requires it)", pytrace=False)
        pytest.skip(reason)
    yield server
    server.close()
