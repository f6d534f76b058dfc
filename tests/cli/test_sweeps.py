"""Sweeps end to end: grids and studies land in MLflow as one parent run with nested trial runs,
survive failing trials, prune, resume after a kill, and share one study among workers."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from dlrun.processes import pid_of
from tests.claim_gate import start_with_every_process_claiming
from tests.conftest import dlrun_command, mlflow_runs, run_dlrun

FAST = "data=iris tracking.log_model=false"


def children_of(runs, parent_id: str):
    return [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id]


def parents(runs):
    return [r for r in runs if "mlflow.parentRunId" not in r.data.tags]


def last_line_run_id(stdout: str) -> str:
    last = stdout.strip().splitlines()[-1]
    assert last.startswith("run_id: "), stdout
    return last.removeprefix("run_id: ")


def open_study(folder: Path, name: str):
    import optuna

    from dlrun.tuning.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=open_storage(str(folder / "optuna" / f"{name}.journal")))


def write_sweep(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path


def test_grid_runs_every_combination_as_children_of_one_parent(workdir):
    result = run_dlrun("train", "-m", *FAST.split(), "trainer.max_epochs=2", "optim=adam,sgd", "optim.lr=0.1,0.01",
                       "--metric", "val/acc", cwd=workdir)
    assert result.returncode == 0, result.stderr
    parent_id = last_line_run_id(result.stdout)
    client, runs = mlflow_runs(workdir / "mlflow.db")
    assert [p.info.run_id for p in parents(runs)] == [parent_id]
    children = children_of(runs, parent_id)
    assert len(children) == 4
    combos = {(c.data.params["optim.name"], c.data.params["optim.lr"]) for c in children}
    assert combos == {("adam", "0.1"), ("adam", "0.01"), ("sgd", "0.1"), ("sgd", "0.01")}
    assert {c.info.status for c in children} == {"FINISHED"}
    assert {c.data.tags["dlrun.trial_state"] for c in children} == {"complete"}
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED"
    assert "trials.csv" in [a.path for a in client.list_artifacts(parent_id)]
    # The final table is sorted by the metric, best first (val/acc: highest first).
    table = result.stdout[result.stdout.index("trial  state"):].splitlines()[1:5]
    values = [float(line.split()[2]) for line in table]
    assert values == sorted(values, reverse=True)
    assert "train it again: dlrun train" in result.stdout


def test_grid_with_jobs_runs_trials_in_worker_processes(workdir):
    result = run_dlrun("train", "-m", "--jobs", "2", *FAST.split(), "trainer.max_epochs=2", "model.width=8,16",
                       cwd=workdir)
    assert result.returncode == 0, result.stderr
    parent_id = last_line_run_id(result.stdout)
    _, runs = mlflow_runs(workdir / "mlflow.db")
    children = children_of(runs, parent_id)
    assert sorted(c.data.params["model.width"] for c in children) == ["16", "8"]
    assert "2 at once" in result.stdout


STUDY = """
overrides: [data=iris, trainer.max_epochs={epochs}, tracking.log_model=false]
metric: val/acc
n_trials: {n_trials}
sampler: {sampler}
pruner: {pruner}
params:
{params}
"""


def test_a_failing_trial_is_recorded_and_the_study_goes_on(workdir):
    # bce cannot fit iris's 3 classes (fails before training); lr=1e12 makes the loss infinite.
    write_sweep(workdir, "failing", STUDY.format(epochs=2, n_trials=4, sampler="grid", pruner="none",
                                                 params="  loss: choice(auto, bce)\n  optim.lr: choice(0.01, 1e12)"))
    result = run_dlrun("sweep", "failing.yaml", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    study = open_study(workdir, "failing")
    states = sorted(t.state.name for t in study.trials)
    assert states == ["COMPLETE", "FAIL", "FAIL", "FAIL"]
    nan_trial = next(t for t in study.trials if t.params == {"loss": "auto", "optim.lr": 1e12})
    assert "became inf" in nan_trial.user_attrs["message"] or "became nan" in nan_trial.user_attrs["message"]
    client, runs = mlflow_runs(workdir / "mlflow.db")
    failed_run = client.get_run(nan_trial.user_attrs["mlflow_run_id"])
    assert failed_run.info.status == "FAILED"
    assert failed_run.data.tags["dlrun.trial_state"] == "failed"
    assert "best: trial" in result.stdout


def test_every_trial_failing_is_exit_1(workdir):
    write_sweep(workdir, "allfail", STUDY.format(epochs=2, n_trials=2, sampler="grid", pruner="none",
                                                 params="  optim.lr: choice(1e12, 1e13)"))
    result = run_dlrun("sweep", "allfail.yaml", cwd=workdir)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "every trial of the study 'allfail' failed" in result.stderr


def good_first_grid_seed(values: list[float]) -> int:
    """A sampler seed for which dlrun's grid sampler tries values[0] first."""
    import optuna

    from dlrun.tuning.samplers import grid_sampler_class as _grid_sampler

    for seed in range(100):
        study = optuna.create_study(sampler=_grid_sampler()({"optim.lr": values}, seed=seed))
        if study.ask().suggest_categorical("optim.lr", values) == values[0]:
            return seed
    raise AssertionError("no seed puts the first value first")


