"""Sequence layers (to_sequence, rnn, lstm, gru, transformer_encoder, pool_steps) and the
model families built from them (rnn, lstm, gru, transformer), plus the linear svm."""

import functools
import subprocess
import sys
import warnings

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from dlrun.components.losses import LOSSES
from dlrun.config.compose import compose
from dlrun.config.validate import validate
from dlrun.data.loader import BatchLoader
from dlrun.data.prepare import load_data
from dlrun.errors import ConfigError
from dlrun.models.build import build_model, build_sequence, check_layer_specs, output_shape
from dlrun.models.layers import LayerContext
from dlrun.models.sequence_modules import AsSequence, Recurrent
from dlrun.training.module import DlrunModule

RECURRENT = ["rnn", "lstm", "gru"]
SEQUENCE_FAMILIES = [*RECURRENT, "transformer"]
FAMILIES = [*SEQUENCE_FAMILIES, "svm"]
TORCH_CLASS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


@functools.lru_cache(maxsize=None)
def _run_config(*overrides: str):
    return validate(compose(list(overrides)))


def _layers(model: str, *overrides: str) -> list:
    # loss=cross_entropy keeps these tests about the layers, whichever loss svm picks.
    return _run_config("data=digits", f"model={model}", "loss=cross_entropy", *overrides).config["model"]["layers"]


def _build_family(model: str, shape, out: int, *overrides: str, dropout: float = 0.0):
    return build_model(_layers(model, *overrides), shape, out, ("relu", {}), dropout)


def _build(specs, shape, dropout: float = 0.0):
    """A hand-written layer list built as it comes, without a task head."""
    ctx = LayerContext(activation=nn.ReLU, dropout=dropout, out_features=3, where="model.layers")
    return build_sequence(specs, shape, ctx)


def _of(net: nn.Module, kind) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, kind)]


# --- registration -------------------------------------------------------------------------


def test_sequence_layers_are_registered_and_validation_stays_torch_free():
    # Importing the layer registry alone registers the sequence layers; checking a
    # sequence model's config must not import torch (`dlrun configs`, `--cfg` stay fast).
    code = ("import sys; from dlrun.models.layers import LAYERS; from dlrun.models.build import check_layer_specs; "
            "check_layer_specs([{'type': 'to_sequence'}, {'type': 'lstm', 'sequence': 'all'}, "
            "{'type': 'transformer_encoder'}, {'type': 'pool_steps'}, {'type': 'linear'}], 'model.layers'); "
            "print(sorted({'to_sequence', 'rnn', 'lstm', 'gru', 'transformer_encoder', 'pool_steps'} - set(LAYERS.names())), "
            "'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[] False"


# --- the families build for images and for series -----------------------------------------


@pytest.mark.parametrize("model", FAMILIES)
@pytest.mark.parametrize("shape,out", [((1, 8, 8), 10), ((20,), 1)], ids=["digits", "series-window"])
def test_family_maps_a_batch_to_the_task_output(model, shape, out):
    net = _build_family(model, shape, out)
    torch.manual_seed(0)
    net.train()
    assert net(torch.randn(4, *shape)).shape == (4, out)
    net.eval()
    assert net(torch.randn(1, *shape)).shape == (1, out)


@pytest.mark.parametrize("model", RECURRENT)
def test_recurrent_family_knobs_reach_the_layer(model):
    net = _build_family(model, (1, 8, 8), 10, "model.hidden=12", "model.depth=2", "model.bidirectional=true")
    (rnn,) = _of(net, TORCH_CLASS[model])
    assert (rnn.input_size, rnn.hidden_size, rnn.num_layers, rnn.bidirectional) == (8, 12, 2, True)
    assert _of(net, nn.Linear)[-1].in_features == 8 * 24  # by default the head reads all 8 steps, both directions


@pytest.mark.parametrize("model", RECURRENT)
def test_recurrent_family_head_reads_the_last_step_on_request(model):
    net = _build_family(model, (20,), 1, "model.sequence=last", "model.hidden=7")
    assert _of(net, Recurrent)[0].last_only
    assert _of(net, nn.Linear)[-1].in_features == 7


def test_transformer_family_knobs_reach_the_layer():
    net = _build_family("transformer", (1, 8, 8), 10, "model.d_model=16", "model.heads=2", "model.depth=3")
    (encoder,) = _of(net, nn.TransformerEncoder)
    assert len(encoder.layers) == 3
    assert encoder.layers[0].self_attn.num_heads == 2 and encoder.layers[0].self_attn.embed_dim == 16
    assert _of(net, nn.Linear)[0].in_features == 8  # the input projection: 8 pixels per row
    assert _of(net, nn.Linear)[-1].in_features == 16


def test_svm_is_one_linear_layer_and_picks_the_hinge_loss():
    net = _build_family("svm", (1, 8, 8), 10)
    linears = _of(net, nn.Linear)
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 10)]
    run = _run_config("data=digits", "model=svm")
    assert run.choices["loss"] == "hinge" and run.loss[0] == "hinge"
    assert _run_config("data=iris", "model=svm").loss[0] == "hinge"  # a data set's model pick does not undo it
    assert _run_config("data=digits", "model=svm", "loss=cross_entropy").loss[0] == "cross_entropy"
    assert _run_config("data=digits", "model=lstm").loss[0] == "auto"


