"""build_model / check_layer_specs on the shipped layer lists and on hand-written ones."""

import functools

import pytest
import torch
from torch import nn

from dlrun.config.compose import compose
from dlrun.config.validate import validate
from dlrun.errors import ConfigError
from dlrun.models.build import build_model, check_layer_specs
from dlrun.models.modules import Residual

# (sample shape, output size) per shipped model, as the task asks.
SHAPES = {"cnn": ((1, 8, 8), 10), "mlp": ((4,), 3), "linear": ((4,), 3)}
# Tabular models are composed with a tabular data set; the cnn with the default digits.
DATA_FOR = {"cnn": "data=digits", "mlp": "data=iris", "linear": "data=iris"}
ACTIVATION_CLASSES = {
    "relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU, "gelu": nn.GELU, "silu": nn.SiLU,
}


@functools.lru_cache(maxsize=None)
def _run_config(overrides: tuple[str, ...]):
    return validate(compose(list(overrides)))


def _build(model: str, *overrides: str):
    """Compose + validate model=<model> with overrides, then build it for SHAPES[model]."""
    run = _run_config((DATA_FOR[model], f"model={model}", *overrides))
    shape, out = SHAPES[model]
    net = build_model(run.config["model"]["layers"], shape, out, run.activation, run.regularization["dropout"])
    return net, run


def _of(net: nn.Module, kind) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, kind)]


def _simple(layers, shape=(4,), out=3, activation=("relu", {}), dropout=0.0):
    return build_model(layers, shape, out, activation, dropout)


# --- the shipped models -------------------------------------------------------------------


@pytest.mark.parametrize("model", ["cnn", "mlp", "linear"])
def test_shipped_model_maps_a_batch_to_the_task_output(model):
    net, run = _build(model)
    assert run.choices["model"] == model
    shape, out = SHAPES[model]
    torch.manual_seed(0)
    net.train()
    assert net(torch.randn(5, *shape)).shape == (5, out)
    net.eval()
    assert net(torch.randn(1, *shape)).shape == (1, out)


def test_cnn_infers_the_head_input_size():
    net, _ = _build("cnn")
    convs, linears = _of(net, nn.Conv2d), _of(net, nn.Linear)
    assert [c.in_channels for c in convs] == [1, 32]
    # Two padded 3x3 convs keep 8x8, the 2x2 max pool halves it: 32 * 4 * 4 features.
    assert linears[0].in_features == 32 * 4 * 4 and linears[0].out_features == 128
    assert linears[-1].in_features == 128 and linears[-1].out_features == 10


def test_cnn_width_knob_sets_the_channels():
    net, _ = _build("cnn", "model.width=8")
    assert [c.out_channels for c in _of(net, nn.Conv2d)] == [8, 8]
    assert _of(net, nn.Linear)[0].in_features == 8 * 4 * 4


def test_linear_model_is_one_linear_layer_sized_from_data_and_task():
    net, _ = _build("linear")
    linears = _of(net, nn.Linear)
    assert len(linears) == 1
    assert (linears[0].in_features, linears[0].out_features) == (4, 3)


@pytest.mark.parametrize("name", sorted(ACTIVATION_CLASSES))
def test_activation_layers_are_the_chosen_activation(name):
    net, _ = _build("mlp", f"activation={name}")
    chosen = ACTIVATION_CLASSES[name]
    acts = [m for m in net.modules() if type(m) in ACTIVATION_CLASSES.values()]
    assert len(acts) == 2  # one per hidden layer at the default depth
    assert all(type(m) is chosen for m in acts)


def test_tanh_gives_tanh_modules_and_no_relu_in_the_cnn():
    net, _ = _build("cnn", "activation=tanh")
    assert len(_of(net, nn.Tanh)) == 3
    assert _of(net, nn.ReLU) == []


def test_default_activation_is_relu():
    net, _ = _build("cnn")
    assert len(_of(net, nn.ReLU)) == 3
    assert _of(net, nn.Tanh) == []


