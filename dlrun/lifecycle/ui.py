"""`dlrun ui`: MLflow's web UI on the store that `dlrun train` uses from this folder."""

from __future__ import annotations

import os
import subprocess
import sys

from dlrun.lifecycle.stored import open_store


def ui_command(host: str, port: int, uri: str | None = None) -> list[str]:
    """The `mlflow ui` command line for the store dlrun would use here."""
    _, store = open_store(uri)
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store, "--host", host, "--port", str(port)]


def run_ui(host: str, port: int, uri: str | None = None) -> int:
    """Serve the UI until interrupted; MLflow's exit code."""
    command = ui_command(host, port, uri)
    print(f"MLflow UI on http://{host}:{port} for {command[5]} (Ctrl-C stops it)", flush=True)
    try:
        return subprocess.call(command, env=os.environ.copy())
    except KeyboardInterrupt:
        return 0