def test_transformer_dropout_defaults_to_regularization_dropout():
    net = _build_family("transformer", (1, 8, 8), 10, dropout=0.25)
    drops = _of(_of(net, nn.TransformerEncoder)[0], nn.Dropout)
    assert drops and all(m.p == 0.25 for m in drops)
    own = _build([{"type": "to_sequence"}, {"type": "transformer_encoder", "d_model": 8, "heads": 2, "dropout": 0.1}],
                 (1, 8, 8), dropout=0.25)
    assert all(m.p == 0.1 for m in _of(own, nn.Dropout))


def test_recurrent_dropout_applies_between_stacked_layers_only():
    one = _build([{"type": "to_sequence"}, {"type": "lstm", "hidden": 4}], (6,), dropout=0.3)
    two = _build([{"type": "to_sequence"}, {"type": "lstm", "hidden": 4, "layers": 2}], (6,), dropout=0.3)
    assert _of(one, nn.LSTM)[0].dropout == 0.0  # torch warns about dropout with nothing to drop between
    assert _of(two, nn.LSTM)[0].dropout == 0.3


# --- sequence: last | all, bidirectional ------------------------------------------------------


@pytest.mark.parametrize("kind", RECURRENT)
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("sequence", ["last", "all"])
def test_recurrent_output_shape(kind, bidirectional, sequence):
    specs = [{"type": "to_sequence"},
             {"type": kind, "hidden": 5, "bidirectional": bidirectional, "sequence": sequence}]
    features = 10 if bidirectional else 5
    expected = (features,) if sequence == "last" else (8, features)
    assert output_shape(_build(specs, (1, 8, 8)), (1, 8, 8)) == expected


@pytest.mark.parametrize("kind", RECURRENT)
def test_last_step_is_the_final_step_of_each_direction(kind):
    torch.manual_seed(0)
    net = _build([{"type": kind, "hidden": 3, "layers": 2, "bidirectional": True, "sequence": "last"}], (7, 4))
    recurrent = net[0]
    assert isinstance(recurrent, Recurrent)
    x = torch.randn(2, 7, 4)
    steps, _ = recurrent.rnn(x)
    # Forward after the last step, backward after (reading back to) the first step.
    torch.testing.assert_close(recurrent(x), torch.cat([steps[:, -1, :3], steps[:, 0, 3:]], dim=-1))


def test_all_steps_feed_a_pool_then_a_head():
    net = build_model([{"type": "to_sequence"}, {"type": "gru", "hidden": 6, "sequence": "all"},
                       {"type": "pool_steps", "mode": "max"}, {"type": "linear"}], (20,), 1, ("relu", {}), 0.0)
    assert net(torch.randn(3, 20)).shape == (3, 1)


