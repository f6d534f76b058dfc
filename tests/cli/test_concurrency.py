"""Several `dlrun train` processes at once on one embedded SQLite store: all finish, all recorded,
even when they start in an empty folder and race to create the store."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import dlrun_command, mlflow_runs


@pytest.mark.parametrize("processes", [2, 4])
def test_concurrent_runs_on_one_sqlite_store_are_all_recorded(workdir, processes):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    started = [subprocess.Popen([*dlrun_command(), "train", "data=iris", "trainer.max_epochs=2", f"seed={seed}"],
                                cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for seed in range(processes)]
    outputs = [p.communicate(timeout=600) for p in started]
    for process, (out, err) in zip(started, outputs):
        assert process.returncode == 0, err[-3000:]
    ids = {out.strip().splitlines()[-1].removeprefix("run_id: ") for out, _ in outputs}
    client, runs = mlflow_runs(workdir / "mlflow.db")
    assert {r.info.run_id for r in runs} == ids and len(ids) == processes
    for run in runs:
        assert run.info.status == "FINISHED"
        assert {"test/acc", "val/loss", "train/loss"} <= set(run.data.metrics)
        assert run.data.tags.get("dlrun.model_uri")
        assert len(client.get_metric_history(run.info.run_id, "val/loss")) == 2
