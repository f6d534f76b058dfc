"""Sequence layer types: token embedding, a sequence view, recurrent layers, a transformer encoder,
step pooling.

They register into the same LAYERS registry as dlrun.models.layers (build.py imports
this module, so every model checked or built sees them). A sequence sample is shaped
(steps, features); `to_sequence` turns images and plain series into one, `embedding` token ids
(whose padding the layers after it mask: see dlrun.models.sequence_modules). Torch is
imported inside the builders only, so validating a config stays torch-free.
"""

from __future__ import annotations

from typing import Annotated

from dlrun.errors import ConfigError
from dlrun.models.layers import LAYERS, LayerContext, Positive, Probability
from dlrun.registry import Choice

StepsReturned = Annotated[str, Choice("last", "all")]


def _need_steps(ctx: LayerContext, in_shape: tuple[int, ...], type_name: str) -> None:
    if len(in_shape) != 2:
        raise ConfigError(
            f"{type_name} at {ctx.where} needs input shaped (steps, features), but it gets {tuple(in_shape)}. "
            "Add {type: to_sequence} before it (an image's rows become steps; a series (L,) becomes L steps of 1)."
        )


@LAYERS.register("embedding",
                 "Token ids (steps,) -> (steps, dim) vectors; the vocabulary size comes from the data (data=text); "
                 "the layers after it mask the padding (id 0)")
def embedding(ctx: LayerContext, in_shape, dim: Positive = 64):
    from dlrun.models.sequence_modules import TokenEmbedding

    if ctx.vocab_size is None:
        raise ConfigError(
            f"embedding at {ctx.where} takes token ids, which only text data gives (data=text), but this data's "
            f"samples are features shaped {tuple(in_shape)}. Use a model without an embedding for this data "
            "(model=mlp, model=lstm, ...), or data=text."
        )
    if len(in_shape) != 1:
        raise ConfigError(f"embedding at {ctx.where} takes token ids shaped (steps,), but it gets {tuple(in_shape)}. "
                          "Put it first in model.layers.")
    return TokenEmbedding(ctx.vocab_size, dim)


@LAYERS.register("to_sequence", "View each sample as (steps, features): image rows as steps, (L,) as (L, 1)")
def to_sequence(ctx: LayerContext, in_shape):
    from dlrun.models.sequence_modules import AsSequence

    if len(in_shape) not in (1, 2, 3):
        raise ConfigError(
            f"to_sequence at {ctx.where} takes (length,), (steps, features) or (channels, height, width), "
            f"but it gets {tuple(in_shape)}. Add a reshape layer before it."
        )
    return AsSequence()


def _recurrent(kind: str, ctx: LayerContext, in_shape, hidden: int, layers: int, bidirectional: bool,
               sequence: str, dropout: float | None):
    from torch import nn

    from dlrun.models.sequence_modules import Recurrent

    _need_steps(ctx, in_shape, kind)
    if ctx.padded_steps is not None and bidirectional and layers > 1:
        raise ConfigError(
            f"{kind} at {ctx.where}: after an embedding, a bidirectional {kind} masks padding with one layer only "
            f"(a second layer's backward direction would read the first layer's padded steps), but it has {layers}. "
            f"Set layers: 1, bidirectional: false, or stack two {kind} layers of layers: 1 each."
        )
    p = ctx.dropout if dropout is None else dropout
    rnn_class = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[kind]
    # torch applies dropout between stacked layers only, and warns when there are none.
    rnn = rnn_class(in_shape[1], hidden, num_layers=layers, bidirectional=bidirectional, batch_first=True,
                    dropout=p if layers > 1 else 0.0)
    return Recurrent(rnn, last_only=sequence == "last")


_RECURRENT_HELP = ("; hidden units per direction, layers stacked, sequence: last (hidden,) or all (steps, hidden), "
                   "bidirectional doubles hidden")


@LAYERS.register("rnn", "Elman RNN (tanh) over (steps, features)" + _RECURRENT_HELP)
def rnn(ctx: LayerContext, in_shape, hidden: Positive = 64, layers: Positive = 1, bidirectional: bool = False,
        sequence: StepsReturned = "last", dropout: Probability = None):
    return _recurrent("rnn", ctx, in_shape, hidden, layers, bidirectional, sequence, dropout)


@LAYERS.register("lstm", "LSTM over (steps, features)" + _RECURRENT_HELP)
def lstm(ctx: LayerContext, in_shape, hidden: Positive = 64, layers: Positive = 1, bidirectional: bool = False,
         sequence: StepsReturned = "last", dropout: Probability = None):
    return _recurrent("lstm", ctx, in_shape, hidden, layers, bidirectional, sequence, dropout)


@LAYERS.register("gru", "GRU over (steps, features)" + _RECURRENT_HELP)
def gru(ctx: LayerContext, in_shape, hidden: Positive = 64, layers: Positive = 1, bidirectional: bool = False,
        sequence: StepsReturned = "last", dropout: Probability = None):
    return _recurrent("gru", ctx, in_shape, hidden, layers, bidirectional, sequence, dropout)


@LAYERS.register("transformer_encoder",
                 "Transformer encoder over (steps, features) -> (steps, d_model): input projection, position code, "
                 "layers of self-attention; dropout defaults to regularization.dropout")
def transformer_encoder(ctx: LayerContext, in_shape, d_model: Positive = 64, heads: Positive = 4,
                        layers: Positive = 2, dim_feedforward: Positive = 128, dropout: Probability = None,
                        position: Annotated[str, Choice("sinusoidal", "learned", "none")] = "sinusoidal"):
    from torch import nn

    from dlrun.models.sequence_modules import LearnedPosition, SinusoidalPosition, TransformerEncoder

    _need_steps(ctx, in_shape, "transformer_encoder")
    if d_model % heads:
        divisors = [h for h in range(1, d_model + 1) if d_model % h == 0]
        raise ConfigError(
            f"transformer_encoder at {ctx.where}: d_model ({d_model}) must be divisible by heads ({heads}), "
            f"since each head attends over d_model / heads features. Heads that divide {d_model}: "
            f"{', '.join(map(str, divisors[:8]))}{', ...' if len(divisors) > 8 else ''}; "
            f"or set d_model to a multiple of {heads}."
        )
    steps = in_shape[0]
    codes = {"sinusoidal": SinusoidalPosition, "learned": LearnedPosition}
    code = codes[position](steps, d_model) if position in codes else nn.Identity()
    layer = nn.TransformerEncoderLayer(d_model, heads, dim_feedforward, ctx.dropout if dropout is None else dropout,
                                       batch_first=True)
    return TransformerEncoder(in_shape[1], code, layer, layers)


@LAYERS.register("pool_steps", "Reduce (steps, features) to (features,): mode mean, max, first or last")
def pool_steps(ctx: LayerContext, in_shape, mode: Annotated[str, Choice("mean", "max", "first", "last")] = "mean"):
    from dlrun.models.sequence_modules import PoolSteps

    _need_steps(ctx, in_shape, "pool_steps")
    return PoolSteps(mode)
