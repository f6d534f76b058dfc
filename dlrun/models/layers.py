"""The layer-type registry and its plain layer types (the sequence types are in sequence.py, the
nesting ones, repeat and residual, in build.py, which imports both so that a model sees them all).

Each builder receives dlrun's LayerContext and the input shape of one sample
(without the batch dimension), then the layer's own keys from the config. Sizes
that follow from the input (in_features, in_channels) are never configured.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Callable, Optional

from dlrun.errors import ConfigError
from dlrun.registry import Range, Registry

LAYERS = Registry("layer type", skip_params=2)

Positive = Annotated[int, Range(ge=1)]
Probability = Annotated[Optional[float], Range(ge=0, lt=1)]


@dataclass(frozen=True)
class LayerContext:
    """What layers take from the rest of the config."""

    activation: Callable[[], Any]  # builds one module of the chosen activation
    dropout: float  # regularization.dropout, for dropout layers without their own p
    out_features: int  # the task's output size: classes, 1 for binary bce, or targets
    where: str  # dotted config path of the layer, for messages
    vocab_size: int | None = None  # token ids' vocabulary (text data), for an embedding layer
    padded_steps: int | None = None  # set while the input's steps carry the padding mask of an embedding before


def _need_dims(ctx: LayerContext, in_shape: tuple[int, ...], dims: int, layout: str, type_name: str) -> None:
    if len(in_shape) != dims:
        raise ConfigError(
            f"{type_name} at {ctx.where} needs input shaped {layout}, but it gets {in_shape}. "
            f"Use a model that fits this data (for tabular data: model=mlp or model=linear), "
            f"or add a flatten or reshape layer before it."
        )


@LAYERS.register("linear", "Fully connected layer; out_features defaults to the task's output size")
def linear(ctx: LayerContext, in_shape, out_features: Optional[Positive] = None, bias: bool = True):
    from torch import nn

    _need_dims(ctx, in_shape, 1, "(features,)", "linear")
    return nn.Linear(in_shape[0], out_features or ctx.out_features, bias=bias)


@LAYERS.register("conv1d", "1-d convolution over (channels, length)")
def conv1d(ctx, in_shape, out_channels: Positive = 16, kernel_size: Positive = 3, stride: Positive = 1,
           padding: Annotated[int, Range(ge=0)] = 0):
    from torch import nn

    _need_dims(ctx, in_shape, 2, "(channels, length)", "conv1d")
    return nn.Conv1d(in_shape[0], out_channels, kernel_size, stride=stride, padding=padding)


@LAYERS.register("conv2d", "2-d convolution over (channels, height, width)")
def conv2d(ctx, in_shape, out_channels: Positive = 16, kernel_size: Positive = 3, stride: Positive = 1,
           padding: Annotated[int, Range(ge=0)] = 0):
    from torch import nn

    _need_dims(ctx, in_shape, 3, "(channels, height, width)", "conv2d")
    return nn.Conv2d(in_shape[0], out_channels, kernel_size, stride=stride, padding=padding)


@LAYERS.register("maxpool1d", "Max pooling over length")
def maxpool1d(ctx, in_shape, kernel_size: Positive = 2, stride: Optional[Positive] = None):
    from torch import nn

    _need_dims(ctx, in_shape, 2, "(channels, length)", "maxpool1d")
    return nn.MaxPool1d(kernel_size, stride=stride)


@LAYERS.register("maxpool2d", "Max pooling over height and width")
def maxpool2d(ctx, in_shape, kernel_size: Positive = 2, stride: Optional[Positive] = None):
    from torch import nn

    _need_dims(ctx, in_shape, 3, "(channels, height, width)", "maxpool2d")
    return nn.MaxPool2d(kernel_size, stride=stride)


@LAYERS.register("avgpool1d", "Average pooling over length")
def avgpool1d(ctx, in_shape, kernel_size: Positive = 2, stride: Optional[Positive] = None):
    from torch import nn

    _need_dims(ctx, in_shape, 2, "(channels, length)", "avgpool1d")
    return nn.AvgPool1d(kernel_size, stride=stride)


@LAYERS.register("avgpool2d", "Average pooling over height and width")
def avgpool2d(ctx, in_shape, kernel_size: Positive = 2, stride: Optional[Positive] = None):
    from torch import nn

    _need_dims(ctx, in_shape, 3, "(channels, height, width)", "avgpool2d")
    return nn.AvgPool2d(kernel_size, stride=stride)


@LAYERS.register("adaptive_avgpool", "Average over all positions down to output_size per channel")
def adaptive_avgpool(ctx, in_shape, output_size: Positive = 1):
    from torch import nn

    if len(in_shape) == 2:
        return nn.AdaptiveAvgPool1d(output_size)
    _need_dims(ctx, in_shape, 3, "(channels, length) or (channels, height, width)", "adaptive_avgpool")
    return nn.AdaptiveAvgPool2d(output_size)


@LAYERS.register("batchnorm1d", "Batch normalization of features or (channels, length)")
def batchnorm1d(ctx, in_shape):
    from torch import nn

    if len(in_shape) not in (1, 2):
        _need_dims(ctx, in_shape, 1, "(features,) or (channels, length)", "batchnorm1d")
    return nn.BatchNorm1d(in_shape[0])


@LAYERS.register("batchnorm2d", "Batch normalization of (channels, height, width)")
def batchnorm2d(ctx, in_shape):
    from torch import nn

    _need_dims(ctx, in_shape, 3, "(channels, height, width)", "batchnorm2d")
    return nn.BatchNorm2d(in_shape[0])


@LAYERS.register("layernorm", "Layer normalization over the last dimension")
def layernorm(ctx, in_shape):
    from torch import nn

    return nn.LayerNorm(in_shape[-1])


@LAYERS.register("dropout", "Dropout; p defaults to regularization.dropout")
def dropout(ctx, in_shape, p: Probability = None):
    from torch import nn

    return nn.Dropout(ctx.dropout if p is None else p)


@LAYERS.register("flatten", "Flatten each sample to one feature vector")
def flatten(ctx, in_shape):
    from torch import nn

    return nn.Flatten()


@LAYERS.register("activation", "The activation chosen by the activation group")
def activation(ctx, in_shape):
    return ctx.activation()


@LAYERS.register("reshape", "Reshape each sample, e.g. shape: [1, 8, 8]")
def reshape(ctx, in_shape, shape: list[int]):
    from dlrun.models.modules import Reshape

    return Reshape(tuple(int(d) for d in shape))
