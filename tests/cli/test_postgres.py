"""dlrun against a real PostgreSQL (a throwaway server, tests/postgres.py): sweep workers sharing one study,
an `mlflow server` whose backend store is PostgreSQL, the database stopped in the middle of a sweep, and
PostgreSQL URLs that do not answer or carry a wrong password. No password ever shows, in any output or record.

All PostgreSQL tests live in this file, so that under pytest-xdist (--dist loadfile) one worker starts the
server once.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dlrun.cli import app
from tests.claim_gate import start_with_every_process_claiming
from tests.cli.test_tracking_server import Server
from tests.conftest import dlrun_command, mlflow_runs, run_dlrun
from tests.postgres import PASSWORD, USER

FAST = ["data=iris", "trainer.enable_progress_bar=false"]
SWEEP = """
overrides: [data=iris, trainer.max_epochs={epochs}, tracking.log_model=false]
metric: val/acc
n_trials: {n_trials}
sampler: random
params:
  optim.lr: tag(log, interval(1e-3, 1e-1))
"""
runner = CliRunner()


def load_study(url: str, name: str):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=url)


def run_id_of(stdout: str) -> str:
    last = stdout.strip().splitlines()[-1]
    assert last.startswith("run_id: "), stdout
    return last.removeprefix("run_id: ")


def assert_no_password(*texts: str) -> None:
    for text in texts:
        assert PASSWORD not in text, text


def assert_no_password_recorded(runs) -> None:
    """Neither a param nor a tag of any run holds the password (the storage URL, the command line)."""
    for run in runs:
        assert_no_password(*run.data.params.values(), *run.data.tags.values())


def worker_logs(folder: Path, name: str) -> list[str]:
    logs = sorted((folder / "outputs" / "sweeps" / name).glob("worker-*.log"))
    assert len(logs) == 1, logs  # the command itself is the other process
    return [log.read_text() for log in logs]


def start_two_workers(folder: Path, sweep: str, url: str) -> subprocess.Popen:
    """`dlrun sweep SWEEP --storage URL --n-jobs 2` (the command and one worker process), its first trials
    claimed only once both processes wait for the claim lock."""
    from dlrun.tuning.budget import lock_path_for

    return start_with_every_process_claiming([*dlrun_command(), "sweep", sweep, "--storage", url, "--n-jobs", "2"],
                                             folder, lock_path_for(url, Path(sweep).stem), processes=2)


def test_two_workers_share_one_postgresql_study_and_run_each_trial_once(postgres, workdir):
    url = postgres.create_database("shared_study")
    (workdir / "shared.yaml").write_text(SWEEP.format(epochs=1, n_trials=3))
    process = start_two_workers(workdir, "shared.yaml", url)
    out, err = process.communicate(timeout=600)
    result = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"in postgresql://{USER}:***@127.0.0.1:{postgres.port}/shared_study" in result.stdout
    study = load_study(url, "shared")
    assert [t.number for t in study.trials] == [0, 1, 2]  # exactly n_trials: no surplus, none lost
    assert {t.state.name for t in study.trials} == {"COMPLETE"}
    assert len({t.user_attrs["dlrun_owner"] for t in study.trials}) == 2  # both processes took trials
    _, runs = mlflow_runs(workdir / "mlflow.db")
    parent_id = run_id_of(result.stdout)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id]
    assert sorted(int(c.data.tags["dlrun.trial_number"]) for c in children) == [0, 1, 2]  # none twice
    assert {c.info.run_id for c in children} == {t.user_attrs["mlflow_run_id"] for t in study.trials}
    assert_no_password(result.stdout, result.stderr, *worker_logs(workdir, "shared"))
    assert_no_password_recorded(runs)
    (parent,) = [r for r in runs if r.info.run_id == parent_id]
    assert parent.data.params["storage"] == f"postgresql://{USER}:***@127.0.0.1:{postgres.port}/shared_study"


@pytest.fixture(scope="module")
def postgres_tracking_server(postgres, tmp_path_factory):
    """An `mlflow server` whose backend store is a PostgreSQL database; its URL beside it."""
    url = postgres.create_database("mlflow_store")
    server = Server(tmp_path_factory.mktemp("mlflow-on-postgres"), backend=url)
    yield server, url
    server.stop()


def test_train_runs_reproduce_and_predict_against_a_server_on_postgresql(postgres_tracking_server, workdir):
    server, store_url = postgres_tracking_server
    trained = run_dlrun("train", *FAST, "trainer.max_epochs=2", cwd=workdir, env={"MLFLOW_TRACKING_URI": server.uri})
    assert trained.returncode == 0, trained.stderr
    run_id = run_id_of(trained.stdout)
    assert not (workdir / "mlflow.db").exists()

    import psycopg

    with psycopg.connect(store_url, connect_timeout=10) as connection:  # the run is a row in PostgreSQL
        (status,) = connection.execute("SELECT status FROM runs WHERE run_uuid = %s", (run_id,)).fetchone()
    assert status == "FINISHED"

    listed = runner.invoke(app, ["runs", "--tracking-uri", server.uri])
    assert listed.exit_code == 0 and run_id[:8] in listed.output, listed.output
    direct = runner.invoke(app, ["runs", "--tracking-uri", store_url])  # the database itself as the store
    assert direct.exit_code == 0 and run_id[:8] in direct.output, direct.output
    assert_no_password(direct.output)

    reproduced = runner.invoke(app, ["reproduce", run_id, "--tracking-uri", server.uri])
    assert reproduced.exit_code == 0, reproduced.output
    assert "metrics identical: yes" in reproduced.output

    import numpy as np
    from sklearn.datasets import load_iris

    np.save(workdir / "x.npy", load_iris().data.astype(np.float32))
    predicted = runner.invoke(app, ["predict", run_id, "-i", "x.npy", "-o", "p.csv", "--tracking-uri", server.uri])
    assert predicted.exit_code == 0, predicted.output
    assert "wrote 150 predictions to p.csv" in predicted.output
    assert len((workdir / "p.csv").read_text().splitlines()) == 151


def wait_until_training(url: str, name: str, trials: int, process: subprocess.Popen) -> None:
    """Until `trials` trials of the study have their MLflow run (they are training)."""
    study = load_study(url, name)  # one connection, asked often: a trial may train for a second only
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        found = study.get_trials(deepcopy=False)
        if sum(t.state.name == "RUNNING" and "mlflow_run_id" in t.user_attrs for t in found) >= trials:
            return
        time.sleep(0.05)
    pytest.fail(f"{trials} trials never trained at once: {process.communicate()}")


def test_postgresql_stopped_mid_sweep_fails_the_trials_cleanly_and_the_sweep_resumes(postgres, workdir):
    url = postgres.create_database("lost_study")
    (workdir / "lost.yaml").write_text(SWEEP.format(epochs=300, n_trials=2))  # still training when stopped
    process = start_two_workers(workdir, "lost.yaml", url)
    try:
        wait_until_training(url, "lost", 2, process)
        postgres.stop()
        out, err = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
        if not postgres.is_running():
            postgres.start()
    assert process.returncode == 1, out + err
    shown = f"postgresql://{USER}:***@127.0.0.1:{postgres.port}/lost_study"
    assert f"error: the study 'lost' lost its storage {shown}" in err
    assert "run the same command again once it answers to resume the study" in err
    logs = worker_logs(workdir, "lost")
    for text in (err, *logs):
        assert "Traceback" not in text, text
    assert all("lost its storage" in log for log in logs)  # each worker failed its trial and said why
    assert_no_password(out, err, *logs)
    _, runs = mlflow_runs(workdir / "mlflow.db")
    assert sorted(r.info.status for r in runs) == ["FAILED"] * 3  # the parent and both trials: none RUNNING
    cut = {r.info.run_id for r in runs if "mlflow.parentRunId" in r.data.tags}
    (parent_id,) = {r.info.run_id for r in runs} - cut

    # The same study resumed, in one process, with a budget of one trial: the two cut short do not count.
    again = run_dlrun("sweep", "lost.yaml", "--storage", url, "--n-trials", "1", cwd=workdir)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "0 trials done" in again.stdout
    study = load_study(url, "lost")
    lost = [t for t in study.trials if t.user_attrs["mlflow_run_id"] in cut]
    assert [t.user_attrs["dlrun_state"] for t in lost] == ["crashed", "crashed"]  # closed, their budget re-spent
    assert [t.state.name for t in study.trials] == ["FAIL", "FAIL", "COMPLETE"]
    client, runs = mlflow_runs(workdir / "mlflow.db")
    assert {client.get_run(run_id).info.status for run_id in cut} == {"KILLED"}
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert run_id_of(again.stdout) == parent_id and client.get_run(parent_id).info.status == "FINISHED"
    assert_no_password_recorded(runs)


@pytest.fixture
def silent_port():
    """A port that accepts connections and never says a word: a server that does not answer."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


