"""Turn a model's YAML layer list into an nn.Module, inferring every input size; the layer types
that nest a list of layers (repeat, residual) live here, beside the builder they call.

Each layer is built for the shape of one sample coming out of the layer before it;
that shape is found by passing a zero sample through the layer, so any layer type
infers its successor's input without shape arithmetic of its own.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any, Mapping, Sequence

from dlrun.errors import ConfigError
from dlrun.models import sequence as _sequence_layer_types  # noqa: F401  (they register into LAYERS)
from dlrun.models.layers import LAYERS, LayerContext
from dlrun.registry import Range

# Keys every layer accepts besides its builder's own.
COMMON_KEYS = ("type", "enabled")
NESTED = ("repeat", "residual")


@LAYERS.register("repeat", "The layers under `layers`, `times` times in a row")
def repeat(ctx: LayerContext, in_shape, layers: list, times: Annotated[int, Range(ge=0)] = 1):
    from dlrun.models.sequence_modules import MaskedSequential

    blocks, shape = [], tuple(in_shape)
    for _ in range(times):  # each repetition is sized for what the one before gives
        blocks.append(build_sequence(list(layers), shape, ctx))
        produced = output_shape(blocks[-1], shape)
        ctx, shape = _padding_after(blocks[-1], ctx, produced), produced
    return MaskedSequential(*blocks)


@LAYERS.register("residual", "The layers under `layers` plus a skip connection: x + f(x)")
def residual(ctx: LayerContext, in_shape, layers: list):
    from dlrun.models.modules import Residual

    block = build_sequence(list(layers), in_shape, ctx)
    produced = output_shape(block, in_shape)
    if produced != tuple(in_shape):
        raise ConfigError(f"residual at {ctx.where.removesuffix('.layers')}: its layers turn {tuple(in_shape)} into {produced}; "
                          "a skip connection needs them to keep the shape.")
    return Residual(block)


def check_layer_specs(specs: Any, where: str) -> None:
    """Validate a layer list (names and keys) without building it or importing torch."""
    if not isinstance(specs, Sequence) or isinstance(specs, str) or not specs:
        raise ConfigError(f"'{where}' must be a non-empty list of layers, each with a 'type'.")
    for index, spec in enumerate(specs):
        at = f"{where}[{index}]"
        type_name, options = _split(spec, at)
        LAYERS.bind(type_name, options, at)
        if type_name in NESTED:
            check_layer_specs(options.get("layers"), f"{at}.layers")


def build_sequence(specs: Sequence[Mapping], in_shape: tuple[int, ...], ctx: LayerContext):
    """Build the layers of `specs` in order for samples of `in_shape`; a MaskedSequential (an
    nn.Sequential that hands an embedding's padding mask on to the layers after it)."""
    from dlrun.models.sequence_modules import MaskedSequential

    modules = []
    shape = tuple(in_shape)
    for index, spec in enumerate(specs):
        at = f"{ctx.where}[{index}]"
        type_name, options = _split(spec, at)
        if not spec.get("enabled", True):
            continue
        bound = LAYERS.bind(type_name, options, at)
        inner_where = f"{at}.layers" if type_name in NESTED else at
        module = LAYERS.get(type_name).builder(replace(ctx, where=inner_where), shape, **bound)
        produced = _output_shape(module, shape, at, type_name)
        ctx, shape = _padding_after(module, ctx, produced), produced
        modules.append(module)
    return MaskedSequential(*modules)


def _padding_after(module, ctx: LayerContext, produced: tuple[int, ...]) -> LayerContext:
    """The context of the next layer: padded from an embedding on, while the steps stay as they are
    (MaskedSequential's rule at run time), so that builders can refuse what padding would break."""
    if getattr(module, "makes_padding", False):
        return replace(ctx, padded_steps=produced[0])
    if ctx.padded_steps is not None and (len(produced) != 2 or produced[0] != ctx.padded_steps):
        return replace(ctx, padded_steps=None)
    return ctx


def output_shape(module, in_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of one sample after `module`, found by a zero forward pass."""
    import torch

    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            return tuple(module(torch.zeros(2, *in_shape)).shape[1:])
    finally:
        module.train(was_training)


def _output_shape(module, shape, where: str, type_name: str) -> tuple[int, ...]:
    try:
        out = output_shape(module, shape)
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[0]
        raise ConfigError(f"{type_name} at {where} cannot take input shaped {shape}: {first_line}") from None
    return out


def _split(spec: Any, where: str) -> tuple[str, dict]:
    if not isinstance(spec, Mapping) or "type" not in spec:
        raise ConfigError(f"'{where}' must be a mapping with a 'type' key, e.g. {{type: linear}}; got {spec!r}.")
    options = {k: v for k, v in spec.items() if k not in COMMON_KEYS}
    if not isinstance(spec.get("enabled", True), bool):
        raise ConfigError(f"'{where}.enabled' must be true or false, got {spec.get('enabled')!r}.")
    return spec["type"], options


def build_model(layers: Sequence[Mapping], sample_shape: tuple[int, ...], out_features: int,
                activation: tuple[str, dict], dropout: float, vocab_size: int | None = None):
    """The nn.Module for a model's layer list, sized for the data and the task.

    Args:
        layers: the validated layer list (model.layers).
        sample_shape: one sample's shape as the model sees it, e.g. (1, 8, 8).
        out_features: what the last layer must output per sample.
        activation: (name, options) of the chosen activation.
        dropout: regularization.dropout, for dropout layers without their own p.
        vocab_size: the size of the tokenizer's vocabulary when samples are token ids (text data),
            for embedding layers; None for other data.
    """
    from dlrun.components.activations import ACTIVATIONS

    name, options = activation
    builder = ACTIVATIONS.get(name).builder
    ctx = LayerContext(activation=lambda: builder(**options), dropout=dropout,
                       out_features=out_features, where="model.layers", vocab_size=vocab_size)
    net = build_sequence(layers, sample_shape, ctx)
    if vocab_size is not None and not net.makes_padding:
        raise ConfigError(
            f"this data gives token ids shaped {tuple(sample_shape)} (text), which a model reads through an embedding "
            "layer, but model.layers has none. Use model=text_bag, model=text_lstm or model=text_transformer, or start model.layers "
            "with {type: embedding}."
        )
    produced = output_shape(net, sample_shape)
    if produced != (out_features,):
        raise ConfigError(
            f"the model's layers turn each sample {tuple(sample_shape)} into {produced}, but the task needs "
            f"({out_features},). End model.layers with {{type: flatten}} and {{type: linear}} (its size is inferred)."
        )
    return net
