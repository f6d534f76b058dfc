"""Shell completion through Click's completion variables, as the installed shell scripts call dlrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from dlrun.cli import app
from tests.conftest import run_dlrun

runner = CliRunner()
HEAVY = ("torch", "lightning", "pytorch_lightning", "mlflow", "hydra", "optuna")


def bash(words: str, cword: int | None = None) -> list[str]:
    """What bash's script gets back for COMP_WORDS (bash's own split: '=' is a word of its own)."""
    split = words.split(" ")
    env = {"_DLRUN_COMPLETE": "complete_bash", "COMP_WORDS": words,
           "COMP_CWORD": str(len(split) - 1 if cword is None else cword)}
    result = runner.invoke(app, [], env=env, prog_name="dlrun")
    assert result.exit_code == 0, result.output
    return [line for line in result.output.splitlines() if line]


def zsh(line: str) -> str:
    result = runner.invoke(app, [], env={"_DLRUN_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": line},
                           prog_name="dlrun")
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A folder whose mlflow.db holds one tiny finished run; its id."""
    folder = tmp_path_factory.mktemp("completion")
    done = run_dlrun("train", "data=iris", "trainer.max_epochs=1", "tracking.log_model=false",
                     "trainer.enable_progress_bar=false", cwd=folder)
    assert done.returncode == 0, done.stderr[-2000:]
    return folder, done.stdout.strip().splitlines()[-1].removeprefix("run_id: ")


def test_commands_and_options_complete(workdir):
    assert bash("dlrun ex") == ["export"]
    assert bash("dlrun export 0123 --f") == ["--format"]
    assert bash("dlrun export 0123 --format ") == ["onnx", "torchscript"]
    assert "--install-completion" in bash("dlrun --i")


def test_groups_their_options_and_keys_complete(workdir):
    assert bash("dlrun train mo") == ["model=", "model."]
    assert zsh("dlrun train model=c").count("model=cnn") == 1
    assert "optim.lr=" in bash("dlrun train optim.") and "optim.amsgrad=" in bash("dlrun train optim.")
    assert "optim.momentum=" in bash("dlrun train optim=momentum optim.")  # the option on the line
    assert "model.depth=" in bash("dlrun train data=iris model.")  # iris picks mlp
    assert "model.depth=" not in bash("dlrun train model.")  # the default cnn has none
    assert bash("dlrun train trainer.early_stopping.pa") == ["trainer.early_stopping.patience=null"]
    assert bash("dlrun train tracking.log_model=") == ["tracking.log_model=true", "tracking.log_model=false"]
    assert bash("dlrun sweep digits_cnn optim.l") == ["optim.lr=0.001"]
    assert "model.hidden=" in bash("dlrun sweep digits_lstm model.")  # the sweep file's model=lstm
    assert bash("dlrun configs mo") == ["model"]


def test_bash_words_split_at_equals_complete_the_value_only(workdir):
    assert bash("dlrun train model = c") == ["cnn"]
    assert bash("dlrun train model =") == ["cnn", "gru", "linear", "lstm", "mlp", "rnn", "svm", "text_bag", "text_lstm",
                                           "text_transformer", "transformer"]
    assert bash("dlrun train data = iris model.d") == ["model.depth=2"]
    assert bash("dlrun train trainer.deterministic =") == ["true", "false"]


def test_the_users_config_trees_complete(workdir):
    (workdir / "conf" / "model").mkdir(parents=True)
    (workdir / "conf" / "model" / "tiny.yaml").write_text("# A tiny MLP\nwidth: 4\nlayers: []\n")
    extra = workdir / "more" / "optim"
    extra.mkdir(parents=True)
    (extra / "fast.yaml").write_text("# Faster\nname: sgd\nlr: 0.5\n")
    assert bash("dlrun train model=ti") == ["model=tiny"]
    assert bash("dlrun train model=tr") == ["model=transformer"]
    assert bash("dlrun train model=tiny model.w") == ["model.width=4"]
    assert bash("dlrun train --config-dir more optim=f") == ["optim=fast"]
    assert bash("dlrun train optim=f") == []


def test_sweep_names_complete(workdir):
    (workdir / "sweeps").mkdir()
    (workdir / "sweeps" / "digits_mine.yaml").write_text("# Mine\nparams: {}\n")
    assert sorted(bash("dlrun sweep digits_")) == ["digits_cnn", "digits_lstm", "digits_mine"]


def test_recent_run_ids_complete_from_the_local_store(run_folder, tmp_path, monkeypatch):
    folder, run_id = run_folder
    monkeypatch.chdir(folder)
    for command in ("export", "predict", "eval", "reproduce", "resume", "diff"):
        assert bash(f"dlrun {command} ") == [run_id], command
    assert bash(f"dlrun diff {run_id} {run_id[:4]}") == [run_id]
    assert bash("dlrun export ffff") == []
    assert f"{run_id}\":\"mlp-iris-" in zsh("dlrun export ")  # name and status as the help
    monkeypatch.chdir(tmp_path)
    assert bash("dlrun export ") == []  # no mlflow.db here
    assert bash(f"dlrun export --tracking-uri sqlite:///{folder / 'mlflow.db'} ") == [run_id]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
    assert bash("dlrun export ") == [run_id]
    assert bash("dlrun export --tracking-uri http://127.0.0.1:9 ") == []  # a server: not asked
    (tmp_path / "mlflow.db").write_text("not a database")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert bash("dlrun export ") == []


def test_completing_imports_no_heavy_module(run_folder):
    """The installed script, as bash calls it; sys.modules afterwards, from inside the same process."""
    folder, run_id = run_folder
    script = ("import atexit, json, sys\n"
              f"atexit.register(lambda: print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))))\n"
              "from dlrun.cli import main\n"
              "sys.argv = ['dlrun']\n"
              "main()\n")
    answers = {}
    for words in ("dlrun train data=iris model.", "dlrun export ", "dlrun sweep d", "dlrun tr"):
        env = {**os.environ, "_DLRUN_COMPLETE": "complete_bash", "COMP_WORDS": words,
               "COMP_CWORD": str(len(words.split(" ")) - 1)}
        env.pop("MLFLOW_TRACKING_URI", None)
        done = subprocess.run([sys.executable, "-c", script], cwd=folder, env=env, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        *answers[words], imported = done.stdout.splitlines()
        assert json.loads(imported) == [], (words, imported)
    assert "model.depth=" in answers["dlrun train data=iris model."]
    assert answers["dlrun export "] == [run_id]
    assert "digits_cnn" in answers["dlrun sweep d"] and answers["dlrun tr"] == ["train"]


def test_completion_scripts_install(workdir, monkeypatch):
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")  # name the shell, not detect it
    monkeypatch.setenv("HOME", str(workdir))
    shown = runner.invoke(app, ["--show-completion", "bash"], prog_name="dlrun")
    assert shown.exit_code == 0 and "_DLRUN_COMPLETE=complete_bash" in shown.output
    installed = runner.invoke(app, ["--install-completion", "bash"], prog_name="dlrun")
    assert installed.exit_code == 0, installed.output
    assert "_DLRUN_COMPLETE" in (workdir / ".bash_completions" / "dlrun.sh").read_text()
