"""Defects found by trying dlrun as a new user: each is exit 2 with a message that names the fix."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from dlrun.cli import app
from dlrun.components.optimizers import OPTIMIZERS
from dlrun.config.compose import compose
from dlrun.errors import ConfigError
from dlrun.registry import Registry

runner = CliRunner()


def assert_exit_2(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    for fragment in fragments:
        assert fragment in result.output, (fragment, result.output)


# --- tuple-typed keys check their length ---------------------------------------------------


@pytest.mark.parametrize("betas,count", [("[0.9]", 1), ("[0.9,0.99,0.999]", 3), ("[]", 0)])
def test_betas_of_the_wrong_length_are_exit_2_naming_the_key_and_the_length(workdir, betas, count):
    assert_exit_2(runner.invoke(app, ["train", f"optim.betas={betas}"]),
                  f"'optim.betas' must be a list of 2 numbers, got {count}")
    assert list(workdir.iterdir()) == []


def test_every_fixed_length_tuple_checks_its_length_and_open_ones_do_not():
    registry = Registry("widget")

    @registry.register("gadget", "tuples")
    def gadget(pair: tuple[float, float] = (1.0, 2.0), triple: tuple[int, int, int] = (1, 2, 3),
               many: tuple[int, ...] = ()):
        return pair

    assert registry.bind("gadget", {"pair": [3, 4], "many": [1, 2, 3, 4]}, "w") == {
        "pair": (3.0, 4.0), "triple": (1, 2, 3), "many": (1, 2, 3, 4)}
    with pytest.raises(ConfigError, match=r"'w.triple' must be a list of 3 numbers, got 2 \(\[1, 2\]\)"):
        registry.bind("gadget", {"triple": [1, 2]}, "w")
    with pytest.raises(ConfigError, match=r"'optim.betas' must be a list of 2 numbers, got 1"):
        OPTIMIZERS.bind("adam", {"betas": [0.9]}, "optim")


# --- a value that came through an interpolation names the key the user set ------------------


def test_a_bad_interpolated_value_names_the_override_it_came_from(workdir):
    assert_exit_2(runner.invoke(app, ["train", "model=cnn", "model.width=0"]),
                  "'model.layers[0].out_channels' must be at least 1, got 0 (from model.width=0).")
    assert_exit_2(runner.invoke(app, ["train", "model=lstm", "model.hidden=-2"]),
                  "'model.layers[1].hidden' must be at least 1, got -2 (from model.hidden=-2).")
    assert_exit_2(runner.invoke(app, ["train", "model=lstm", "model.sequence=every"]),
                  "unknown value 'every' (in model.layers[1].sequence)", "(from model.sequence=every)")


def test_a_bad_interpolated_value_set_in_a_file_names_that_key_and_its_value(workdir):
    (workdir / "conf" / "model").mkdir(parents=True)
    (workdir / "conf" / "model" / "thin.yaml").write_text(
        "width: 0\nalias: ${model.width}\nlayers:\n  - {type: flatten}\n  - {type: linear, out_features: \"${model.alias}\"}\n"
        "  - {type: linear}\n")
    assert_exit_2(runner.invoke(app, ["train", "model=thin"]),
                  "'model.layers[1].out_features' must be at least 1, got 0 (from model.width=0).")


def test_a_bad_value_set_directly_names_only_its_key(workdir):
    result = runner.invoke(app, ["train", "model=cnn", "model.layers.0.out_channels=0"])
    assert_exit_2(result, "'model.layers[0].out_channels' must be at least 1, got 0.")
    assert "(from" not in result.output


def test_compose_records_where_each_interpolated_value_came_from():
    references = compose(["model=mlp", "data=blobs", "scheduler=onecycle"]).references
    assert references["model.layers[1].layers[0].out_features"] == "model.width"
    assert references["model.layers[1].times"] == "model.depth"
    assert references["data.seed"] == "seed"
    assert references["scheduler.max_lr"] == "optim.lr"
