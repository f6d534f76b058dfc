"""Registry.bind / Registry.get / check_value: the config-to-code boundary."""

import re
from typing import Annotated, Optional

import pytest

from dlrun.components.activations import ACTIVATIONS
from dlrun.components.optimizers import OPTIMIZERS
from dlrun.data.sources import DATASETS
from dlrun.errors import ConfigError
from dlrun.models.layers import LAYERS
from dlrun.registry import Choice, Range, Registry, check_value


def _make_registry() -> Registry:
    """A registry whose one builder has one option of every kind bind understands."""
    reg = Registry("widget", skip_params=1)

    @reg.register("gadget", "a test builder")
    def gadget(ctx, lr: Annotated[float, Range(gt=0)] = 0.1, count: Annotated[int, Range(ge=1)] = 2,
               frac: Annotated[float, Range(ge=0, lt=1)] = 0.5, flag: bool = False,
               mode: Annotated[str, Choice("fast", "slow")] = "fast",
               size: Optional[Annotated[int, Range(ge=1)]] = None, pair: tuple[float, float] = (1.0, 2.0)):
        return dict(lr=lr, count=count, frac=frac, flag=flag, mode=mode, size=size, pair=pair)

    @reg.register("needs", "a builder with a required option")
    def needs(ctx, shape: list[int]):
        return shape

    return reg


# --- defaults -----------------------------------------------------------------------------


def test_bind_fills_every_default_when_no_option_is_given():
    bound = _make_registry().bind("gadget", {}, "thing")
    assert bound == {"lr": 0.1, "count": 2, "frac": 0.5, "flag": False, "mode": "fast", "size": None,
                     "pair": (1.0, 2.0)}


def test_bind_keeps_given_values_and_fills_the_rest():
    bound = _make_registry().bind("gadget", {"lr": 0.5, "flag": True}, "thing")
    assert bound["lr"] == 0.5 and bound["flag"] is True
    assert bound["count"] == 2 and bound["mode"] == "fast"


def test_bind_fills_real_optimizer_defaults():
    assert OPTIMIZERS.bind("adam", {}, "optim") == {
        "lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False,
    }


def test_bind_does_not_offer_dlrun_supplied_parameters():
    # The optimizer's first parameter (the model's parameters) is dlrun's, not the config's.
    assert "params" not in OPTIMIZERS.config_params("sgd")
    with pytest.raises(ConfigError, match="unknown key 'optim.params'"):
        OPTIMIZERS.bind("sgd", {"params": []}, "optim")
    # Layers skip (ctx, in_shape).
    assert set(LAYERS.config_params("linear")) == {"out_features", "bias"}


def test_bind_reports_a_missing_required_option():
    with pytest.raises(ConfigError) as info:
        _make_registry().bind("needs", {}, "model.layers[3]")
    assert "'model.layers[3].shape' is required" in str(info.value)
    assert "set model.layers[3].shape=" in str(info.value)


# --- unknown keys -------------------------------------------------------------------------


def test_bind_rejects_unknown_key_with_did_you_mean():
    with pytest.raises(ConfigError) as info:
        OPTIMIZERS.bind("adam", {"lrr": 0.01}, "optim")
    message = str(info.value)
    assert "unknown key 'optim.lrr' for optimizer 'adam'" in message
    assert "Did you mean 'lr'?" in message
    assert "Keys it takes: lr, betas, eps, weight_decay, amsgrad." in message


def test_bind_unknown_key_far_from_every_option_has_no_hint():
    with pytest.raises(ConfigError) as info:
        OPTIMIZERS.bind("adam", {"zzzzzz": 1}, "optim")
    assert "Did you mean" not in str(info.value)
    assert "unknown key 'optim.zzzzzz'" in str(info.value)


def test_bind_unknown_key_on_a_builder_without_options_says_none():
    with pytest.raises(ConfigError, match="Keys it takes: none"):
        ACTIVATIONS.bind("relu", {"slope": 0.1}, "activation")


# --- types --------------------------------------------------------------------------------


def test_bind_rejects_a_string_for_a_float():
    with pytest.raises(ConfigError) as info:
        OPTIMIZERS.bind("adam", {"lr": "0.01"}, "optim")
    assert "'optim.lr' must be a number, got '0.01'" in str(info.value)