@pytest.mark.parametrize("mode,expected", [("mean", [2.0, 20.0]), ("max", [4.0, 40.0]),
                                           ("first", [0.0, 0.0]), ("last", [4.0, 40.0])])
def test_pool_steps_modes(mode, expected):
    x = torch.stack([torch.arange(5.0), 10 * torch.arange(5.0)], dim=-1).unsqueeze(0)  # (1, 5 steps, 2)
    pooled = _build([{"type": "pool_steps", "mode": mode}], (5, 2))(x)
    assert pooled.tolist() == [expected]


# --- to_sequence ----------------------------------------------------------------------------


def test_to_sequence_reads_digits_rows_as_steps():
    image = torch.arange(64.0).reshape(1, 1, 8, 8)  # pixel (i, j) holds 8 * i + j
    sequence = _build([{"type": "to_sequence"}], (1, 8, 8))(image)
    assert sequence.shape == (1, 8, 8)
    for i in range(8):
        assert sequence[0, i].tolist() == image[0, 0, i].tolist() == [8.0 * i + j for j in range(8)]


def test_to_sequence_joins_the_channels_of_a_row():
    image = torch.randn(2, 3, 4, 5)  # (channels, height, width)
    sequence = AsSequence()(image)
    assert sequence.shape == (2, 4, 15)
    torch.testing.assert_close(sequence[:, 1], torch.cat([image[:, c, 1] for c in range(3)], dim=-1))


def test_to_sequence_makes_a_series_steps_of_one_value_and_keeps_steps_features():
    series = torch.randn(2, 20)
    assert output_shape(_build([{"type": "to_sequence"}], (20,)), (20,)) == (20, 1)
    torch.testing.assert_close(AsSequence()(series)[..., 0], series)
    already = torch.randn(2, 6, 3)
    assert torch.equal(AsSequence()(already), already)


# --- transformer position codes -------------------------------------------------------------


def _encoder(position: str, seed: int = 0):
    torch.manual_seed(seed)
    return _build([{"type": "transformer_encoder", "d_model": 8, "heads": 2, "layers": 1, "position": position},
                   {"type": "pool_steps"}], (5, 3)).eval()


def test_sinusoidal_position_code_is_fixed_and_not_trained():
    code = _encoder("sinusoidal", seed=0)[0].position
    assert torch.equal(code.table, _encoder("sinusoidal", seed=1)[0].position.table)
    assert list(code.parameters()) == [] and code.table.shape == (5, 8)
    assert torch.equal(code.table[0, 1::2], torch.ones(4))  # cos(0) in the odd features of step 0


def test_learned_position_code_is_a_parameter_per_step():
    code = _encoder("learned")[0].position
    assert [p.shape for p in code.parameters()] == [(5, 8)]


@pytest.mark.parametrize("position,invariant", [("none", True), ("sinusoidal", False), ("learned", False)])
def test_only_a_position_code_makes_step_order_matter(position, invariant):
    net = _encoder(position)
    with torch.no_grad():
        if position == "learned":
            net[0].position.table.add_(torch.randn(5, 8))  # as if trained: steps differ clearly
        x = torch.randn(2, 5, 3)
        same = torch.allclose(net(x), net(x.flip(1)), atol=1e-5)
    assert same is invariant


# --- training through dlrun's own pieces ----------------------------------------------------


