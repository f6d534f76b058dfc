"""Text models: the embedding layer, and padding that changes neither pooling, nor attention, nor an LSTM."""

from __future__ import annotations

import pytest
import torch

from dlrun.config.compose import compose
from dlrun.config.validate import validate
from dlrun.data.tokenizer import Tokenizer
from dlrun.errors import ConfigError
from dlrun.models.build import build_model
from dlrun.models.modules import Probabilities, ServingModel
from dlrun.models.sequence_modules import PoolSteps

TEXTS = ["a great film", "dull and boring plot , really", "the cast was warm", "ok"]
RELU = ("relu", {})


def _ids(max_length: int) -> torch.Tensor:
    """TEXTS (8 tokens at most) as ids, padded to max_length, from one vocabulary."""
    return torch.from_numpy(Tokenizer.fit(TEXTS, "word", None, True, max_length).encode(TEXTS))


VOCAB = len(Tokenizer.fit(TEXTS, "word", None, True, 8).vocab)


def _shipped_layers(model: str) -> list:
    return validate(compose([f"model={model}"])).config["model"]["layers"]


def _net(layers: list, steps: int = 12):
    torch.manual_seed(0)
    return build_model(layers, (steps,), 3, RELU, 0.0, vocab_size=VOCAB).eval()


def _unmasked(net, ids: torch.Tensor) -> torch.Tensor:
    """The same layers run one after another without the padding mask."""
    x = ids
    for module in net:
        x = module(x)
    return x


@pytest.mark.parametrize("model", ["text_bag", "text_lstm", "text_transformer"])
def test_more_padding_leaves_a_shipped_text_models_logits_unchanged(model):
    net = _net(_shipped_layers(model))
    with torch.no_grad():
        short, long = net(_ids(8)), net(_ids(12))
        assert torch.allclose(short, long, atol=1e-6), (short - long).abs().max()
        # the check can fail: without the mask, padding does change the logits
        assert not torch.allclose(_unmasked(net, _ids(8)), _unmasked(net, _ids(12)), atol=1e-4)


@pytest.mark.parametrize("recurrent", [
    {"type": "lstm", "hidden": 8, "sequence": "last"},
    {"type": "gru", "hidden": 8, "layers": 2, "sequence": "last"},
    {"type": "rnn", "hidden": 8, "bidirectional": True, "sequence": "last"},
    {"type": "lstm", "hidden": 8, "bidirectional": True, "sequence": "all"},
], ids=["lstm-last", "gru-2-layers", "rnn-bidirectional-last", "lstm-bidirectional-all"])
def test_a_recurrent_layers_summary_ignores_padding(recurrent):
    tail = [] if recurrent["sequence"] == "last" else [{"type": "pool_steps", "mode": "last"}]
    net = _net([{"type": "embedding", "dim": 6}, recurrent, *tail, {"type": "linear"}])
    with torch.no_grad():
        assert torch.allclose(net(_ids(8)), net(_ids(12)), atol=1e-6)


@pytest.mark.parametrize("mode", ["mean", "max", "first", "last"])
def test_every_pool_mode_skips_padded_steps(mode):
    steps = torch.randn(2, 5, 3)
    padding = torch.tensor([[False, False, True, True, True], [False, False, False, False, True]])
    pooled = PoolSteps(mode)(steps, padding)
    for row, length in enumerate((2, 4)):
        assert torch.allclose(pooled[row], PoolSteps(mode)(steps[row:row + 1, :length])[0])


def test_the_mask_reaches_layers_inside_repeat_and_residual():
    encoder = {"type": "transformer_encoder", "d_model": 8, "heads": 2, "layers": 1, "position": "learned"}
    layers = [{"type": "embedding", "dim": 8},
              {"type": "repeat", "times": 2, "layers": [{"type": "residual", "layers": [encoder]}]},
              {"type": "pool_steps", "mode": "mean"}, {"type": "linear"}]
    net = _net(layers)
    with torch.no_grad():
        assert torch.allclose(net(_ids(8)), net(_ids(12)), atol=1e-6)


@pytest.mark.parametrize("model", ["text_bag", "text_lstm", "text_transformer"])
def test_the_exported_served_model_masks_padding_as_the_eager_one_does(model):
    served = ServingModel(torch.nn.Identity(), _net(_shipped_layers(model)), Probabilities()).eval()
    program = torch.export.export(served, (_ids(12),), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    batch = torch.cat([_ids(12)] * 3)  # another batch size than the one exported with
    with torch.no_grad():
        assert torch.allclose(program.module()(batch), served(batch), atol=1e-6)
        assert torch.allclose(program.module()(_ids(12)[:1]), served(_ids(8)[:1]), atol=1e-6)


def test_a_token_embedding_pads_with_a_zero_vector_that_does_not_train():
    net = _net(_shipped_layers("text_lstm"))
    table = net[0].embedding
    assert table.num_embeddings == VOCAB and table.padding_idx == 0
    assert torch.count_nonzero(table.weight[0]) == 0


def test_an_embedding_on_data_that_is_not_text_names_data_text():
    with pytest.raises(ConfigError, match=r"embedding at model.layers\[0\] takes token ids.*data=text"):
        build_model([{"type": "embedding"}, {"type": "flatten"}, {"type": "linear"}], (4,), 3, RELU, 0.0)


def test_text_data_with_a_model_without_embedding_names_the_text_models():
    with pytest.raises(ConfigError, match="model=text_lstm or model=text_transformer"):
        build_model(_shipped_layers("mlp"), (12,), 3, RELU, 0.0, vocab_size=VOCAB)


def test_a_bidirectional_stack_after_an_embedding_is_refused():
    layers = [{"type": "embedding"}, {"type": "lstm", "bidirectional": True, "layers": 2}, {"type": "linear"}]
    with pytest.raises(ConfigError, match=r"lstm at model.layers\[1\].*one layer only.*Set layers: 1"):
        build_model(layers, (12,), 3, RELU, 0.0, vocab_size=VOCAB)