def test_pruned_trials_train_fewer_epochs_than_complete_ones(workdir):
    # A grid of one good and three hopeless learning rates, the good one first: the median
    # pruner (one startup trial) then stops each hopeless one after its first epoch.
    values = [0.3, 1e-6, 2e-6, 3e-6]
    write_sweep(workdir, "prune", STUDY.format(
        epochs=8, n_trials=4, sampler="{name: grid}", pruner="{name: median, n_startup_trials: 1}",
        params=f"  optim: sgd\n  optim.lr: choice({', '.join(map(str, values))})")
        + f"seed: {good_first_grid_seed(values)}\n")
    result = run_dlrun("sweep", "prune.yaml", cwd=workdir)
    assert result.returncode == 0, result.stderr
    study = open_study(workdir, "prune")
    by_state = {}
    for trial in study.trials:
        by_state.setdefault(trial.state.name, []).append(trial)
    assert by_state.get("PRUNED"), [(t.number, t.state.name, t.params) for t in study.trials]
    assert by_state.get("COMPLETE")
    client, _ = mlflow_runs(workdir / "mlflow.db")

    def epochs(trial) -> int:
        return len(client.get_metric_history(trial.user_attrs["mlflow_run_id"], "val/acc"))

    assert max(epochs(t) for t in by_state["PRUNED"]) < min(epochs(t) for t in by_state["COMPLETE"]) == 8
    for trial in by_state["PRUNED"]:
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        assert run.data.tags["dlrun.trial_state"] == "pruned"


