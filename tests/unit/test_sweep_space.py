"""dlrun.tuning.space (Hydra's sweep grammar as a grid or a search space) and dlrun.tuning.spec
(sweep files: defaults, fingerprint, lookup). Composes configs only; nothing trains."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from dlrun.config.paths import config_roots, group_options
from dlrun.errors import ConfigError
from dlrun.tuning.space import Param, format_value, grid, search_space
from dlrun.tuning.spec import PACKAGE_SWEEPS, find_sweep, load_spec

REPO_SWEEPS = Path(__file__).resolve().parents[2] / "sweeps"
SHIPPED = sorted(REPO_SWEEPS.glob("*.yaml"))


@pytest.fixture(scope="module")
def groups():
    return group_options(config_roots(None))


def one_param(expression: str, groups, key: str = "data.batch_size") -> Param:
    searched, fixed = search_space({key: expression}, groups, "test")
    assert fixed == []
    (param,) = searched
    return param


# --- grid -------------------------------------------------------------------------------------


def test_grid_lists_every_combination_last_override_fastest(groups):
    assert grid(["optim=adam,sgd", "optim.lr=0.1,0.01"], groups) == [
        ["optim=adam", "optim.lr=0.1"],
        ["optim=adam", "optim.lr=0.01"],
        ["optim=sgd", "optim.lr=0.1"],
        ["optim=sgd", "optim.lr=0.01"],
    ]


def test_grid_range_lists_every_step(groups):
    assert grid(["data.batch_size=range(16,65,step=16)"], groups) == [
        [f"data.batch_size={n}"] for n in (16, 32, 48, 64)
    ]


def test_grid_glob_picks_matching_group_options(groups):
    assert grid(["optim=glob(ad*)"], groups) == [["optim=adagrad"], ["optim=adam"], ["optim=adamw"]]


def test_grid_choice_is_a_list_of_values(groups):
    assert grid(["optim=choice(adam, sgd)"], groups) == [["optim=adam"], ["optim=sgd"]]


def test_grid_keeps_plain_overrides_in_every_combination(groups):
    combinations = grid(["data=iris", "optim=adam,sgd", "trainer.max_epochs=3"], groups)
    assert combinations == [
        ["data=iris", "optim=adam", "trainer.max_epochs=3"],
        ["data=iris", "optim=sgd", "trainer.max_epochs=3"],
    ]


def test_grid_of_plain_overrides_is_one_combination(groups):
    assert grid(["data=iris", "model=mlp"], groups) == [["data=iris", "model=mlp"]]
    assert grid([], groups) == [[]]


def test_grid_refuses_an_interval(groups):
    with pytest.raises(ConfigError, match=r"optim\.lr=interval\(0\.1,1\).*a grid cannot list"):
        grid(["optim.lr=interval(0.1,1)"], groups)


def test_grid_glob_on_a_plain_key_names_the_groups(groups):
    with pytest.raises(ConfigError, match="'optim.lr' is not one. Groups: activation, augment, data"):
        grid(["optim.lr=glob(*)"], groups)


def test_grid_needs_key_equals_value(groups):
    with pytest.raises(ConfigError, match="'model' .* is not an override"):
        grid(["model"], groups)


# --- search_space -----------------------------------------------------------------------------


def test_choice_is_categorical(groups):
    param = one_param("choice(adam, sgd)", groups, key="optim")
    assert (param.kind, param.choices, param.name) == ("categorical", ("adam", "sgd"), "optim")


def test_choice_keeps_value_types(groups):
    assert one_param("choice(16, 32, 64)", groups, key="model.width").choices == (16, 32, 64)
    assert one_param("choice(true, false)", groups, key="model.bidirectional").choices == (True, False)
    assert one_param("choice(0.1, 1, a)", groups, key="x").choices == (0.1, 1, "a")


def test_comma_list_is_categorical(groups):
    assert one_param("adam,sgd", groups, key="optim").choices == ("adam", "sgd")


def test_log_interval_is_a_log_float(groups):
    param = one_param("tag(log, interval(1e-4, 1e-1))", groups, key="optim.lr")
    assert (param.kind, param.low, param.high, param.log) == ("float", 1e-4, 1e-1, True)


def test_interval_is_a_linear_float(groups):
    param = one_param("interval(0.0, 0.5)", groups, key="regularization.dropout")
    assert (param.kind, param.low, param.high, param.log) == ("float", 0.0, 0.5, False)
    assert param.grid_values() is None
    assert param.probes()[:2] == [0.0, 0.5]
    assert 0.0 < param.probes()[2] < 0.5 and not param.probes()[2] * 2 == int(param.probes()[2] * 2)


def test_a_yaml_list_is_a_choice(groups):
    assert one_param(["adam", "sgd"], groups, key="optim").choices == ("adam", "sgd")
    assert one_param([16, 32], groups, key="model.width").choices == (16, 32)


def test_int_tagged_interval_is_an_int(groups):
    param = one_param("tag(int, interval(1, 8))", groups, key="model.depth")
    assert (param.kind, param.low, param.high, param.step) == ("int", 1, 8, None)
    assert param.grid_values() == list(range(1, 9))


def test_range_is_an_int_with_step_and_inclusive_high(groups):
    param = one_param("range(32, 257, step=32)", groups)
    assert (param.kind, param.low, param.high, param.step, param.log) == ("int", 32, 256, 32, False)
    assert param.grid_values() == [32, 64, 96, 128, 160, 192, 224, 256]
    assert param.probes() == [32, 256]


def test_range_whose_stop_is_off_the_step_ends_at_the_last_value(groups):
    param = one_param("range(16, 60, step=16)", groups)
    assert (param.low, param.high) == (16, 48)
    assert param.grid_values() == [16, 32, 48]


def test_descending_range_covers_the_same_values(groups):
    param = one_param("range(64, 15, step=-16)", groups)
    assert param.low <= param.high
    assert sorted(param.grid_values()) == [16, 32, 48, 64]


def test_glob_is_categorical_over_group_options(groups):
    assert one_param("glob(ad*)", groups, key="optim").choices == ("adagrad", "adam", "adamw")


def test_plain_values_are_fixed_overrides(groups):
    searched, fixed = search_space(
        {"optim": "choice(adam, sgd)", "trainer.max_epochs": 5, "optim.lr": 0.01, "model.bidirectional": True,
         "data": "iris", "x": None},
        groups, "test")
    assert [p.key for p in searched] == ["optim"]
    assert fixed == ["trainer.max_epochs=5", "optim.lr=0.01", "model.bidirectional=true", "data=iris", "x=null"]


def test_search_space_keeps_param_order(groups):
    params = {"optim": "choice(adam, sgd)", "optim.lr": "tag(log, interval(1e-4, 1e-1))",
              "data.batch_size": "range(32, 257, step=32)", "regularization.dropout": "interval(0.0, 0.5)"}
    searched, fixed = search_space(params, groups, "test")
    assert [(p.key, p.kind) for p in searched] == [
        ("optim", "categorical"), ("optim.lr", "float"), ("data.batch_size", "int"), ("regularization.dropout", "float")]
    assert fixed == []


@pytest.mark.parametrize("expression, message", [
    ("interval(0.1, 0.01)", r"test, params.optim.lr: interval\(0.1, 0.01\) is empty"),
    ("tag(log, interval(0, 0.1))", "a log interval needs a positive lower bound"),
    ("choice(0.1, 0.1)", "a value is listed twice"),
    ("range(5, 1)", r"range\(5, 1\) holds no value"),
    ("interval(0.1", "cannot parse test, params.optim.lr"),
    ("glob(*)", "glob\\(\\) picks options of a config group"),
])
def test_bad_expressions_name_the_param(groups, expression, message):
    with pytest.raises(ConfigError, match=message):
        search_space({"optim.lr": expression}, groups, "test")


# --- Param and format_value -------------------------------------------------------------------


def test_param_override_formats_the_value():
    assert Param("optim.lr", "float", low=1e-4, high=0.1).override(0.001) == "optim.lr=0.001"
    assert Param("optim", "categorical", choices=("adam",)).override("adam") == "optim=adam"
    assert Param("model.bidirectional", "categorical", choices=(True, False)).override(False) == "model.bidirectional=false"
    assert Param("data.batch_size", "int", low=16, high=64, step=16).override(48) == "data.batch_size=48"


def test_param_keeps_the_plus_prefix_in_overrides_but_not_in_its_name():
    param = Param("+model.blocks", "categorical", choices=(1, 2))
    assert param.override(2) == "+model.blocks=2"
    assert param.name == "model.blocks"


def test_param_grid_values():
    assert Param("optim", "categorical", choices=("adam", "sgd")).grid_values() == ["adam", "sgd"]
    assert Param("b", "int", low=16, high=64, step=16).grid_values() == [16, 32, 48, 64]
    assert Param("b", "int", low=1, high=4).grid_values() == [1, 2, 3, 4]
    assert Param("optim.lr", "float", low=0.1, high=1.0).grid_values() is None


@pytest.mark.parametrize("value, text", [
    (None, "null"), (True, "true"), (False, "false"), (0.1, "0.1"), (1e-4, "0.0001"), (1e-10, "1e-10"),
    (3, "3"), (1.0, "1.0"), ("adam", "adam"),
])
def test_format_value(value, text):
    assert format_value(value) == text


def test_format_value_round_trips_through_hydra():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for value in (None, True, False, 0.1, 1e-4, 1e-10, 3, 1.0, "adam"):
        parsed = parser.parse_override(f"k={format_value(value)}").value()
        assert parsed == value and type(parsed) is type(value), value


# --- spec: load_spec, fingerprint, find_sweep -------------------------------------------------


def write(folder: Path, text: str, name: str = "s.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def test_load_spec_defaults(tmp_path):
    spec = load_spec(write(tmp_path, "params: {optim.lr: 'interval(0.01, 0.1)'}\n"))
    assert spec.metric == "val/loss"
    assert spec.direction is None
    assert spec.sampler.name == "tpe" and spec.sampler.options == {}
    assert spec.pruner.name == "none" and spec.pruner.options == {}
    assert spec.n_jobs == 1
    assert spec.n_trials == 10
    assert spec.seed == 0
    assert spec.overrides == []
    assert spec.params == {"optim.lr": "interval(0.01, 0.1)"}
    assert spec.name == "s"


def test_load_spec_reads_named_sampler_and_pruner_options(tmp_path):
    spec = load_spec(write(tmp_path, "sampler: {name: random}\npruner: {name: median, n_warmup_steps: 5}\n"
                                     "direction: maximize\nmetric: val/acc\nparams: {optim: 'choice(adam, sgd)'}\n"))
    assert (spec.sampler.name, spec.sampler.options) == ("random", {})
    assert (spec.pruner.name, spec.pruner.options) == ("median", {"n_warmup_steps": 5})
    assert (spec.metric, spec.direction) == ("val/acc", "maximize")


def test_load_spec_null_pruner_is_none(tmp_path):
    assert load_spec(write(tmp_path, "pruner: null\nparams: {x: 1}\n")).pruner.name == "none"


def test_load_spec_stringifies_param_keys_and_keeps_the_text(tmp_path):
    text = "# a sweep\nparams: {optim.lr: 0.1}\n"
    spec = load_spec(write(tmp_path, text))
    assert spec.text == text
    assert spec.params == {"optim.lr": 0.1}


BASE_SPEC = "overrides: [data=iris]\nn_trials: 5\nn_jobs: 1\nparams: {optim.lr: 'interval(0.01, 0.1)'}\n"


def test_fingerprint_ignores_n_trials_and_n_jobs(tmp_path):
    spec = load_spec(write(tmp_path, BASE_SPEC))
    more = load_spec(write(tmp_path, BASE_SPEC.replace("n_trials: 5", "n_trials: 50").replace("n_jobs: 1", "n_jobs: 4"),
                           "more.yaml"))
    assert spec.fingerprint([]) == more.fingerprint([])
    assert spec.fingerprint([]) == dataclasses.replace(spec, n_trials=99, n_jobs=8).fingerprint([])
    assert len(spec.fingerprint([])) == 16


@pytest.mark.parametrize("change", [
    {"params": {"optim.lr": "interval(0.01, 0.2)"}},
    {"params": {"optim.lr": "interval(0.01, 0.1)", "optim": "choice(adam, sgd)"}},
    {"overrides": ["data=wine"]},
    {"overrides": []},
    {"metric": "val/acc"},
    {"direction": "maximize"},
])
def test_fingerprint_changes_with_what_defines_the_study(tmp_path, change):
    spec = load_spec(write(tmp_path, BASE_SPEC))
    assert dataclasses.replace(spec, **change).fingerprint([]) != spec.fingerprint([])


def test_fingerprint_changes_with_command_line_overrides(tmp_path):
    spec = load_spec(write(tmp_path, BASE_SPEC))
    assert spec.fingerprint(["trainer.max_epochs=3"]) != spec.fingerprint([])
    assert spec.fingerprint(["trainer.max_epochs=3"]) == spec.fingerprint(["trainer.max_epochs=3"])


@pytest.mark.parametrize("name", ["digits_cnn", "wine_mlp", "digits_lstm"])
def test_find_sweep_finds_the_shipped_sweeps(workdir, name):
    found = find_sweep(name)
    assert found == (PACKAGE_SWEEPS / f"{name}.yaml").resolve()
    assert found.is_file()


def test_find_sweep_prefers_the_current_folders_sweeps(workdir):
    (workdir / "sweeps").mkdir()
    mine = write(workdir / "sweeps", "params: {optim.lr: 0.1}\n", "digits_cnn.yaml")
    assert find_sweep("digits_cnn") == mine.resolve()
    assert find_sweep("wine_mlp") == (PACKAGE_SWEEPS / "wine_mlp.yaml").resolve()


def test_find_sweep_takes_a_path(workdir):
    path = write(workdir, "params: {optim.lr: 0.1}\n", "mine.yaml")
    assert find_sweep("mine.yaml") == path.resolve()
    assert find_sweep(str(path)) == path.resolve()


def test_find_sweep_unknown_name_suggests_one(workdir):
    with pytest.raises(ConfigError, match="unknown sweep 'wine_mpl'.*Did you mean 'wine_mlp'"):
        find_sweep("wine_mpl")
    with pytest.raises(ConfigError, match="no sweep file at 'nope.yaml'"):
        find_sweep("nope.yaml")


# --- the shipped sweep files ------------------------------------------------------------------


def test_the_shipped_sweeps_are_there():
    assert {p.stem for p in SHIPPED} >= {"digits_cnn", "wine_mlp", "digits_lstm"}


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_sweep_loads_and_checks(path, groups):
    from dlrun.tuning.check import check_params

    first_line = path.read_text().splitlines()[0]
    assert first_line.startswith("#") and "dlrun sweep" in first_line, first_line
    spec = load_spec(path)
    searched, fixed = search_space(spec.params, groups, str(path))
    assert searched, "a shipped sweep searches something"
    check_params(searched, spec.overrides + fixed, None, str(path), spec.metric)  # composes; trains nothing
