"""What MLflow users look for in a dlrun run: its splits as dataset inputs, system metrics, and an
experiment that opens in MLflow's model-training view, checked in MLflow's own UI with headless Chromium."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from types import SimpleNamespace

import numpy as np
import pytest

from tests.conftest import mlflow_runs, run_dlrun

TRAIN = ("train", "data=iris", "trainer.max_epochs=3", "trainer.enable_progress_bar=false", "tracking.log_model=false")
CONTEXTS = {"training": 90, "validation": 30, "testing": 30}  # iris: 150 rows split 0.6 / 0.2 / 0.2


@pytest.fixture(scope="module")
def iris_run(tmp_path_factory):
    """One short iris run with system metrics sampled every second, and its MLflow client."""
    folder = tmp_path_factory.mktemp("ecosystem")
    done = run_dlrun(*TRAIN, "tracking.system_metrics=true", cwd=folder,
                     env={"MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    client, runs = mlflow_runs(folder / "mlflow.db")
    assert len(runs) == 1
    return folder, client, runs[0]


def _inputs(run) -> dict[str, object]:
    """context (training, validation, testing) -> the dataset the run logged for it."""
    return {next(t.value for t in each.tags if t.key == "mlflow.data.context"): each.dataset
            for each in run.inputs.dataset_inputs}


def test_each_split_is_a_dataset_input_named_after_the_data(iris_run):
    _, _, run = iris_run
    datasets = _inputs(run)
    assert set(datasets) == set(CONTEXTS)
    assert {d.name for d in datasets.values()} == {"iris"}
    digests = [d.digest for d in datasets.values()]
    assert len(set(digests)) == 3 and all(re.fullmatch(r"[0-9a-f]{16}", d) for d in digests)
    for context, dataset in datasets.items():
        assert json.loads(dataset.profile)["num_rows"] == CONTEXTS[context]
        assert dataset.source_type == "code" and json.loads(dataset.source) == {"tags": {"dlrun.data": "iris"}}
        columns = [c["name"] for c in json.loads(dataset.schema)["mlflow_colspec"]]
        assert columns == ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)", "target"]


def test_the_digest_comes_from_the_fingerprint_and_the_rows(iris_run):
    from dlrun.data.prepare import load_data
    from dlrun.tracking.datasets import split_digest

    _, _, run = iris_run
    data = load_data({"name": "iris", "batch_size": 16, "val_fraction": 0.2, "test_fraction": 0.2}, 42)
    assert data.fingerprint == run.data.tags["dlrun.data_fingerprint"]
    assert _inputs(run)["training"].digest == split_digest(data.fingerprint, "train", data.split_rows["train"])
    assert split_digest(data.fingerprint, "train", data.split_rows["train"][1:]) != _inputs(run)["training"].digest


def test_a_file_is_the_source_and_wide_data_a_tensor(tmp_path):
    from dlrun.data.prepare import load_data
    from dlrun.tracking.datasets import dataset_inputs

    rows = np.random.default_rng(0).normal(size=(40, 3))
    lines = ["a,b,c,label"] + [f"{x:.3f},{y:.3f},{z:.3f},{'yes' if x > 0 else 'no'}" for x, y, z in rows]
    (tmp_path / "points.csv").write_text("\n".join(lines) + "\n")
    common = {"batch_size": 8, "val_fraction": 0.25, "test_fraction": 0.25}
    csv_cfg = {"name": "csv", **common, "path": str(tmp_path / "points.csv"), "target": "label"}
    (training, *_) = dataset_inputs(csv_cfg, load_data(csv_cfg, 0))
    assert training.dataset.source_type == "local"
    assert json.loads(training.dataset.source) == {"uri": str(tmp_path / "points.csv")}
    assert [c["name"] for c in json.loads(training.dataset.schema)["mlflow_colspec"]] == ["a", "b", "c", "label"]

    digits_cfg = {"name": "digits", **common}
    (training, *_) = dataset_inputs(digits_cfg, load_data(digits_cfg, 0))
    tensors = json.loads(training.dataset.schema)["mlflow_tensorspec"]
    (features,), (target,) = json.loads(tensors["features"]), json.loads(tensors["targets"])
    assert (features["name"], features["tensor-spec"]["shape"]) == ("features", [-1, 1, 8, 8])
    assert (target["name"], target["tensor-spec"]) == ("target", {"dtype": "int64", "shape": [-1]})

    blobs_cfg = {"name": "blobs", **common, "n_samples": 60}
    (training, *_) = dataset_inputs(blobs_cfg, load_data(blobs_cfg, 0))
    assert json.loads(training.dataset.source)["tags"]["dlrun.data"] == "blobs"
    assert json.loads(training.dataset.source)["tags"]["n_samples"] == "60"


def test_system_metrics_are_logged_while_it_trains(iris_run):
    _, client, run = iris_run
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(run.data.metrics)
    assert client.get_metric_history(run.info.run_id, "system/cpu_utilization_percentage")


def test_system_metrics_off_and_a_resumed_run_watched_again():
    from dlrun.config.compose import compose
    from dlrun.config.validate import validate
    from dlrun.data.prepare import load_data
    from dlrun.training.recording import start_record

    class Record:  # what start_record asks of a RunRecord
        def __init__(self):
            self.calls = []

        def __getattr__(self, name):
            return lambda *args, **kwargs: self.calls.append((name, args, kwargs))

    data = load_data({"name": "iris", "batch_size": 16, "val_fraction": 0.2, "test_fraction": 0.2}, 42)
    for system_metrics, reopen, expected in ((False, None, []), (True, "0" * 32, [{"resume": True}])):
        run = validate(compose(["data=iris", f"tracking.system_metrics={str(system_metrics).lower()}"]))
        record = Record()
        start_record(record, run, data, reopen, None)
        assert [kwargs for name, _, kwargs in record.calls if name == "watch_system"] == expected
        assert [name for name, _, _ in record.calls if name == "log_inputs"] == ([] if reopen else ["log_inputs"])


def test_while_the_server_is_gone_inputs_are_noted_and_no_monitor_starts(iris_run, tmp_path):
    from dlrun.tracking.record import RunRecord

    folder, _, _ = iris_run  # its store exists: no new one to build
    record = RunRecord(f"sqlite:///{folder / 'mlflow.db'}", "dlrun", output_dir=tmp_path / "outputs")
    record.create("offline", {}, {}, source="dlrun train")
    record.buffer.go_offline(ConnectionError("refused"))
    record.log_inputs([])
    record.watch_system(resume=False)
    assert record._system is None
    assert "not sent: dataset inputs" in record.note()
    record.end("FINISHED")


def test_reproduce_compares_digests_and_falls_back_to_the_old_tag(iris_run):
    from dlrun.lifecycle.reproduce import _data_drift

    _, client, run = iris_run
    same = SimpleNamespace(run_id=run.info.run_id, data_fingerprint=run.data.tags["dlrun.data_fingerprint"])
    assert _data_drift(SimpleNamespace(run=run, client=client), same) == []
    old = client.create_run(run.info.experiment_id, tags={"dlrun.data_fingerprint": "f" * 64})
    old = client.get_run(old.info.run_id)
    assert _data_drift(SimpleNamespace(run=old, client=client), same) == [
        ("dlrun.data_fingerprint", "f" * 64, same.data_fingerprint)]
    drift = _data_drift(SimpleNamespace(run=run, client=client), SimpleNamespace(run_id=old.info.run_id))
    assert [(what, now) for what, _, now in drift] == [
        (f"dataset digest ({context})", "(none)") for context in ("testing", "training", "validation")]


def test_the_experiment_is_tagged_for_model_training_and_dlrun_ui_links_its_runs(iris_run):
    from dlrun.lifecycle.ui import experiment_links

    _, client, run = iris_run
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert experiment_links(client, "http://127.0.0.1:5000") == [
        f"dlrun: http://127.0.0.1:5000/#/experiments/{experiment.experiment_id}/runs?workflowType=machine_learning"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _page_text(url: str, expected: str) -> str:
    """The text of the page at url as headless Chromium renders it, tried until it holds `expected`."""
    text = ""
    for _ in range(3):
        profile = subprocess.run(["mktemp", "-d"], capture_output=True, text=True).stdout.strip()
        try:
            dom = subprocess.run(
                ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", "--dump-dom", "--virtual-time-budget=20000", url],
                capture_output=True, text=True, timeout=120).stdout
        finally:
            shutil.rmtree(profile, ignore_errors=True)
        text = re.sub(r"<style.*?</style>|<script.*?</script>", " ", dom, flags=re.S)
        text = html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text)))
        if expected in text:
            break
    return text


@pytest.fixture(scope="module")
def ui_server(iris_run):
    """`dlrun ui`'s MLflow command on the run's store, on a free loopback port, one worker; for Chromium, so
    skipped without it, except where DLRUN_REQUIRE_CHROMIUM is set (CI installs it)."""
    from dlrun.lifecycle.ui import ui_command

    if shutil.which("chromium") is None:
        assert not os.environ.get("DLRUN_REQUIRE_CHROMIUM"), "DLRUN_REQUIRE_CHROMIUM is set but chromium is absent"
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    folder, _, _ = iris_run
    port = _free_port()
    command = ui_command("127.0.0.1", port, f"sqlite:///{folder / 'mlflow.db'}")
    server = subprocess.Popen([*command, "--workers", "1"], cwd=folder, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        import requests

        for _ in range(180):
            try:
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            assert server.poll() is None, "the MLflow UI exited"
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def test_mlflow_ui_shows_the_runs_table_with_datasets_and_the_run_page(iris_run, ui_server):
    from dlrun.lifecycle.ui import experiment_links

    _, client, run = iris_run
    ((link,),) = [line.split(": ", 1)[1:] for line in experiment_links(client, ui_server)]
    runs_page = _page_text(link, "iris (")
    assert "Runs - Experiment" in runs_page and "Dataset" in runs_page and run.info.run_name in runs_page
    training = _inputs(run)["training"].digest
    assert f"iris ({training}) training" in runs_page
    assert "Usage Quality Tool calls" not in runs_page  # the GenAI overview's headings

    run_page = _page_text(link.replace("/runs?", f"/runs/{run.info.run_id}?"), "system/cpu_utilization_percentage")
    assert "System metrics" in run_page and "system/cpu_utilization_percentage" in run_page
    assert f"Datasets iris ({training}) training" in run_page
