"""tracking.params: the resolved config as flat MLflow params."""

from dlrun.tracking.params import MAX_VALUE_LENGTH, flatten, run_params


def test_nested_dicts_become_dotted_keys():
    assert flatten({"optim": {"lr": 0.1, "name": "adam"}, "seed": 42}) == {
        "optim.lr": "0.1", "optim.name": "adam", "seed": "42",
    }


def test_deeply_nested_dicts():
    assert flatten({"a": {"b": {"c": {"d": True}}}}) == {"a.b.c.d": "True"}


def test_values_become_strings():
    flat = flatten({"a": 1, "b": 1e-4, "c": None, "d": False, "e": "text"})
    assert flat == {"a": "1", "b": "0.0001", "c": "None", "d": "False", "e": "text"}
    assert all(isinstance(v, str) for v in flat.values())


def test_lists_of_dicts_are_indexed_by_position():
    layers = [{"type": "flatten"}, {"type": "linear", "out_features": 3}]
    assert flatten({"model": {"layers": layers}}) == {
        "model.layers.0.type": "flatten",
        "model.layers.1.type": "linear",
        "model.layers.1.out_features": "3",
    }


def test_nested_layer_lists_are_indexed_at_every_level():
    layers = [{"type": "repeat", "times": 2, "layers": [{"type": "linear"}, {"type": "activation"}]}]
    assert flatten({"layers": layers}) == {
        "layers.0.type": "repeat", "layers.0.times": "2",
        "layers.0.layers.0.type": "linear", "layers.0.layers.1.type": "activation",
    }


def test_lists_of_scalars_are_kept_whole():
    assert flatten({"optim": {"betas": [0.9, 0.999]}, "shape": [1, 8, 8]}) == {
        "optim.betas": "[0.9, 0.999]", "shape": "[1, 8, 8]",
    }


def test_empty_list_is_one_param():
    assert flatten({"tags": []}) == {"tags": "[]"}


def test_long_values_are_cut_to_mlflows_limit():
    flat = flatten({"note": "x" * (MAX_VALUE_LENGTH + 100)})
    assert len(flat["note"]) == MAX_VALUE_LENGTH


def test_run_params_adds_group_choices_under_the_group_name():
    config = {"model": {"width": 64, "layers": [{"type": "flatten"}]}, "optim": {"name": "adam", "lr": 0.001},
              "seed": 42}
    params = run_params(config, {"model": "mlp", "optim": "adam", "data": "iris"})
    assert params["model"] == "mlp"
    assert params["optim"] == "adam"
    assert params["data"] == "iris"
    assert params["model.width"] == "64"
    assert params["model.layers.0.type"] == "flatten"
    assert params["optim.lr"] == "0.001"
    assert params["seed"] == "42"
    assert len(params) == 8


def test_run_params_does_not_change_the_config():
    config = {"model": {"width": 64}}
    run_params(config, {"model": "mlp"})
    assert config == {"model": {"width": 64}}