def test_bind_rejects_a_bool_for_a_float():
    with pytest.raises(ConfigError, match="'thing.lr' must be a number, got True"):
        _make_registry().bind("gadget", {"lr": True}, "thing")


def test_bind_coerces_an_int_to_a_float():
    bound = OPTIMIZERS.bind("sgd", {"lr": 1}, "optim")
    assert bound["lr"] == 1.0 and type(bound["lr"]) is float


@pytest.mark.parametrize("value", [2.5, 0.1, "3", True, None])
def test_bind_rejects_a_non_integer_for_an_int(value):
    with pytest.raises(ConfigError) as info:
        LAYERS.bind("conv2d", {"out_channels": value}, "model.layers[0]")
    assert f"'model.layers[0].out_channels' must be an integer, got {value!r}" in str(info.value)


def test_bind_accepts_an_integral_float_for_an_int_as_int():
    bound = LAYERS.bind("conv2d", {"out_channels": 8.0}, "model.layers[0]")
    assert bound["out_channels"] == 8 and type(bound["out_channels"]) is int


def test_bind_huge_int_gives_the_int_or_a_config_error_never_a_traceback():
    try:
        bound = LAYERS.bind("conv2d", {"out_channels": 10**400}, "model.layers[0]")
    except ConfigError:
        return
    assert bound["out_channels"] == 10**400


@pytest.mark.parametrize("value", [1, 0, "true", "yes", None, 1.0])
def test_bind_rejects_a_non_bool_for_a_bool(value):
    with pytest.raises(ConfigError) as info:
        OPTIMIZERS.bind("adam", {"amsgrad": value}, "optim")
    assert f"'optim.amsgrad' must be true or false, got {value!r}" in str(info.value)


def test_bind_accepts_bools_for_a_bool():
    assert OPTIMIZERS.bind("adam", {"amsgrad": True}, "optim")["amsgrad"] is True
    assert OPTIMIZERS.bind("adam", {"amsgrad": False}, "optim")["amsgrad"] is False


def test_bind_rejects_a_non_string_for_a_string():
    with pytest.raises(ConfigError, match="'data.delimiter' must be a string, got 5"):
        DATASETS.bind("csv", {"delimiter": 5}, "data")


def test_bind_coerces_a_list_of_numbers_to_a_tuple_and_checks_items():
    assert OPTIMIZERS.bind("adam", {"betas": [0.5, 1]}, "optim")["betas"] == (0.5, 1.0)
    with pytest.raises(ConfigError, match=r"'optim.betas\[1\]' must be a number, got 'x'"):
        OPTIMIZERS.bind("adam", {"betas": [0.5, "x"]}, "optim")
    with pytest.raises(ConfigError, match="'optim.betas' must be a list, got 0.9"):
        OPTIMIZERS.bind("adam", {"betas": 0.9}, "optim")


# --- ranges -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 0.0, -1e-3])
def test_bind_rejects_a_value_not_greater_than_a_gt_bound(value):
    with pytest.raises(ConfigError) as info:
        OPTIMIZERS.bind("adam", {"lr": value}, "optim")
    assert "'optim.lr' must be greater than 0" in str(info.value)


def test_bind_accepts_a_value_just_above_a_gt_bound():
    assert OPTIMIZERS.bind("adam", {"lr": 1e-12}, "optim")["lr"] == 1e-12


def test_bind_rejects_a_value_below_a_ge_bound_and_accepts_the_bound():
    with pytest.raises(ConfigError, match="'optim.weight_decay' must be at least 0, got -0.1"):
        OPTIMIZERS.bind("adam", {"weight_decay": -0.1}, "optim")
    assert OPTIMIZERS.bind("adam", {"weight_decay": 0}, "optim")["weight_decay"] == 0.0
    with pytest.raises(ConfigError, match=re.escape("'model.layers[0].out_channels' must be at least 1, got 0")):
        LAYERS.bind("conv2d", {"out_channels": 0}, "model.layers[0]")


@pytest.mark.parametrize("value", [1, 1.0, 1.5])
def test_bind_rejects_a_value_at_or_above_an_lt_bound(value):
    with pytest.raises(ConfigError) as info:
        LAYERS.bind("dropout", {"p": value}, "model.layers[2]")
    assert "'model.layers[2].p' must be less than 1" in str(info.value)


