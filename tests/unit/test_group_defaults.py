"""Each default in one place: a group option's YAML file, never its builder's signature.

The registries whose entries are config group options (activation, loss, optim,
scheduler, augment) take their defaults from conf/GROUP/*.yaml, which is what
`dlrun train --cfg` prints and MLflow records. Layer types (entries of a model's
layer list) keep their defaults in their signatures, and so, for now, do data sets:
there the signatures and the shipped data files are checked to agree.
"""

from __future__ import annotations

import inspect

import pytest
from typer.testing import CliRunner

from dlrun.cli import app
from dlrun.components.activations import ACTIVATIONS
from dlrun.components.losses import LOSSES
from dlrun.components.optimizers import OPTIMIZERS
from dlrun.components.schedulers import SCHEDULERS
from dlrun.config.paths import NOT_OPTIONS, PACKAGE_CONF, group_options, read_option, shipped_values
from dlrun.data.augment import AUGMENTS
from dlrun.data.sources import COMMON_KEYS, DATASETS
from dlrun.errors import ConfigError
from dlrun.registry import Registry

GROUP_REGISTRIES = [ACTIVATIONS, LOSSES, OPTIMIZERS, SCHEDULERS, AUGMENTS]
SHIPPED = group_options([PACKAGE_CONF])
# Shipped options that leave out keys on purpose, and why. Plain SGD shows only lr, momentum and
# weight_decay (`dlrun train --cfg optim=sgd` prints exactly those); its dampening and nesterov
# come from optim/momentum.yaml, the other shipped option that names sgd.
LEAVES_OUT = {("optim", "sgd"): {"dampening", "nesterov"}}

OPTIONS = [(registry, option, file) for registry in GROUP_REGISTRIES
           for option, file in SHIPPED[registry.group].items()]
BUILDERS = [(registry, name) for registry in GROUP_REGISTRIES for name in registry.names()]
runner = CliRunner()


def _option_id(value):
    return value.group if isinstance(value, Registry) else getattr(value, "name", str(value))


def test_every_group_registry_names_a_shipped_group():
    assert {registry.group for registry in GROUP_REGISTRIES} == {"activation", "loss", "optim", "scheduler", "augment"}
    assert {registry.group for registry in GROUP_REGISTRIES} <= set(SHIPPED)


@pytest.mark.parametrize("registry,name", BUILDERS, ids=lambda v: _option_id(v))
def test_a_group_option_builder_has_no_defaults(registry, name):
    defaults = [p.name for p in registry.config_params(name).values() if p.default is not inspect.Parameter.empty]
    assert not defaults, f"{registry.kind} '{name}': defaults belong in conf/{registry.group}/{name}.yaml"


@pytest.mark.parametrize("registry,option,file", OPTIONS, ids=lambda v: _option_id(v))
def test_a_shipped_option_lists_exactly_the_keys_its_builder_takes(registry, option, file):
    values = read_option(file)
    name = values.get("name")
    assert name in registry.names(), f"{file} names no {registry.kind}"
    keys = {key for key in values if key not in NOT_OPTIONS}
    takes = set(registry.config_params(name))
    assert not keys - takes, f"{file} adds keys {registry.kind} '{name}' does not take: {sorted(keys - takes)}"
    missing = takes - keys - LEAVES_OUT.get((registry.group, option), set())
    assert not missing, f"{file} misses keys of {registry.kind} '{name}': {sorted(missing)}"


@pytest.mark.parametrize("registry,name", BUILDERS, ids=lambda v: _option_id(v))
def test_every_builder_has_a_shipped_option_of_its_name_and_a_value_for_every_key(registry, name):
    assert name in SHIPPED[registry.group], f"no conf/{registry.group}/{name}.yaml"
    assert set(shipped_values(registry.group, name)) == set(registry.config_params(name))


def test_a_group_registry_refuses_a_builder_with_a_default():
    registry = Registry("gizmo", skip_params=1, group="optim")
    with pytest.raises(TypeError, match=r"gizmo 'fast'.*conf/optim/fast.yaml.*default of lr"):
        @registry.register("fast", "has a default")
        def fast(params, lr: float = 0.1):
            return lr
    assert registry.names() == []


def test_bind_takes_omitted_keys_from_the_shipped_option():
    assert OPTIMIZERS.bind("rmsprop", {"lr": 0.5}, "optim") == {
        "lr": 0.5, "alpha": 0.99, "eps": 1e-8, "weight_decay": 0.0, "momentum": 0.0, "centered": False}
    # The YAML values, which disagreed with the old signatures (sgd lr 0.01, rmsprop 1e-2).
    assert OPTIMIZERS.bind("sgd", {}, "optim")["lr"] == 0.05
    assert OPTIMIZERS.bind("rmsprop", {}, "optim")["lr"] == 0.001
    # Plain sgd.yaml leaves dampening and nesterov to optim/momentum.yaml.
    assert OPTIMIZERS.bind("sgd", {}, "optim") == {"lr": 0.05, "momentum": 0.0, "dampening": 0.0,
                                                   "weight_decay": 0.0, "nesterov": False}


def test_a_key_no_shipped_option_can_give_is_a_config_error_naming_the_key_option_and_fix():
    # onecycle.yaml gives max_lr as ${optim.lr}: only a composed config resolves it.
    with pytest.raises(ConfigError) as info:
        SCHEDULERS.bind("onecycle", {}, "scheduler", option="mine")
    message = str(info.value)
    assert "'scheduler.max_lr' is missing" in message and "(scheduler=mine)" in message
    assert "Add 'max_lr: VALUE' to the option's YAML file, or pass scheduler.max_lr=VALUE" in message


def test_a_user_option_without_a_key_no_shipped_option_gives_exits_2(workdir):
    (workdir / "conf" / "scheduler").mkdir(parents=True)
    (workdir / "conf" / "scheduler" / "mine.yaml").write_text("name: onecycle\npct_start: 0.2\n")
    result = runner.invoke(app, ["train", "--cfg", "scheduler=mine"])
    assert result.exit_code == 2, result.output
    assert "'scheduler.max_lr' is missing" in result.output and "scheduler=mine" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("option,file", sorted(SHIPPED["data"].items()), ids=lambda v: getattr(v, "name", v))
def test_a_shipped_data_option_agrees_with_its_sources_signature(option, file):
    values = read_option(file)
    params = DATASETS.config_params(values["name"])
    keys = {key for key in values if key not in NOT_OPTIONS and key not in COMMON_KEYS}
    assert keys == set(params), f"{file} and data set '{values['name']}' take different keys"
    for key in keys:
        if not (isinstance(values[key], str) and "${" in values[key]):  # seed: ${seed}, the run's seed
            assert values[key] == params[key].default, f"{file}: {key} is {values[key]!r}, the signature says " \
                                                       f"{params[key].default!r}"