# digits: (1, 8, 8) images, 10 classes; sine: (20,) windows of a series, one value to forecast.
@pytest.mark.parametrize("model,data_set", [(m, "digits") for m in FAMILIES] + [(m, "sine") for m in SEQUENCE_FAMILIES])
def test_family_trains_a_short_epoch(model, data_set):
    run = _run_config(f"data={data_set}", f"model={model}", "trainer.max_epochs=1")
    data = load_data(run.data, run.seed)
    net = build_model(run.config["model"]["layers"], data.sample_shape, data.out_features,
                      run.activation, run.regularization["dropout"])
    before = [p.detach().clone() for p in net.parameters()]
    loss_name, loss_options = run.loss  # svm: hinge; the others: auto
    module = DlrunModule(net, LOSSES.get(loss_name).builder(data.num_classes, **loss_options),
                         lambda params: torch.optim.Adam(params, lr=1e-3), data.task)
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         accelerator="cpu", num_sanity_val_steps=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's hints about workers and small batches
        trainer.fit(module, BatchLoader(data.x_train, data.y_train, 64, shuffle=True),
                    BatchLoader(data.x_val, data.y_val, 64, shuffle=False))
    assert trainer.global_step == 3
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert torch.isfinite(trainer.callback_metrics["val/loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))


# --- errors name the layer ------------------------------------------------------------------


def test_d_model_not_divisible_by_heads_says_so():
    with pytest.raises(ConfigError) as info:
        _build_family("transformer", (1, 8, 8), 10, "model.d_model=30", "model.heads=4")
    message = str(info.value)
    assert "transformer_encoder at model.layers[1]" in message
    assert "d_model (30) must be divisible by heads (4)" in message
    assert "1, 2, 3, 5, 6" in message  # heads that would work


@pytest.mark.parametrize("kind", [*RECURRENT, "transformer_encoder", "pool_steps"])
def test_sequence_layer_on_an_image_asks_for_to_sequence(kind):
    with pytest.raises(ConfigError) as info:
        _build([{"type": kind}], (1, 8, 8))
    message = str(info.value)
    assert f"{kind} at model.layers[0] needs input shaped (steps, features)" in message
    assert "(1, 8, 8)" in message and "{type: to_sequence}" in message


def test_to_sequence_on_a_4d_sample_is_a_config_error():
    with pytest.raises(ConfigError, match=r"to_sequence at model.layers\[0\] takes .* but it gets \(1, 2, 3, 4\)"):
        _build([{"type": "to_sequence"}], (1, 2, 3, 4))


def test_whole_sequence_into_a_linear_head_is_a_config_error():
    with pytest.raises(ConfigError, match=r"linear at model.layers\[2\] needs input shaped \(features,\)"):
        build_model([{"type": "to_sequence"}, {"type": "lstm", "sequence": "all"}, {"type": "linear"}],
                     (1, 8, 8), 10, ("relu", {}), 0.0)


@pytest.mark.parametrize("layer,message", [
    ({"type": "lstm", "sequence": "first"}, r"unknown value 'first' \(in model.layers\[1\].sequence\).*Options: all, last"),
    ({"type": "gru", "hiden": 8}, r"unknown key 'model.layers\[1\].hiden' for layer type 'gru'. Did you mean 'hidden'"),
    ({"type": "rnn", "hidden": 0}, r"'model.layers\[1\].hidden' must be at least 1, got 0"),
    ({"type": "lstm", "bidirectional": "yes"}, r"'model.layers\[1\].bidirectional' must be true or false"),
    ({"type": "transformer_encoder", "position": "rotary"}, r"unknown value 'rotary' \(in model.layers\[1\].position\)"),
    ({"type": "transformer_encoder", "dropout": 1.5}, r"'model.layers\[1\].dropout' must be less than 1"),
    ({"type": "pool_steps", "mode": "sum"}, r"unknown value 'sum' \(in model.layers\[1\].mode\)"),
])
def test_bad_sequence_layer_keys_fail_validation_naming_the_layer(layer, message):
    with pytest.raises(ConfigError, match=message):
        check_layer_specs([{"type": "to_sequence"}, layer, {"type": "linear"}], "model.layers")


def test_bad_family_knob_fails_validation_before_anything_is_built():
    with pytest.raises(ConfigError, match=r"'model.layers\[1\].hidden' must be at least 1, got 0"):
        _run_config("data=digits", "model=lstm", "model.hidden=0")