def test_bind_accepts_values_inside_a_ge_lt_range():
    assert LAYERS.bind("dropout", {"p": 0}, "x")["p"] == 0.0
    assert LAYERS.bind("dropout", {"p": 0.99}, "x")["p"] == 0.99


def test_range_violation_texts():
    assert Range(le=2).violation(3) == "must be at most 2"
    assert Range(le=2).violation(2) is None
    assert Range(gt=0, lt=1).violation(0.5) is None
    assert Range(gt=0, lt=1).violation(0) == "must be greater than 0"
    assert Range(gt=0, lt=1).violation(1) == "must be less than 1"


# --- choices ------------------------------------------------------------------------------


def test_bind_rejects_a_value_outside_a_choice_with_hint_and_options():
    with pytest.raises(ConfigError) as info:
        DATASETS.bind("csv", {"task": "classificaton"}, "data")
    message = str(info.value)
    assert "'classificaton'" in message and "data.task" in message
    assert "Did you mean 'classification'?" in message
    assert "Options: auto, classification, regression." in message


def test_bind_accepts_each_choice_option():
    for option in ("auto", "classification", "regression"):
        assert DATASETS.bind("csv", {"task": option}, "data")["task"] == option


def test_bind_checks_the_type_of_a_choice_before_its_options():
    with pytest.raises(ConfigError, match="'thing.mode' must be a string, got 1"):
        _make_registry().bind("gadget", {"mode": 1}, "thing")


# --- optional -----------------------------------------------------------------------------


def test_bind_optional_values_accept_none():
    assert LAYERS.bind("linear", {"out_features": None}, "x")["out_features"] is None
    assert LAYERS.bind("dropout", {"p": None}, "x")["p"] is None  # Annotated[Optional[float], Range]
    assert DATASETS.bind("csv", {"path": None, "target": None}, "data")["path"] is None  # str | None
    assert _make_registry().bind("gadget", {"size": None}, "thing")["size"] is None


def test_bind_optional_values_still_check_non_none_values():
    with pytest.raises(ConfigError, match="must be at least 1, got 0"):
        LAYERS.bind("linear", {"out_features": 0}, "x")
    with pytest.raises(ConfigError, match="must be an integer"):
        _make_registry().bind("gadget", {"size": 1.5}, "thing")
    with pytest.raises(ConfigError, match="'data.path' must be a string"):
        DATASETS.bind("csv", {"path": 3}, "data")


def test_bind_rejects_none_for_a_non_optional_value():
    with pytest.raises(ConfigError, match="'optim.lr' must be a number, got None"):
        OPTIMIZERS.bind("adam", {"lr": None}, "optim")


# --- get ----------------------------------------------------------------------------------


def test_get_returns_the_registered_entry():
    entry = ACTIVATIONS.get("tanh")
    assert entry.name == "tanh" and entry.description == "Hyperbolic tangent"
    assert callable(entry.builder)


def test_get_unknown_name_has_did_you_mean_and_all_options():
    with pytest.raises(ConfigError) as info:
        ACTIVATIONS.get("reluu", "activation.name")
    message = str(info.value)
    assert "unknown activation 'reluu' (in activation.name)." in message
    assert "Did you mean 'relu'?" in message
    assert "Options: elu, gelu, leaky_relu, relu, sigmoid, silu, tanh." in message


def test_get_unknown_name_far_from_every_option_lists_options_without_hint():
    with pytest.raises(ConfigError) as info:
        OPTIMIZERS.get("qqqqqqqq")
    message = str(info.value)
    assert "Did you mean" not in message
    assert "(in " not in message
    assert "Options: adagrad, adam, adamw, rmsprop, sgd." in message


@pytest.mark.parametrize("name", [None, 3, ["relu"], {"relu": 1}])
def test_get_non_string_name_is_a_config_error(name):
    with pytest.raises(ConfigError, match="unknown activation"):
        ACTIVATIONS.get(name)


def test_bind_unknown_name_is_a_config_error_naming_where():
    with pytest.raises(ConfigError, match=r"unknown layer type 'lineer' \(in model.layers\[1\]\)\. Did you mean 'linear'\?"):
        LAYERS.bind("lineer", {}, "model.layers[1]")


def test_check_value_without_hint_passes_anything_through():
    sentinel = object()
    assert check_value(sentinel, None, "x") is sentinel
