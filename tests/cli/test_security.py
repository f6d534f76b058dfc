"""Configs from files or the command line cannot import or execute code: names resolve through
dlrun's registries only, YAML python tags are refused, nothing is written. OmegaConf's `oc.env`
resolver may read an environment variable into a value (as in any Hydra app); the value is then
validated like any other."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from dlrun.cli import app

runner = CliRunner()


@pytest.mark.parametrize("override, fragment", [
    ("+_target_=os.system", "unknown config key '_target_'"),
    ("+optim._target_=builtins.eval", "_target_"),
    ("optim.name=__import__", "unknown optimizer '__import__'"),
    ("model.layers.0.type=__import__", "unknown layer type '__import__'"),
    ("activation.name=eval", "unknown activation 'eval'"),
    ("loss.name=os.system", "unknown loss 'os.system'"),
    ("data.name=builtins.exec", "builtins.exec"),
    ("optim.lr=${oc.env:HOME}", "'optim.lr' must be a number"),
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
