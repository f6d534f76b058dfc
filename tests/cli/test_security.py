"""Configs from files, the command line or MLflow runs cannot import or execute code: names resolve
through dlrun's registries only, YAML python tags are refused, a config may use only the resolvers that
read the config itself (not oc.env, oc.decode, hydra:, now), a run's model tag and output_dir cannot
lead out of their folder, and a checkpoint holding a pickled object is refused before it loads.
Each is exit 2 with a message, no traceback, and nothing run or recorded."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dlrun.cli import app
from tests.conftest import mlflow_runs, run_dlrun

runner = CliRunner()


@pytest.mark.parametrize("override, fragment", [
    ("+_target_=os.system", "unknown config key '_target_'"),
    ("+optim._target_=builtins.eval", "_target_"),
    ("optim.name=__import__", "unknown optimizer '__import__'"),
    ("model.layers.0.type=__import__", "unknown layer type '__import__'"),
    ("activation.name=eval", "unknown activation 'eval'"),
    ("loss.name=os.system", "unknown loss 'os.system'"),
    ("data.name=builtins.exec", "builtins.exec"),
    ("optim.lr=${oc.env:HOME}", "'optim.lr' in the config uses the resolver 'oc.env'"),
    ("optim.lr=${oc.decode:0.01}", "uses the resolver 'oc.decode'"),
    ("+model.note='${oc.select:no.key,${oc.env:HOME}}'", "'model.note' in the config uses the resolver 'oc.env'"),
    ("+model.note=${hydra:runtime.cwd}", "uses the resolver 'hydra'"),
    ("+model.note=${now:%Y}", "uses the resolver 'now'"),
])
def test_names_never_reach_code(workdir, override, fragment):
    result = runner.invoke(app, ["train", override])
    assert result.exit_code == 2, result.output
    assert fragment in result.output and "Traceback" not in result.output
    assert not list(workdir.iterdir())  # no store, no outputs


def test_a_yaml_python_tag_in_a_config_file_runs_nothing(workdir):
    (workdir / "conf" / "model").mkdir(parents=True)
    marker = workdir / "PWNED"
    (workdir / "conf" / "model" / "evil.yaml").write_text(
        f'layers: !!python/object/apply:os.system ["touch {marker}"]\n')
    result = runner.invoke(app, ["train", "model=evil"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert not marker.exists()
    assert not (workdir / "mlflow.db").exists()


def test_a_sweep_file_with_a_python_tag_runs_nothing(workdir):
    marker = workdir / "PWNED"
    (workdir / "evil.yaml").write_text(f'params: !!python/object/apply:os.system ["touch {marker}"]\n')
    result = runner.invoke(app, ["sweep", "evil.yaml"])
    assert result.exit_code == 2 and "not valid YAML" in result.output
    assert not marker.exists()


def test_a_secret_in_the_environment_never_reaches_the_config(workdir, monkeypatch):
    monkeypatch.setenv("DLRUN_TEST_SECRET", "hunter2-secret")
    for args in (["train", "--cfg", "tracking.experiment=${oc.env:DLRUN_TEST_SECRET}"],
                 ["train", "data=iris", "trainer.max_epochs=1", "tracking.experiment=${oc.env:DLRUN_TEST_SECRET}"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert "'tracking.experiment' in the config uses the resolver 'oc.env'" in result.output
        assert "hunter2" not in result.output and "Traceback" not in result.output
    assert not list(workdir.iterdir())


@pytest.mark.parametrize("value, resolver", [
    ("${oc.env:DLRUN_TEST_LR}", "oc.env"),
    # oc.decode resolves what its string holds: the escaped \${...} would pass oc.env through unseen
    ('${oc.decode:"\\${oc.env:DLRUN_TEST_LR}"}', "oc.decode"),
])
def test_a_config_file_that_reads_the_environment_is_refused(workdir, monkeypatch, value, resolver):
    monkeypatch.setenv("DLRUN_TEST_LR", "0.01")  # a valid value: only the resolver is at fault
    (workdir / "conf" / "optim").mkdir(parents=True)
    (workdir / "conf" / "optim" / "envy.yaml").write_text(f"name: adam\nlr: '{value}'\n")
    result = runner.invoke(app, ["train", "--cfg", "optim=envy"])
    assert result.exit_code == 2, result.output
    assert f"'optim.lr' in the config uses the resolver '{resolver}'" in result.output


@pytest.mark.parametrize("sweep_file", [
    ('overrides: [data=iris, "tracking.experiment=${oc.env:DLRUN_TEST_LR}"]\nn_trials: 2\n'
     'params:\n  model.width: choice(8, 16)\n'),
    'overrides: [data=iris]\nn_trials: 2\nparams:\n  optim.lr: choice(0.1, "${oc.env:DLRUN_TEST_LR}")\n',
])
def test_a_sweep_that_reads_the_environment_is_refused(workdir, monkeypatch, sweep_file):
    monkeypatch.setenv("DLRUN_TEST_LR", "0.01")
    (workdir / "envy.yaml").write_text(sweep_file)
    result = runner.invoke(app, ["sweep", "envy.yaml"])
    assert result.exit_code == 2, result.output
    assert "' in the config uses the resolver 'oc.env'" in result.output
    grid = runner.invoke(app, ["train", "-m", "data=iris", "optim.lr=0.1,${oc.env:DLRUN_TEST_LR}"])
    assert grid.exit_code == 2 and "uses the resolver 'oc.env'" in grid.output
    assert sorted(p.name for p in workdir.iterdir()) == ["envy.yaml"]


def test_references_within_the_config_stay_allowed(workdir):
    result = runner.invoke(app, ["train", "--cfg", "data=iris", "model=mlp", "model.width=${oc.select:no.such.key,48}"])
    assert result.exit_code == 0, result.output
    assert "out_features: 48" in result.output  # mlp.yaml's ${model.width}, through oc.select's default


# ---------------------------------------------------------------------------------------------
# recorded runs: a stored config, a run's tags, its checkpoints


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A FINISHED run with two epochs (best and last checkpoints) and its served model."""
    folder = tmp_path_factory.mktemp("security")
    done = run_dlrun("train", "data=iris", "trainer.max_epochs=2", "trainer.enable_progress_bar=false", cwd=folder)
    assert done.returncode == 0, done.stderr[-2000:]
    return folder, done.stdout.strip().splitlines()[-1].removeprefix("run_id: ")


