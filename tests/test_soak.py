"""bench/soak.py at a tiny size: it makes its runs in one process, checks them and writes its tables;
and each of its checks fails when what it checks is broken.

The full soak (200 runs) is its own command (README, Performance); no figure is asserted here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import soak

REPO = Path(__file__).resolve().parent.parent

RUNS = 5


@pytest.fixture(scope="module")
def soaked(tmp_path_factory):
    """`python -m bench.soak` with 5 runs, its work folder kept so that the checks can be tried on a broken store."""
    folder = tmp_path_factory.mktemp("soak")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    done = subprocess.run([sys.executable, "-m", "bench.soak", "--runs", str(RUNS), "--settle", "2",
                           "--out", str(folder / "out"), "--work", str(folder / "work")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=1800, check=False)
    return folder, done


def test_the_soak_makes_its_runs_checks_them_and_writes_its_tables(soaked):
    folder, done = soaked
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert sorted(p.name for p in (folder / "out").iterdir()) == ["soak.json", "soak.md"]
    results = json.loads((folder / "out" / "soak.json").read_text())
    assert results["ok"] and results["runs"] == RUNS
    assert set(results["checks"]) == {"exits", "memory", "store"}
    assert all(check["ok"] for check in results["checks"].values())
    assert results["checks"]["store"]["runs"] == RUNS
    made = results["made"]
    assert [m["index"] for m in made] == list(range(RUNS)) and all(m["rss_mib"] > 0 for m in made)
    assert len({m["run_id"] for m in made}) == RUNS
    table = (folder / "out" / "soak.md").read_text()
    assert "| memory | ok |" in table and "| store | ok |" in table and f"{RUNS} runs" in table
    assert "memory: ok" in done.stdout and "store: ok" in done.stdout


def test_the_memory_check_fails_above_its_bound(soaked):
    folder, _ = soaked
    made = json.loads((folder / "out" / "soak.json").read_text())["made"]
    growth = made[-1]["rss_mib"] - made[1]["rss_mib"]
    assert soak.check_memory(made, 2, growth)["ok"]
    failed = soak.check_memory(made, 2, growth - 0.5)
    assert not failed["ok"] and f"growth {growth:+.1f} MiB" in failed["detail"]
    assert not soak.check_memory(made[:2], 2, 1000)["ok"]  # too few runs to judge


def test_the_exit_check_fails_on_a_failed_run():
    made = [{"index": 0, "exit_code": 0, "run_id": "a"}, {"index": 1, "exit_code": 2, "run_id": None}]
    check = soak.check_exits(made)
    assert not check["ok"] and "1 of 2 runs exited 0" in check["detail"]


def test_the_store_check_fails_on_each_kind_of_damage(soaked):
    from mlflow.tracking import MlflowClient

    folder, _ = soaked
    uri = f"sqlite:///{folder / 'work' / 'mlflow.db'}"
    run_ids = [m["run_id"] for m in json.loads((folder / "out" / "soak.json").read_text())["made"]]
    assert soak.check_store(uri, run_ids)["ok"]
    client = MlflowClient(tracking_uri=uri)

    missing = soak.check_store(uri, [*run_ids, "f" * 32])
    assert not missing["ok"] and "missing 1" in missing["problems"][0]

    client.set_terminated(run_ids[0], status="FAILED")
    client.delete_tag(run_ids[1], "dlrun.model_uri")
    client.set_tag(run_ids[2], "dlrun.model_uri", client.get_run(run_ids[3]).data.tags["dlrun.model_uri"])
    model_id = client.get_run(run_ids[4]).data.tags["dlrun.model_uri"].removeprefix("models:/")
    Path(client.get_logged_model(model_id).artifact_location.removeprefix("file://"), "MLmodel").unlink()
    stray = client.create_run(client.get_run(run_ids[0]).info.experiment_id).info.run_id
    damaged = soak.check_store(uri, run_ids)
    problems = "\n".join(damaged["problems"])
    assert not damaged["ok"]
    assert f"run {run_ids[0]}: status FAILED" in problems
    assert f"run {run_ids[1]}: no dlrun.model_uri tag" in problems
    assert f"run {run_ids[2]}: model models:/" in problems and f"was logged by run {run_ids[3]}" in problems
    assert f"run {run_ids[4]}: model models:/{model_id} has no MLmodel file" in problems
    assert "extra 1" in problems
    assert f"run {stray}: status RUNNING" in problems and "lacks metrics" in problems
