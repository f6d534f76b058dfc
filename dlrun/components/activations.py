"""Activation functions, chosen by the `activation` config group."""

from typing import Annotated

from dlrun.registry import Range, Registry

ACTIVATIONS = Registry("activation", group="activation")


@ACTIVATIONS.register("relu", "Rectified linear unit: max(0, x)")
def relu():
    from torch import nn

    return nn.ReLU()


@ACTIVATIONS.register("sigmoid", "Logistic sigmoid: 1 / (1 + exp(-x))")
def sigmoid():
    from torch import nn

    return nn.Sigmoid()


@ACTIVATIONS.register("tanh", "Hyperbolic tangent")
def tanh():
    from torch import nn

    return nn.Tanh()


@ACTIVATIONS.register("leaky_relu", "ReLU with a small slope for negative inputs")
def leaky_relu(negative_slope: Annotated[float, Range(ge=0)]):
    from torch import nn

    return nn.LeakyReLU(negative_slope)


@ACTIVATIONS.register("elu", "Exponential linear unit")
def elu(alpha: Annotated[float, Range(gt=0)]):
    from torch import nn

    return nn.ELU(alpha)


@ACTIVATIONS.register("gelu", "Gaussian error linear unit (transformers' default)")
def gelu():
    from torch import nn

    return nn.GELU()


@ACTIVATIONS.register("silu", "Sigmoid-weighted linear unit (swish): x * sigmoid(x)")
def silu():
    from torch import nn

    return nn.SiLU()