def test_activation_options_reach_the_module():
    net, _ = _build("mlp", "activation=leaky_relu", "activation.negative_slope=0.2")
    leaky = _of(net, nn.LeakyReLU)
    assert leaky and all(m.negative_slope == 0.2 for m in leaky)


def test_each_activation_layer_is_its_own_module():
    net, _ = _build("cnn")
    acts = _of(net, nn.ReLU)
    assert len({id(m) for m in acts}) == len(acts)


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_mlp_depth_sets_the_number_of_linear_layers(depth):
    net, _ = _build("mlp", f"model.depth={depth}")
    linears = _of(net, nn.Linear)
    assert len(linears) == depth + 1  # depth hidden layers and the head
    assert linears[0].in_features == 4 and linears[-1].out_features == 3
    assert net(torch.randn(2, 4)).shape == (2, 3)


def test_mlp_width_sets_the_hidden_layer_size():
    net, _ = _build("mlp", "model.width=17", "model.depth=3")
    linears = _of(net, nn.Linear)
    assert [m.out_features for m in linears] == [17, 17, 17, 3]
    assert [m.in_features for m in linears] == [4, 17, 17, 17]


def test_mlp_default_size():
    net, _ = _build("mlp")
    assert [(m.in_features, m.out_features) for m in _of(net, nn.Linear)] == [(4, 64), (64, 64), (64, 3)]


def test_repeated_hidden_layers_do_not_share_weights():
    net, _ = _build("mlp", "model.width=4", "model.depth=3")
    hidden = _of(net, nn.Linear)[:3]
    assert len({id(m.weight) for m in hidden}) == 3
    assert not torch.equal(hidden[1].weight, hidden[2].weight)


def test_mlp_batchnorm_disabled_by_default_is_absent():
    net, run = _build("mlp")
    assert run.config["model"]["batchnorm"] is False
    assert _of(net, nn.BatchNorm1d) == []


def test_mlp_batchnorm_enabled_adds_one_per_hidden_layer():
    net, _ = _build("mlp", "model.batchnorm=true", "model.depth=3", "model.width=6")
    norms = _of(net, nn.BatchNorm1d)
    assert len(norms) == 3 and all(m.num_features == 6 for m in norms)


def test_cnn_batchnorm_false_drops_the_batchnorm_layers():
    with_norm, _ = _build("cnn")
    without, _ = _build("cnn", "model.batchnorm=false")
    assert len(_of(with_norm, nn.BatchNorm2d)) == 2
    assert _of(without, nn.BatchNorm2d) == []
    assert len(without) == len(with_norm) - 2
    assert without(torch.randn(3, 1, 8, 8)).shape == (3, 10)


def test_disabled_layer_is_skipped_in_a_hand_written_list():
    net = _simple([{"type": "linear", "out_features": 5}, {"type": "layernorm", "enabled": False},
                   {"type": "linear"}])
    assert _of(net, nn.LayerNorm) == []
    assert len(net) == 2


def test_enabled_must_be_a_bool():
    with pytest.raises(ConfigError, match=r"'model.layers\[0\].enabled' must be true or false, got 'no'"):
        _simple([{"type": "layernorm", "enabled": "no"}, {"type": "linear"}])


@pytest.mark.parametrize("model", ["cnn", "mlp"])
def test_dropout_layers_use_regularization_dropout(model):
    net, run = _build(model, "regularization=dropout")
    assert run.regularization["dropout"] == 0.3
    drops = _of(net, nn.Dropout)
    assert len(drops) == 2 and all(m.p == 0.3 for m in drops)


def test_dropout_follows_a_regularization_dropout_override():
    net, _ = _build("mlp", "regularization.dropout=0.25")
    assert [m.p for m in _of(net, nn.Dropout)] == [0.25, 0.25]


def test_dropout_is_zero_without_regularization():
    net, _ = _build("mlp")
    assert [m.p for m in _of(net, nn.Dropout)] == [0.0, 0.0]