def test_a_killed_study_resumes_with_finished_trials_kept_and_the_crashed_one_rerun(workdir):
    write_sweep(workdir, "resume", STUDY.format(epochs=80, n_trials=3, sampler="random", pruner="none",
                                                params="  optim.lr: tag(log, interval(1e-3, 1e-1))"))
    process = subprocess.Popen([*dlrun_command(), "sweep", "resume.yaml"], cwd=workdir,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            journal = workdir / "optuna" / "resume.journal"
            if journal.exists():
                trials = open_study(workdir, "resume").trials
                training = [t for t in trials if t.state.name == "RUNNING" and "mlflow_run_id" in t.user_attrs]
                if training and any(t.state.name == "COMPLETE" for t in trials):
                    break
            time.sleep(0.2)
        else:
            pytest.fail("the sweep never had a finished and a running trial at once")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    before = {t.number: (t.state.name, t.params) for t in open_study(workdir, "resume").trials}
    finished_before = {n for n, (state, _) in before.items() if state == "COMPLETE"}
    crashed = [n for n, (state, _) in before.items() if state == "RUNNING"]
    assert len(crashed) == 1

    result = run_dlrun("sweep", "resume.yaml", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert f"{len(finished_before)} trials done" in result.stdout
    assert "[3/3] trial" in result.stdout and "[4/3]" not in result.stdout  # the crashed trial spent no budget
    study = open_study(workdir, "resume")
    after = {t.number: t for t in study.trials}
    for number in finished_before:  # kept, not trained again
        assert after[number].state.name == "COMPLETE" and after[number].params == before[number][1]
    assert after[crashed[0]].state.name == "FAIL"
    assert after[crashed[0]].user_attrs["dlrun_state"] == "crashed"
    assert sum(t.state.name == "COMPLETE" for t in study.trials) == 3  # the crashed trial's budget re-spent
    client, runs = mlflow_runs(workdir / "mlflow.db")
    (parent,) = parents(runs)
    assert parent.info.status == "FINISHED"
    assert last_line_run_id(result.stdout) == parent.info.run_id
    crashed_run = client.get_run(after[crashed[0]].user_attrs["mlflow_run_id"])
    assert crashed_run.info.status == "KILLED"
    assert len(children_of(runs, parent.info.run_id)) == 4  # 3 complete + the crashed one


def start_with_workers_up(folder: Path, name: str, jobs: int) -> subprocess.Popen:
    """`dlrun sweep NAME.yaml --n-jobs JOBS`, its first trials claimed only once every process waits to claim."""
    from dlrun.tuning.budget import lock_path_for

    lock = lock_path_for(str(folder / "optuna" / f"{name}.journal"), name)
    return start_with_every_process_claiming([*dlrun_command(), "sweep", f"{name}.yaml", "--n-jobs", str(jobs)],
                                             folder, lock, processes=jobs)


def test_worker_processes_on_one_storage_run_exactly_n_trials(workdir):
    write_sweep(workdir, "shared", STUDY.format(epochs=3, n_trials=7, sampler="random", pruner="none",
                                                params="  optim.lr: tag(log, interval(1e-3, 1e-1))\n"
                                                       "  model.width: choice(8, 16, 32)"))
    process = start_with_workers_up(workdir, "shared", 3)
    logs = workdir / "outputs" / "sweeps" / "shared"
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, out + err
    study = open_study(workdir, "shared")
    assert [t.number for t in study.trials] == list(range(7))
    assert {t.state.name for t in study.trials} == {"COMPLETE"}
    owners = {t.user_attrs["dlrun_owner"] for t in study.trials}
    assert len(owners) >= 2  # the trials were shared among the processes
    _, runs = mlflow_runs(workdir / "mlflow.db")
    (parent,) = parents(runs)
    children = children_of(runs, parent.info.run_id)
    assert len(children) == 7
    assert sorted(int(c.data.tags["dlrun.trial_number"]) for c in children) == list(range(7))  # none twice
    assert sorted(p.name for p in logs.glob("worker-*.log")) == ["worker-0.log", "worker-1.log"]  # and the command


def test_a_joining_worker_and_the_starter_share_the_budget(workdir):
    trials = 6  # long enough (120 epochs each) that the starter still has some left when the worker is up
    write_sweep(workdir, "join", STUDY.format(epochs=120, n_trials=trials, sampler="random", pruner="none",
                                              params="  optim.lr: tag(log, interval(1e-3, 1e-1))"))
    starter = subprocess.Popen([*dlrun_command(), "sweep", "join.yaml"], cwd=workdir,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (workdir / "optuna" / "join.journal").exists() or not open_study(workdir, "join").trials:
        assert time.time() < deadline and starter.poll() is None, "the study never started"
        time.sleep(0.2)
    worker = run_dlrun("sweep", "join.yaml", "--worker", cwd=workdir)
    out, err = starter.communicate(timeout=600)
    assert starter.returncode == 0, err
    assert worker.returncode == 0, worker.stderr
    study = open_study(workdir, "join")
    counted = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(counted) == trials
    assert len({t.user_attrs["dlrun_owner"] for t in counted}) == 2
    surplus = [t for t in study.trials if t.user_attrs.get("dlrun_state") == "surplus"]
    assert len(study.trials) == trials + len(surplus) and not surplus  # one machine: the lock leaves no surplus


def test_rerunning_a_finished_study_trains_nothing_more(workdir):
    write_sweep(workdir, "done", STUDY.format(epochs=2, n_trials=2, sampler="random", pruner="none",
                                              params="  optim.lr: choice(0.01, 0.1)"))
    first = run_dlrun("sweep", "done.yaml", cwd=workdir)
    assert first.returncode == 0, first.stderr
    again = run_dlrun("sweep", "done.yaml", cwd=workdir)
    assert again.returncode == 0, again.stderr
    assert "2 trials done" in again.stdout
    assert len(open_study(workdir, "done").trials) == 2
    assert last_line_run_id(again.stdout) == last_line_run_id(first.stdout)


def test_a_changed_sweep_file_does_not_resume_the_old_study(workdir):
    path = write_sweep(workdir, "changed", STUDY.format(epochs=2, n_trials=1, sampler="random", pruner="none",
                                                        params="  optim.lr: choice(0.01, 0.1)"))
    assert run_dlrun("sweep", "changed.yaml", cwd=workdir).returncode == 0
    path.write_text(path.read_text().replace("choice(0.01, 0.1)", "choice(0.5, 0.1)"))
    result = run_dlrun("sweep", "changed.yaml", cwd=workdir)
    assert result.returncode == 2
    assert "was made from a different sweep" in result.stderr and "--study-name" in result.stderr
    assert run_dlrun("sweep", "changed.yaml", "--study-name", "changed2", cwd=workdir).returncode == 0


def wait_for_training_trial(folder: Path, name: str, process: subprocess.Popen) -> None:
    """Until a trial of the study has its MLflow run (it is training)."""
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if (folder / "optuna" / f"{name}.journal").exists():
            trials = open_study(folder, name).trials
            if any(t.state.name == "RUNNING" and "mlflow_run_id" in t.user_attrs for t in trials):
                return
        time.sleep(0.2)
    pytest.fail("no trial started training")


def wait_for_worker_trial(folder: Path, name: str, process: subprocess.Popen):
    """Until a worker process (not the command itself, which trains trials too) trains a trial: that trial."""
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if (folder / "optuna" / f"{name}.journal").exists():
            for trial in open_study(folder, name).trials:
                owner = trial.user_attrs.get("dlrun_owner")
                if (trial.state.name == "RUNNING" and "mlflow_run_id" in trial.user_attrs and owner
                        and int(pid_of(owner)) != process.pid):
                    return trial
        time.sleep(0.2)
    pytest.fail("no worker started training")


def test_ctrl_c_stops_the_study_with_the_trial_killed_and_the_next_run_resumes(workdir):
    write_sweep(workdir, "stop", STUDY.format(epochs=400, n_trials=2, sampler="random", pruner="none",
                                              params="  optim.lr: tag(log, interval(1e-3, 1e-1))"))
    process = subprocess.Popen([*dlrun_command(), "sweep", "stop.yaml"], cwd=workdir,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_training_trial(workdir, "stop", process)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, out + err
    assert "Run the same command again to resume it" in err and "Traceback" not in err
    (interrupted,) = open_study(workdir, "stop").trials
    assert interrupted.state.name == "FAIL" and interrupted.user_attrs["dlrun_state"] == "interrupted"
    client, runs = mlflow_runs(workdir / "mlflow.db")
    assert client.get_run(interrupted.user_attrs["mlflow_run_id"]).info.status == "KILLED"
    (parent,) = parents(runs)
    assert parent.info.status == "KILLED"

    # Resume with a budget of one trial: the interrupted trial does not count, so one more runs.
    short = run_dlrun("sweep", "stop.yaml", "--n-trials", "1", cwd=workdir)
    assert short.returncode == 0, short.stderr
    trials = open_study(workdir, "stop").trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]  # the interrupted trial's budget re-spent
    _, runs = mlflow_runs(workdir / "mlflow.db")
    assert parents(runs)[0].info.status == "FINISHED"


def test_a_database_storage_holds_the_study(workdir):
    write_sweep(workdir, "rdb", STUDY.format(epochs=2, n_trials=2, sampler="tpe", pruner="none",
                                             params="  model.width: choice(8, 16)"))
    result = run_dlrun("sweep", "rdb.yaml", "--storage", "sqlite:///study.db", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert not (workdir / "optuna").exists()
    import optuna

    study = optuna.load_study(study_name="rdb", storage="sqlite:///study.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]


def test_a_killed_worker_leaves_the_others_going_and_its_trial_is_run_again(workdir):
    write_sweep(workdir, "workers", STUDY.format(epochs=150, n_trials=4, sampler="random", pruner="none",
                                                 params="  optim.lr: tag(log, interval(1e-3, 1e-1))"))
    process = start_with_workers_up(workdir, "workers", 2)
    victim = wait_for_worker_trial(workdir, "workers", process)
    worker_pid = int(pid_of(victim.user_attrs["dlrun_owner"]))
    os.kill(worker_pid, signal.SIGKILL)
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, out + err
    assert "exited with code -9" in out + err  # the user is told which worker died and where its log is

    study = open_study(workdir, "workers")
    killed = next(t for t in study.trials if t.number == victim.number)
    assert killed.state.name == "FAIL" and killed.user_attrs["dlrun_state"] == "crashed"
    assert killed.user_attrs["message"] == (f"its process ({worker_pid}) died; its budget is free again "
                                            "(a running or next sweep run uses it)")
    timeline = [(t.number, t.state.name, pid_of(t.user_attrs.get("dlrun_owner", "")), str(t.datetime_start),
                 str(t.datetime_complete)) for t in study.trials]
    assert sum(t.state.name == "COMPLETE" for t in study.trials) == 4, (timeline, out)  # its budget re-spent
    client, runs = mlflow_runs(workdir / "mlflow.db")
    assert client.get_run(victim.user_attrs["mlflow_run_id"]).info.status == "KILLED"
    (parent,) = parents(runs)
    assert parent.info.status == "FINISHED"
    assert all(r.info.status != "RUNNING" for r in runs)

    again = run_dlrun("sweep", "workers.yaml", "--n-jobs", "2", cwd=workdir)  # the study resumes: nothing left
    assert again.returncode == 0, again.stderr
    assert sum(t.state.name == "COMPLETE" for t in open_study(workdir, "workers").trials) == 4
