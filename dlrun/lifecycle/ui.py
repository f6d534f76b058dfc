"""`dlrun ui`: MLflow's web UI on the store that `dlrun train` uses from this folder."""

from __future__ import annotations

import os
import subprocess
import sys

from dlrun.database import hide_passwords
from dlrun.lifecycle.stored import open_store


def ui_command(host: str, port: int, uri: str | None = None) -> list[str]:
    """The `mlflow ui` command line for the store dlrun would use here."""
    _, store = open_store(uri)
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store, "--host", host, "--port", str(port)]


MODEL_TRAINING_VIEW = "workflowType=machine_learning"  # the query MLflow's UI reads for its view


def experiment_links(client, base_url: str, limit: int = 10) -> list[str]:
    """'NAME: URL' for each experiment dlrun created (tagged EXPERIMENT_KIND), newest first: its runs table
    in MLflow's model-training view. MLflow's UI reads the view from the URL (workflowType) or from the
    browser's last choice in its sidebar, never from the experiment, and starts a new browser on GenAI."""
    from dlrun.tracking.store import EXPERIMENT_KIND

    ((key, value),) = EXPERIMENT_KIND.items()
    found = client.search_experiments(filter_string=f"tags.`{key}` = '{value}'", max_results=limit,
                                      order_by=["creation_time DESC"])
    return [f"{experiment.name}: {base_url}/#/experiments/{experiment.experiment_id}/runs?{MODEL_TRAINING_VIEW}"
            for experiment in found]


def run_ui(host: str, port: int, uri: str | None = None) -> int:
    """Serve the UI until interrupted; MLflow's exit code."""
    command = ui_command(host, port, uri)
    client, _ = open_store(uri)
    at = command.index("--backend-store-uri")
    store, env = command[at + 1], os.environ.copy()
    if hide_passwords(store) != store:  # a password stays out of the process list: MLflow reads it from here
        del command[at:at + 2]
        env["MLFLOW_BACKEND_STORE_URI"] = store
    base_url = f"http://{host}:{port}"
    print(f"MLflow UI on {base_url} for {hide_passwords(store)} (Ctrl-C stops it)", flush=True)
    for line in experiment_links(client, base_url):
        print(f"  {line}", flush=True)
    try:
        return subprocess.call(command, env=env)
    except KeyboardInterrupt:
        return 0