def test_dropout_acts_in_training_and_not_in_evaluation():
    net, _ = _build("mlp", "regularization=dropout", "regularization.dropout=0.5")
    x = torch.randn(32, *SHAPES["mlp"][0])
    torch.manual_seed(0)
    net.train()
    first, second = net(x), net(x)
    assert not torch.equal(first, second), "training passes drop different units"
    net.eval()
    assert torch.equal(net(x), net(x)), "evaluation is deterministic"
    without = _build("mlp")[0]
    without.load_state_dict(net.state_dict())
    without.eval()
    assert torch.equal(net(x), without(x)), "in evaluation dropout changes nothing"


def test_dropout_layer_with_its_own_p_keeps_it():
    net = _simple([{"type": "dropout", "p": 0.1}, {"type": "dropout"}, {"type": "linear"}], dropout=0.4)
    assert [m.p for m in _of(net, nn.Dropout)] == [0.1, 0.4]


# --- repeat and residual ------------------------------------------------------------------


def test_repeat_builds_its_layers_times_in_a_row():
    net = _simple([{"type": "repeat", "times": 3,
                    "layers": [{"type": "linear", "out_features": 6}, {"type": "activation"}]},
                   {"type": "linear"}], activation=("tanh", {}))
    linears = _of(net, nn.Linear)
    assert [(m.in_features, m.out_features) for m in linears] == [(4, 6), (6, 6), (6, 6), (6, 3)]
    assert len(_of(net, nn.Tanh)) == 3
    assert net(torch.randn(2, 4)).shape == (2, 3)


def test_repeat_zero_times_is_empty():
    net = _simple([{"type": "repeat", "times": 0, "layers": [{"type": "linear", "out_features": 9}]},
                   {"type": "linear"}])
    assert [(m.in_features, m.out_features) for m in _of(net, nn.Linear)] == [(4, 3)]


def test_residual_adds_its_input_to_its_block_output():
    net = _simple([{"type": "residual", "layers": [{"type": "linear", "out_features": 4}, {"type": "activation"}]},
                   {"type": "linear"}])
    residual = net[0]
    assert isinstance(residual, Residual)
    x = torch.randn(5, 4)
    torch.testing.assert_close(residual(x), x + residual.block(x))
    assert net(x).shape == (5, 3)


def test_residual_inside_repeat():
    net = _simple([{"type": "repeat", "times": 2,
                    "layers": [{"type": "residual", "layers": [{"type": "linear", "out_features": 4}]}]},
                   {"type": "linear"}])
    assert len(_of(net, Residual)) == 2
    assert net(torch.randn(2, 4)).shape == (2, 3)


def test_residual_whose_block_changes_the_shape_is_a_config_error():
    with pytest.raises(ConfigError) as info:
        _simple([{"type": "residual", "layers": [{"type": "linear", "out_features": 5}]}, {"type": "linear"}])
    assert "residual at model.layers[0]" in str(info.value)
    assert "(4,)" in str(info.value) and "(5,)" in str(info.value)


def test_residual_whose_block_outputs_one_feature_is_a_config_error():
    # f(x) has shape (1,) for input (4,): x + f(x) broadcasts instead of failing.
    with pytest.raises(ConfigError) as info:
        _simple([{"type": "residual", "layers": [{"type": "linear", "out_features": 1}]}, {"type": "linear"}])
    assert "residual at model.layers[0]" in str(info.value)
    assert "(4,)" in str(info.value) and "(1,)" in str(info.value)


def test_error_in_a_repeated_layer_names_an_index_in_the_config():
    # The first repetition works ((4,) -> (1, 4) -> (1, 2)); the reshape of the second
    # repetition fails. Its config location is model.layers[0].layers[0].
    layers = [{"type": "repeat", "times": 2,
               "layers": [{"type": "reshape", "shape": [1, 4]}, {"type": "conv1d", "out_channels": 1}]},
              {"type": "flatten"}, {"type": "linear"}]
    with pytest.raises(ConfigError) as info:
        _simple(layers)
    assert "model.layers[0].layers[0]" in str(info.value)


# --- errors -------------------------------------------------------------------------------


def test_conv2d_on_tabular_input_names_the_layer():
    with pytest.raises(ConfigError) as info:
        _simple([{"type": "conv2d"}, {"type": "flatten"}, {"type": "linear"}])
    message = str(info.value)
    assert "conv2d at model.layers[0]" in message
    assert "(4,)" in message and "(channels, height, width)" in message


