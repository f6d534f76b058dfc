"""Plugins as a user meets them: the example package installed (entry point) and a single file (--plugin,
$DLRUN_PLUGINS), in train, grids with --jobs, studies with n_jobs, DDP, reproduce and the served model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import mlflow_runs, run_dlrun

REPOSITORY = Path(__file__).resolve().parents[2]
EXAMPLE = REPOSITORY / "examples" / "plugin"
FILE_LAYERS = "model.layers=[{type: linear, out_features: 16}, {type: scaled_tanh, scale: 2.0}, {type: linear}]"
QUICK = ["data=iris", "trainer.max_epochs=1", "data.batch_size=64"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """The example plugin installed into a folder of its own, and the environment that sees it."""
    target = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--target", str(target), str(EXAMPLE)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return {"PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}


@pytest.fixture(scope="module")
def example_run(installed, tmp_path_factory) -> tuple[Path, str]:
    """One digits run of the example plugin's model=se_cnn with loss=focal, shared by the tests below."""
    folder = tmp_path_factory.mktemp("example")
    done = run_dlrun("train", "model=se_cnn", "loss=focal", "model.width=8", "trainer.max_epochs=1",
                     "data.batch_size=128", "metrics=[f1]", cwd=folder, env=installed)
    assert done.returncode == 0, done.stderr
    return folder, done.stdout.strip().splitlines()[-1].removeprefix("run_id: ")


