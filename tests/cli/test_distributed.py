"""DDP on CPU (trainer=ddp_cpu: 2 processes over gloo, the code path of trainer=ddp): one
MLflow run written by rank 0, one output folder, a model that serves like a single-process one;
reproduce, resume and sweeps of DDP runs. GPU presets are tested only where CUDA is present."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from tests.conftest import dlrun_command, mlflow_runs, run_dlrun

DDP = ["trainer=ddp_cpu", "data=iris", "trainer.enable_progress_bar=false"]


def run_id_of(stdout: str) -> str:
    last = stdout.strip().splitlines()[-1]
    assert last.startswith("run_id: "), stdout
    return last.removeprefix("run_id: ")


def test_ddp_cpu_trains_with_one_record_one_folder_and_a_model_that_serves(workdir):
    result = run_dlrun("train", *DDP, "trainer.max_epochs=3", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("run_id: ") == 1  # rank 1 reports nothing
    assert "processes: 2 (DDP); data.batch_size is per process: 16 each, 32 per optimizer step" in result.stdout
    run_id = run_id_of(result.stdout)
    client, runs = mlflow_runs(workdir / "mlflow.db")
    assert [r.info.run_id for r in runs] == [run_id]
    assert runs[0].info.status == "FINISHED"
    assert [p.name for p in (workdir / "outputs").iterdir()] == [run_id]
    assert sorted(p.name for p in (workdir / "outputs" / run_id).iterdir()) == ["checkpoints"]  # no launch file left
    assert len(client.get_metric_history(run_id, "val/loss")) == 3  # one value an epoch, not one per rank

    import mlflow.pyfunc
    import numpy as np
    from sklearn.datasets import load_iris

    model = mlflow.pyfunc.load_model(runs[0].data.tags["dlrun.model_uri"])
    probabilities = np.asarray(model.predict(load_iris().data.astype("float32")))
    assert probabilities.shape == (150, 3)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_a_ddp_run_reproduces_bit_for_bit(workdir):
    first = run_dlrun("train", *DDP, "trainer.max_epochs=2", "tracking.log_model=false", cwd=workdir)
    assert first.returncode == 0, first.stderr
    again = run_dlrun("reproduce", run_id_of(first.stdout), cwd=workdir)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "metrics identical: yes" in again.stdout


def test_an_interrupted_ddp_run_resumes_in_the_same_record(workdir):
    epochs = 100  # far more than the few it trains before the signal; the resume trains the rest
    process = subprocess.Popen([*dlrun_command(), "train", *DDP, f"trainer.max_epochs={epochs}",
                                "tracking.log_model=false"],
                               cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not list((workdir / "outputs").glob("*/checkpoints/last.ckpt")):  # a few epochs in
        assert time.time() < deadline and process.poll() is None, "training never wrote a checkpoint"
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, out + err
    client, (run,) = mlflow_runs(workdir / "mlflow.db")
    assert run.info.status == "KILLED"
    stopped_at = len(client.get_metric_history(run.info.run_id, "val/loss"))
    assert stopped_at < epochs

    resumed = run_dlrun("resume", run.info.run_id, cwd=workdir)
    assert resumed.returncode == 0, resumed.stderr
    assert run_id_of(resumed.stdout) == run.info.run_id
    client, runs = mlflow_runs(workdir / "mlflow.db")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "val/loss"))
    assert steps[-1] == epochs - 1 and set(range(epochs)) <= set(steps)
    # No rank process outlives the run.
    assert "dlrun.training.distributed" not in subprocess.run(["ps", "aux"], capture_output=True, text=True).stdout


def test_a_grid_of_ddp_trials_nests_one_run_per_trial(workdir):
    result = run_dlrun("train", "-m", *DDP, "trainer.max_epochs=2", "tracking.log_model=false", "model.width=8,16",
                       cwd=workdir)
    assert result.returncode == 0, result.stderr
    # A rank that aborts in the interpreter's teardown makes Lightning SIGKILL rank 0 during the next trial.
    assert "terminate called" not in result.stderr
    parent_id = run_id_of(result.stdout)
    _, runs = mlflow_runs(workdir / "mlflow.db")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id]
    assert sorted(c.data.params["model.width"] for c in children) == ["16", "8"]
    assert len(runs) == 3


def test_ddp_presets_without_a_gpu_are_a_config_error(workdir):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    for preset in ("ddp", "multinode"):
        result = run_dlrun("train", f"trainer={preset}", "data=iris", cwd=workdir)
        assert result.returncode == 2, result.stderr
        assert "trainer config does not work here" in result.stderr
    assert not (workdir / "mlflow.db").exists()


def test_ddp_on_gpus_records_one_run(workdir):
    import torch

    if torch.cuda.device_count() < 1:
        pytest.skip("no CUDA device")
    result = run_dlrun("train", "trainer=ddp", "data=iris", "trainer.max_epochs=2", "trainer.enable_progress_bar=false",
                       cwd=workdir)
    assert result.returncode == 0, result.stderr
    _, runs = mlflow_runs(workdir / "mlflow.db")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"


def test_torchrun_starts_the_ranks_and_rank_0_alone_records(workdir):
    """An external launcher (torchrun here; srun alike): every rank runs the user's command."""
    import sys

    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "-m", "dlrun", "train", *DDP, "trainer.max_epochs=2", "tracking.log_model=false"],
                            cwd=workdir, capture_output=True, text=True, timeout=600,
                            env={k: v for k, v in __import__("os").environ.items() if k != "MLFLOW_TRACKING_URI"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("run_id: ") == 1
    _, runs = mlflow_runs(workdir / "mlflow.db")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert [p.name for p in (workdir / "outputs").iterdir()] == [runs[0].info.run_id]


def test_a_study_of_ddp_trials_prunes_on_every_rank(workdir):
    from tests.cli.test_sweeps import good_first_grid_seed

    values = [0.3, 1e-6, 2e-6]
    (workdir / "ddp.yaml").write_text(
        "overrides: [data=iris, trainer=ddp_cpu, trainer.max_epochs=5, tracking.log_model=false]\n"
        "metric: val/acc\nn_trials: 3\nsampler: grid\npruner: {name: median, n_startup_trials: 1}\n"
        f"seed: {good_first_grid_seed(values)}\n"
        f"params:\n  optim: sgd\n  optim.lr: choice({', '.join(map(str, values))})\n")
    result = run_dlrun("sweep", "ddp.yaml", cwd=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    client, runs = mlflow_runs(workdir / "mlflow.db")
    trials = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    states = sorted(r.data.tags["dlrun.trial_state"] for r in trials)
    assert states == ["complete", "pruned", "pruned"]
    for trial in trials:  # a pruned trial stopped on both ranks after its first epoch, and the study went on
        epochs = len(client.get_metric_history(trial.info.run_id, "val/acc"))
        assert epochs == (5 if trial.data.tags["dlrun.trial_state"] == "complete" else 1)
