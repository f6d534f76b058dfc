"""A study that `dlrun sweep` wrote is Optuna's own: its loader and its CLI read the journal file
and a database storage (optuna-dashboard opens them the same way: a journal path or a URL)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import mlflow_runs, run_dlrun

SWEEP = """
overrides: [data=iris, trainer.max_epochs=1, tracking.log_model=false]
metric: val/acc
n_trials: 2
sampler: random
pruner: none
params:
  optim.lr: interval(0.001, 0.1)
"""


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """One 2-trial study in the default journal file, one in a SQLite database: {kind: (storage, folder)}."""
    folder = tmp_path_factory.mktemp("optuna_tools")
    (folder / "tiny.yaml").write_text(SWEEP)
    made = {}
    for kind, extra in (("journal", []), ("sqlite", ["--storage", f"sqlite:///{folder / 'optuna.db'}"])):
        done = run_dlrun("sweep", "tiny.yaml", *extra, cwd=folder)
        assert done.returncode == 0, done.stderr[-2000:]
        made[kind] = str(folder / "optuna" / "tiny.journal") if kind == "journal" else extra[1]
    return made, folder


def optuna_cli(*args: str):
    """Optuna's console script (optuna.cli:main) in its own process, its JSON output parsed."""
    done = subprocess.run([sys.executable, "-c", "import sys; from optuna.cli import main; sys.exit(main())",
                           *args, "-f", "json"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_optunas_loader_reads_the_study(studies, kind):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    made, folder = studies
    storage = JournalStorage(JournalFileBackend(made[kind])) if kind == "journal" else made[kind]
    study = optuna.load_study(study_name="tiny", storage=storage)  # Optuna's default lock, not dlrun's
    trials = study.get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert all(0.001 <= t.params["optim.lr"] <= 0.1 for t in trials)
    _, runs = mlflow_runs(folder / "mlflow.db")
    by_id = {r.info.run_id: r for r in runs}
    for trial in trials:  # each trial names its MLflow run, which trained with the trial's params
        run = by_id[trial.user_attrs["mlflow_run_id"]]
        assert run.data.params["optim.lr"] == str(trial.params["optim.lr"])
    assert study.user_attrs["mlflow_parent_run_id"] in by_id


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_optunas_cli_lists_the_study_and_its_trials(studies, kind):
    made, _ = studies
    (listed,) = optuna_cli("studies", "--storage", made[kind])
    assert listed["name"] == "tiny" and listed["n_trials"] == 2 and listed["direction"] == ["MAXIMIZE"]
    trials = optuna_cli("trials", "--study-name", "tiny", "--storage", made[kind])
    assert [t["state"] for t in trials] == ["COMPLETE", "COMPLETE"]
    assert all(0.001 <= t["params"]["optim.lr"] <= 0.1 for t in trials)