@pytest.fixture(scope="module")
def file_plugin(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("file_plugin")
    return Path(shutil.copy(EXAMPLE / "my_layers.py", folder / "my_layers.py"))


@pytest.fixture(scope="module")
def file_run(file_plugin, tmp_path_factory) -> tuple[Path, str, str]:
    """One iris run with the single-file plugin's layer and callback, named by --plugin."""
    folder = tmp_path_factory.mktemp("file_run")
    done = run_dlrun("train", "--plugin", str(file_plugin), *QUICK, FILE_LAYERS, "callbacks=[{name: epoch_timer}]",
                     cwd=folder)
    assert done.returncode == 0, done.stderr
    return folder, done.stdout.strip().splitlines()[-1].removeprefix("run_id: "), done.stdout


def test_the_installed_plugin_is_listed_and_its_options_marked(installed, tmp_path):
    listed = run_dlrun("plugins", cwd=tmp_path, env=installed)
    assert listed.returncode == 0, listed.stderr
    assert "example  0.1.0  (entry point: dlrun_example_plugin)" in listed.stdout
    assert "layer type: se_block" in listed.stdout and "loss: focal" in listed.stdout
    models = run_dlrun("configs", "model", cwd=tmp_path, env=installed)
    assert "[plugin example]" in next(line for line in models.stdout.splitlines() if "se_cnn" in line)
    assert "se_cnn" not in run_dlrun("configs", "model", cwd=tmp_path).stdout  # not installed: not there


def test_a_run_of_the_installed_plugin_records_it_and_logs_its_metric(example_run):
    folder, run_id = example_run
    client, _ = mlflow_runs(folder / "mlflow.db")
    run = client.get_run(run_id)
    (plugin,) = json.loads(run.data.tags["dlrun.plugins"])
    assert (plugin["name"], plugin["version"], plugin["distribution"]) == ("example", "0.1.0", "dlrun-example-plugin")
    assert run.data.params["model"] == "se_cnn" and run.data.params["loss"] == "focal"
    assert 0 <= run.data.metrics["test/f1"] <= 1


def test_the_served_model_loads_where_the_plugin_is_not_installed(example_run):
    folder, run_id = example_run
    script = (f"import mlflow, numpy as np, sys\nmlflow.set_tracking_uri('sqlite:///mlflow.db')\n"
              f"uri = mlflow.get_run('{run_id}').data.tags['dlrun.model_uri']\n"
              "proba = mlflow.pyfunc.load_model(uri).predict(np.random.default_rng(0).random((3, 64), dtype='float32'))\n"
              "assert not any(m.startswith('dlrun_example_plugin') for m in sys.modules)\n"
              "print(np.asarray(proba).sum(axis=1).round(4).tolist())")
    done = subprocess.run([sys.executable, "-c", script], cwd=folder, capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[1.0, 1.0, 1.0]"


def test_reproduce_without_the_plugin_names_it_and_records_nothing(example_run):
    folder, run_id = example_run
    before = len(mlflow_runs(folder / "mlflow.db")[1])
    done = run_dlrun("reproduce", run_id, cwd=folder)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert (f"run {run_id} was trained with the plugin 'example' (the run records version '0.1.0', from "
            "'dlrun_example_plugin'), which is not loaded here: install it (the run names the distribution "
            "'dlrun-example-plugin': pip install dlrun-example-plugin), or name its module: --plugin "
            "'dlrun_example_plugin'.") in done.stderr
    assert len(mlflow_runs(folder / "mlflow.db")[1]) == before


def test_resume_and_eval_without_the_plugin_name_it_and_record_nothing(file_run):
    folder, run_id, _ = file_run
    before = len(mlflow_runs(folder / "mlflow.db")[1])
    for command in (["resume", run_id, "trainer.max_epochs=2"], ["eval", run_id]):
        done = run_dlrun(*command, cwd=folder)
        assert done.returncode == 2 and "Traceback" not in done.stderr, command
        assert f"run {run_id} was trained with the plugin 'my_layers'" in done.stderr and "--plugin '" in done.stderr
    assert len(mlflow_runs(folder / "mlflow.db")[1]) == before


def test_a_file_plugin_trains_with_its_layer_and_callback(file_run):
    folder, run_id, output = file_run
    assert "epoch 0: " in output  # the plugin's callback ran
    client, _ = mlflow_runs(folder / "mlflow.db")
    (plugin,) = json.loads(client.get_run(run_id).data.tags["dlrun.plugins"])
    assert plugin["name"] == "my_layers" and plugin["version"].startswith("sha256:")


def test_reproduce_of_a_file_plugin_run_is_exact_and_a_changed_plugin_is_drift(file_run, file_plugin):
    folder, run_id, _ = file_run
    same = run_dlrun("reproduce", run_id, "--plugin", str(file_plugin), cwd=folder)
    assert same.returncode == 0, same.stderr
    assert "metrics identical: yes" in same.stdout and "plugin my_layers" not in same.stdout
    changed = file_plugin.parent / "changed" / "my_layers.py"
    changed.parent.mkdir(exist_ok=True)
    changed.write_text(file_plugin.read_text() + "\n# a comment changes the file's digest\n")
    drifted = run_dlrun("reproduce", run_id, cwd=folder, env={"DLRUN_PLUGINS": str(changed)})
    assert drifted.returncode == 0, drifted.stderr
    assert "drift since the original run:" in drifted.stdout and "  plugin my_layers: sha256:" in drifted.stdout


def test_a_broken_plugin_stops_the_command_before_any_run(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('the plugin is broken')\n")
    done = run_dlrun("train", "--plugin", str(broken), *QUICK, cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == ("error: the plugin 'broken' (" + str(broken) + ") failed to import: RuntimeError: "
                                   "the plugin is broken. Fix the plugin, or stop loading it (remove it from "
                                   "--plugin, $DLRUN_PLUGINS, or uninstall it).")
    assert not (tmp_path / "mlflow.db").exists()


def test_a_grid_with_jobs_runs_a_plugin_layer_in_its_worker_processes(file_plugin, tmp_path):
    done = run_dlrun("train", "-m", "--jobs", "2", "--plugin", str(file_plugin), *QUICK, FILE_LAYERS,
                     "optim.lr=0.01,0.02", cwd=tmp_path)
    assert done.returncode == 0, done.stderr + done.stdout
    _, runs = mlflow_runs(tmp_path / "mlflow.db")
    trials = [run for run in runs if "dlrun.plugins" in run.data.tags and run.data.params.get("optim.lr")]
    assert sorted(run.data.params["optim.lr"] for run in trials) == ["0.01", "0.02"]
    assert all(run.info.status == "FINISHED" and "my_layers" in run.data.tags["dlrun.plugins"] for run in trials)
    assert all(run.data.tags.get("dlrun.sweep") for run in trials)  # the tag key runs made before carry too


def test_a_study_with_two_worker_processes_runs_a_plugin_layer(file_plugin, tmp_path):
    sweep = tmp_path / "plugin_study.yaml"
    sweep.write_text("# A study over a plugin layer's option\n"
                     f"overrides: [data=iris, 'trainer.max_epochs=1', 'data.batch_size=64', '{FILE_LAYERS}']\n"
                     "metric: val/loss\ndirection: minimize\nn_trials: 2\nn_jobs: 2\nsampler: random\n"
                     "params:\n  model.layers.1.scale: interval(0.5, 3.0)\n")
    done = run_dlrun("sweep", str(sweep), "--plugin", str(file_plugin), cwd=tmp_path)
    assert done.returncode == 0, done.stderr + done.stdout
    _, runs = mlflow_runs(tmp_path / "mlflow.db")
    trials = [run for run in runs if "dlrun.plugins" in run.data.tags and "model.layers.1.scale" in str(run.data.params)]
    assert len(trials) == 2 and all(run.info.status == "FINISHED" for run in trials)


def test_ddp_ranks_load_the_plugin_of_rank_0(file_plugin, tmp_path):
    done = run_dlrun("train", "--plugin", str(file_plugin), *QUICK, FILE_LAYERS, "trainer=ddp_cpu", cwd=tmp_path)
    assert done.returncode == 0, done.stderr + done.stdout
    _, runs = mlflow_runs(tmp_path / "mlflow.db")
    (run,) = runs  # recorded once, by rank 0
    assert run.info.status == "FINISHED" and "my_layers" in run.data.tags["dlrun.plugins"]