def test_shipped_cnn_on_tabular_input_is_a_config_error():
    run = _run_config(("data=iris", "model=cnn"))
    with pytest.raises(ConfigError, match=r"conv2d at model\.layers\[0\]"):
        build_model(run.config["model"]["layers"], (4,), 3, run.activation, run.regularization["dropout"])


def test_wrong_output_size_is_a_config_error():
    with pytest.raises(ConfigError) as info:
        _simple([{"type": "linear", "out_features": 5}], out=3)
    message = str(info.value)
    assert "into (5,)" in message and "needs (3,)" in message


def test_missing_flatten_before_the_head_is_a_config_error():
    # A cnn-like list without flatten: linear sees (channels, h, w), not (features,).
    with pytest.raises(ConfigError, match=r"linear at model\.layers\[1\] needs input shaped \(features,\)"):
        _simple([{"type": "conv2d", "out_channels": 2}, {"type": "linear"}], shape=(1, 8, 8), out=10)


def test_layer_that_cannot_take_its_input_is_a_config_error():
    # A 3x3 pool on a 2x2 image fails in torch; dlrun names the layer and the shape.
    with pytest.raises(ConfigError) as info:
        _simple([{"type": "maxpool2d", "kernel_size": 3}, {"type": "flatten"}, {"type": "linear"}],
                shape=(1, 2, 2), out=3)
    assert "maxpool2d at model.layers[0] cannot take input shaped (1, 2, 2)" in str(info.value)


def test_build_model_checks_layer_options():
    with pytest.raises(ConfigError, match="Did you mean 'out_features'"):
        _simple([{"type": "linear", "out_feature": 3}])


def test_check_layer_specs_accepts_the_shipped_lists():
    for model in ("cnn", "mlp", "linear"):
        run = _run_config((DATA_FOR[model], f"model={model}"))
        check_layer_specs(run.config["model"]["layers"], "model.layers")  # no error


def test_check_layer_specs_rejects_an_unknown_layer_type_with_did_you_mean():
    with pytest.raises(ConfigError) as info:
        check_layer_specs([{"type": "flatten"}, {"type": "lineer"}], "model.layers")
    message = str(info.value)
    assert "unknown layer type 'lineer' (in model.layers[1])." in message
    assert "Did you mean 'linear'?" in message
    assert "Options: " in message and "conv2d" in message and "residual" in message


def test_check_layer_specs_looks_inside_nested_layers():
    with pytest.raises(ConfigError) as info:
        check_layer_specs([{"type": "repeat", "layers": [{"type": "convv2d"}]}], "model.layers")
    assert "(in model.layers[0].layers[0])" in str(info.value)
    assert "Did you mean 'conv2d'?" in str(info.value)


def test_check_layer_specs_rejects_an_unknown_layer_key():
    with pytest.raises(ConfigError) as info:
        check_layer_specs([{"type": "conv2d", "kernel": 3}], "model.layers")
    assert "unknown key 'model.layers[0].kernel'" in str(info.value)
    assert "Did you mean 'kernel_size'?" in str(info.value)


@pytest.mark.parametrize("specs", [[], None, "linear", {"type": "linear"}])
def test_check_layer_specs_needs_a_non_empty_list(specs):
    with pytest.raises(ConfigError, match="'model.layers' must be a non-empty list of layers"):
        check_layer_specs(specs, "model.layers")


@pytest.mark.parametrize("spec", [{"out_features": 3}, "linear", 3])
def test_check_layer_specs_needs_a_type_in_each_layer(spec):
    with pytest.raises(ConfigError, match=r"'model.layers\[1\]' must be a mapping with a 'type' key"):
        check_layer_specs([{"type": "flatten"}, spec], "model.layers")


def test_check_layer_specs_needs_layers_under_repeat():
    with pytest.raises(ConfigError, match=r"'model.layers\[0\].layers' is required"):
        check_layer_specs([{"type": "repeat", "times": 2}], "model.layers")