def test_a_postgresql_storage_that_does_not_answer_is_exit_2_naming_the_host(workdir, silent_port):
    (workdir / "quiet.yaml").write_text(SWEEP.format(epochs=1, n_trials=1))
    url = f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{silent_port}/study"
    result = runner.invoke(app, ["sweep", "quiet.yaml", "--storage", url])
    assert result.exit_code == 2, result.output
    assert f"cannot connect to the database server at 127.0.0.1:{silent_port}: no answer within 5 s" in result.output
    assert "Traceback" not in result.output
    assert_no_password(result.output)
    assert sorted(p.name for p in workdir.iterdir()) == ["quiet.yaml"]  # nothing written


def test_a_postgresql_tracking_store_that_does_not_answer_is_exit_2_naming_the_host(workdir, silent_port):
    url = f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{silent_port}/mlflow"
    result = runner.invoke(app, ["runs", "--tracking-uri", url])
    assert result.exit_code == 2, result.output
    assert f"the MLflow store (tracking.uri / MLFLOW_TRACKING_URI / --tracking-uri) postgresql://{USER}:***@" in (
        result.output)
    assert f"database server at 127.0.0.1:{silent_port}: no answer within 5 s" in result.output
    assert_no_password(result.output)


def test_a_tracking_server_that_does_not_answer_is_exit_2_naming_it(workdir, silent_port, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{silent_port}")
    result = runner.invoke(app, ["runs"])
    assert result.exit_code == 2, result.output
    assert f"cannot reach the MLflow tracking server at http://127.0.0.1:{silent_port} (no answer within 5 s)" in (
        result.output)


def test_a_wrong_password_names_the_user_and_never_the_password(postgres, workdir, monkeypatch):
    wrong = "not-the-" + PASSWORD
    storage = postgres.url("postgres", password=wrong)
    (workdir / "denied.yaml").write_text(SWEEP.format(epochs=1, n_trials=1))
    swept = runner.invoke(app, ["sweep", "denied.yaml", "--storage", storage])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", postgres.url("postgres", password=wrong))
    listed = runner.invoke(app, ["runs"])
    trained = runner.invoke(app, ["train", *FAST])
    for result in (swept, listed, trained):
        assert result.exit_code == 2, result.output
        assert f"database server at 127.0.0.1:{postgres.port}: it refused the password of user '{USER}'" in (
            result.output)
        assert wrong not in result.output and PASSWORD not in result.output
        assert "Traceback" not in result.output
    assert sorted(p.name for p in workdir.iterdir()) == ["denied.yaml"]  # no run, no outputs, no journal