def _client(folder):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")


def _clone(folder, run_id: str, status: str = "KILLED", edit=None) -> str:
    """A new run in the store with run_id's params and config.yaml (changed by edit), as someone with
    write access to a shared store could make it; its checkpoints are the original's."""
    import tempfile

    import yaml

    client = _client(folder)
    original = client.get_run(run_id)
    clone = client.create_run(original.info.experiment_id).info.run_id
    for key, value in original.data.params.items():
        client.log_param(clone, key, value)
    config = yaml.safe_load(Path(client.download_artifacts(run_id, "config.yaml", tempfile.mkdtemp())).read_text())
    client.log_text(clone, yaml.safe_dump(edit(config) if edit else config), "config.yaml")
    checkpoints = folder / "outputs" / clone / "checkpoints"
    shutil.copytree(folder / "outputs" / run_id / "checkpoints", checkpoints)
    client.set_terminated(clone, status=status)
    return clone


def _with_lr(text: str):
    def edit(config):
        config["optim"]["lr"] = text
        return config
    return edit


def _run_count(folder) -> int:
    return len(mlflow_runs(folder / "mlflow.db")[1])


def assert_refused(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output, f"{fragment!r} not in {result.output!r}"


@pytest.mark.parametrize("status, commands", [
    ("KILLED", [["resume"], ["reproduce"], ["eval"]]),
    ("FINISHED", [["resume", "trainer.max_epochs=3"], ["reproduce"], ["eval"]]),
])
def test_a_stored_config_that_reads_the_environment_is_refused(recorded, monkeypatch, status, commands):
    folder, run_id = recorded
    monkeypatch.chdir(folder)
    monkeypatch.setenv("DLRUN_TEST_LR", "0.01")
    clone = _clone(folder, run_id, status, _with_lr("${oc.env:DLRUN_TEST_LR}"))
    before = _run_count(folder)
    for command in commands:
        result = runner.invoke(app, [command[0], clone, *command[1:]])
        assert_refused(result, f"'optim.lr' in the config.yaml of run {clone} uses the resolver 'oc.env'")
    assert _run_count(folder) == before


def test_overrides_on_a_stored_run_cannot_read_the_environment(recorded, monkeypatch):
    folder, run_id = recorded
    monkeypatch.chdir(folder)
    before = _run_count(folder)
    result = runner.invoke(app, ["reproduce", run_id, "optim.lr=${oc.env:DLRUN_TEST_LR,0.01}"])
    assert_refused(result, f"'optim.lr' in the config of run {run_id} uses the resolver 'oc.env'")
    assert _run_count(folder) == before


class _Payload:
    """Unpickling this calls os.system: what a tampered checkpoint would run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def _poison(checkpoint, marker) -> None:
    import torch

    content = torch.load(checkpoint, map_location="cpu", weights_only=True)
    content["payload"] = _Payload(marker)
    torch.save(content, checkpoint)


@pytest.mark.parametrize("where", ["local", "artifact"])
@pytest.mark.parametrize("status, command", [
    ("KILLED", ["resume"]),
    ("FINISHED", ["resume", "trainer.max_epochs=3"]),
    ("FINISHED", ["eval"]),
])
def test_a_checkpoint_holding_a_pickled_object_is_refused(recorded, monkeypatch, tmp_path, where, status, command):
    folder, run_id = recorded
    monkeypatch.chdir(folder)
    marker = tmp_path / "PWNED"
    clone = _clone(folder, run_id, status)
    checkpoints = folder / "outputs" / clone / "checkpoints"
    for name in ("best.ckpt", "last.ckpt"):
        _poison(checkpoints / name, marker)
    if where == "artifact":  # not on this disk: downloaded from the run's artifacts
        _client(folder).log_artifacts(clone, str(checkpoints), "checkpoints")
        shutil.rmtree(checkpoints.parent)
    before = _run_count(folder)
    result = runner.invoke(app, [command[0], clone, *command[1:]])
    assert_refused(result, "the checkpoint", f"of run {clone} is refused", "never unpickles objects")
    assert not marker.exists()
    assert _run_count(folder) == before
    assert _client(folder).get_run(clone).info.status == status


def test_the_poisoned_checkpoint_would_run_code_if_unpickled(recorded, tmp_path):
    """The check above is meaningful: loading the same file without weights_only runs the payload."""
    import torch

    folder, run_id = recorded
    checkpoint = tmp_path / "last.ckpt"
    shutil.copy(folder / "outputs" / run_id / "checkpoints" / "last.ckpt", checkpoint)
    _poison(checkpoint, tmp_path / "PWNED")
    torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("tag", ["../../model", "{artifacts}/../../../{other}/artifacts", "{model_dir}",
                                 "file://{model_dir}", "models:/{other_model}", "runs:/{run_id}/../../model"])
def test_a_model_tag_that_leads_elsewhere_is_refused(recorded, monkeypatch, tag):
    folder, run_id = recorded
    monkeypatch.chdir(folder)
    client = _client(folder)
    original = client.get_run(run_id)
    own_model = original.data.tags["dlrun.model_uri"]
    other = _clone(folder, run_id, "FINISHED")
    other_model = client.create_logged_model(original.info.experiment_id, source_run_id=other).model_id
    model_dir = client.get_logged_model(own_model.removeprefix("models:/")).artifact_location.removeprefix("file://")
    value = tag.format(artifacts=original.info.artifact_uri, other=other, model_dir=model_dir,
                       other_model=other_model, run_id=run_id)
    (folder / "rows.csv").write_text("a,b,c,d\n5.1,3.5,1.4,0.2\n")
    (folder / "out.csv").unlink(missing_ok=True)
    client.set_tag(run_id, "dlrun.model_uri", value)
    try:
        for command in (["predict", run_id, "--input", "rows.csv", "--output", "out.csv"],
                        ["eval", run_id, "data.name=wine"]):
            result = runner.invoke(app, command)
            assert_refused(result, f"the dlrun.model_uri tag of run {run_id} ('{value}') does not name a model")
        assert not (folder / "out.csv").exists()
    finally:
        client.set_tag(run_id, "dlrun.model_uri", own_model)
    assert runner.invoke(app, ["predict", run_id, "--input", "rows.csv", "--output", "out.csv"]).exit_code == 0


def _output_dir(value: str):
    def edit(config):
        config["output_dir"] = value
        return config
    return edit


@pytest.mark.parametrize("status, command", [("KILLED", ["resume"]), ("FINISHED", ["reproduce"]),
                                             ("FINISHED", ["resume", "trainer.max_epochs=3"])])
def test_a_stored_output_dir_that_climbs_out_is_refused(recorded, monkeypatch, tmp_path, status, command):
    folder, run_id = recorded
    monkeypatch.chdir(folder)
    escaped = tmp_path / "escaped"
    climbing = "../" * len(folder.parts) + str(escaped).lstrip("/")
    clone = _clone(folder, run_id, status, _output_dir(climbing))
    before = _run_count(folder)
    result = runner.invoke(app, [command[0], clone, *command[1:]])
    assert_refused(result, f"the config of run {clone} sets output_dir '{climbing}'", "output_dir=outputs")
    assert not escaped.exists()
    assert _run_count(folder) == before


def _tamper_model(model_dir, marker) -> None:
    """What someone with write access to the artifacts could do: a loader module of their own, shipped as code."""
    import yaml

    (model_dir / "code").mkdir()
    (model_dir / "code" / "dlrun_test_loader.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
        "def _load_pyfunc(path, model_config=None):\n    raise RuntimeError('loaded')\n")
    spec = yaml.safe_load((model_dir / "MLmodel").read_text())
    spec["flavors"]["python_function"].update(loader_module="dlrun_test_loader", code="code")
    (model_dir / "MLmodel").write_text(yaml.safe_dump(spec))


def test_a_model_whose_files_were_altered_to_run_code_is_refused(recorded, monkeypatch, tmp_path):
    import mlflow.pyfunc

    folder, run_id = recorded
    monkeypatch.chdir(folder)
    client = _client(folder)
    model_uri = client.get_run(run_id).data.tags["dlrun.model_uri"]
    model_dir = Path(client.get_logged_model(model_uri.removeprefix("models:/")).artifact_location.removeprefix("file://"))
    saved = tmp_path / "saved"
    shutil.copytree(model_dir, saved)
    marker = tmp_path / "PWNED"
    (folder / "rows.csv").write_text("a,b,c,d\n5.1,3.5,1.4,0.2\n")
    (folder / "out.csv").unlink(missing_ok=True)
    _tamper_model(model_dir, marker)
    try:
        for command in (["predict", run_id, "--input", "rows.csv", "--output", "out.csv"],
                        ["eval", run_id, "data.name=wine"]):
            assert_refused(runner.invoke(app, command), f"the model {model_uri} of run {run_id} is not as dlrun "
                           "train logs it", "'dlrun_test_loader'")
        assert not marker.exists() and not (folder / "out.csv").exists()
        with pytest.raises(RuntimeError, match="loaded"):  # the threat is real: MLflow would run that code
            mlflow.pyfunc.load_model(str(model_dir))
        assert marker.exists()
    finally:
        shutil.rmtree(model_dir)
        shutil.copytree(saved, model_dir)


@pytest.mark.parametrize("how", ["sample-inputs", "expression"])
def test_a_model_whose_program_was_altered_to_run_code_is_refused(recorded, monkeypatch, tmp_path, how):
    """data/model.pt2 altered so that torch.export.load runs a command (a pickled sample input; a symbolic
    size that sympy evaluates): predict, eval and dlrun.load_model refuse it before it loads."""
    import dlrun
    from dlrun.errors import ConfigError
    from tests.tampered_program import logged_program, tamper

    folder, run_id = recorded
    monkeypatch.chdir(folder)
    model_uri = _client(folder).get_run(run_id).data.tags["dlrun.model_uri"]
    model_dir = Path(_client(folder).get_logged_model(model_uri.removeprefix("models:/")).artifact_location
                     .removeprefix("file://"))
    program, marker = logged_program(model_dir), tmp_path / "PWNED"
    shutil.copy(program, tmp_path / "saved.pt2")
    (folder / "rows.csv").write_text("a,b,c,d\n5.1,3.5,1.4,0.2\n")
    (folder / "out.csv").unlink(missing_ok=True)
    try:
        tamper(tmp_path / "saved.pt2", program, how, marker)
        for command in (["predict", run_id, "--input", "rows.csv", "--output", "out.csv"],
                        ["eval", run_id, "data.name=wine"]):
            assert_refused(runner.invoke(app, command), f"the program model.pt2 of the model {model_uri} of run "
                           f"{run_id} is refused")
        with pytest.raises(ConfigError, match="is refused"):
            dlrun.load_model(run_id)
        assert not marker.exists() and not (folder / "out.csv").exists()
    finally:
        shutil.copy(tmp_path / "saved.pt2", program)


def test_a_store_that_does_not_answer_about_the_model_is_not_taken_for_an_altered_tag(recorded, monkeypatch):
    """Only a model the store says does not exist makes the model tag suspect; a server hiccup surfaces as it is."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from dlrun.lifecycle.stored import _source_run_of_model

    folder, run_id = recorded
    monkeypatch.chdir(folder)
    assert _source_run_of_model(_client(folder), "m-" + "0" * 32) is None  # no such model: the tag is refused
    hiccup = MlflowException("API request failed: Max retries exceeded (Connection refused)",
                             error_code="TEMPORARILY_UNAVAILABLE")

    def unanswered(self, model_id):
        raise hiccup

    monkeypatch.setattr(MlflowClient, "get_logged_model", unanswered)
    (folder / "rows.csv").write_text("a,b,c,d\n5.1,3.5,1.4,0.2\n")
    result = runner.invoke(app, ["predict", run_id, "--input", "rows.csv", "--output", "hiccup.csv"])
    assert result.exception is hiccup, result.output
    assert "altered" not in result.output


def test_a_checkpoint_is_checked_mapped_from_disk_not_read_into_memory(recorded, monkeypatch):
    import torch

    from dlrun.lifecycle.stored import refuse_pickled_objects

    folder, run_id = recorded
    real_load, loads = torch.load, []

    def load(*args, **kwargs):
        loads.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", load)
    refuse_pickled_objects(folder / "outputs" / run_id / "checkpoints" / "last.ckpt", run_id)
    assert loads == [{"map_location": "cpu", "weights_only": True, "mmap": True}]
