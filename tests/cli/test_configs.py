"""`dlrun configs` and `dlrun train --cfg`: the config tree as a user sees it."""

from __future__ import annotations

import yaml
from typer.testing import CliRunner

from dlrun.cli import app

runner = CliRunner()


def test_configs_lists_every_group_with_its_default():
    result = runner.invoke(app, ["configs"])
    assert result.exit_code == 0, result.output
    for group in ("data", "model", "activation", "loss", "optim", "regularization", "trainer"):
        assert f"\n{group}:" in "\n" + result.output
    assert "model:  (default: cnn)" in result.output
    assert "data:  (default: digits)" in result.output


def test_configs_of_one_group_describes_each_option():
    result = runner.invoke(app, ["configs", "model"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    described = {line.split()[0]: line for line in lines[1:]}
    assert {"cnn", "mlp", "linear"} <= set(described)
    assert "Convolutional" in described["cnn"]
    assert "optim:" not in result.output


def test_cfg_prints_the_resolved_config_and_creates_nothing(workdir):
    result = runner.invoke(app, ["train", "--cfg", "model=mlp", "model.width=7", "optim=sgd", "optim.lr=0.3"])
    assert result.exit_code == 0, result.output
    config = yaml.safe_load(result.output)
    assert config["optim"] == {"name": "sgd", "lr": 0.3, "momentum": 0.0, "weight_decay": 0.0}
    widths = [layer["out_features"] for layer in config["model"]["layers"][1]["layers"] if layer["type"] == "linear"]
    assert widths == [7], "interpolations must be resolved"
    assert config["tracking"]["experiment"] == "dlrun"
    assert list(workdir.iterdir()) == []


def test_tabular_data_defaults_to_the_mlp_unless_the_model_is_given(workdir):
    mlp = yaml.safe_load(runner.invoke(app, ["train", "--cfg", "data=iris"]).output)
    assert "depth" in mlp["model"]
    linear = yaml.safe_load(runner.invoke(app, ["train", "--cfg", "data=iris", "model=linear"]).output)
    assert [layer["type"] for layer in linear["model"]["layers"]] == ["flatten", "linear"]


def test_local_conf_folder_extends_and_shadows_the_package_tree(workdir):
    model_dir = workdir / "conf" / "model"
    model_dir.mkdir(parents=True)
    (model_dir / "mynet.yaml").write_text("# My own network\nlayers:\n  - {type: flatten}\n  - {type: linear}\n")
    (model_dir / "cnn.yaml").write_text("# Shadowed CNN\nlayers:\n  - {type: flatten}\n  - {type: linear}\n")
    listing = runner.invoke(app, ["configs", "model"]).output
    assert "mynet" in listing and "My own network" in listing and "Shadowed CNN" in listing
    result = runner.invoke(app, ["train", "--cfg", "model=mynet"])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.output)["model"]["layers"][1] == {"type": "linear"}
    shadowed = yaml.safe_load(runner.invoke(app, ["train", "--cfg"]).output)
    assert len(shadowed["model"]["layers"]) == 2


def test_config_dir_option_is_searched_first(workdir, tmp_path_factory):
    extra = tmp_path_factory.mktemp("extra")
    (extra / "optim").mkdir()
    (extra / "optim" / "fast.yaml").write_text("# Fast SGD\nname: sgd\nlr: 0.5\n")
    result = runner.invoke(app, ["train", "--config-dir", str(extra), "--cfg", "optim=fast"])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.output)["optim"] == {"name": "sgd", "lr": 0.5}


def test_version_option():
    from dlrun import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"dlrun {__version__}"
