"""Optimizers, chosen by the `optim` group. Keys use torch's own argument names."""

from typing import Annotated

from dlrun.errors import ConfigError
from dlrun.registry import Range, Registry

# The first builder parameter is the model's parameters, supplied by dlrun.
OPTIMIZERS = Registry("optimizer", skip_params=1)

Lr = Annotated[float, Range(gt=0)]
NonNegative = Annotated[float, Range(ge=0)]


@OPTIMIZERS.register("sgd", "Stochastic gradient descent (optional momentum and Nesterov)")
def sgd(params, lr: Lr = 0.01, momentum: NonNegative = 0.0, dampening: NonNegative = 0.0,
        weight_decay: NonNegative = 0.0, nesterov: bool = False):
    import torch

    if nesterov and (momentum <= 0 or dampening != 0):
        raise ConfigError(
            f"optim.nesterov=true needs optim.momentum > 0 and optim.dampening=0, got momentum={momentum:g} "
            f"and dampening={dampening:g}. Set optim.momentum=0.9 optim.dampening=0, or optim.nesterov=false."
        )
    return torch.optim.SGD(params, lr=lr, momentum=momentum, dampening=dampening,
                           weight_decay=weight_decay, nesterov=nesterov)


@OPTIMIZERS.register("adam", "Adam: adaptive moment estimation")
def adam(params, lr: Lr = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
         eps: Annotated[float, Range(gt=0)] = 1e-8, weight_decay: NonNegative = 0.0, amsgrad: bool = False):
    import torch

    return torch.optim.Adam(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)


@OPTIMIZERS.register("adamw", "Adam with decoupled weight decay")
def adamw(params, lr: Lr = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
          eps: Annotated[float, Range(gt=0)] = 1e-8, weight_decay: NonNegative = 0.01, amsgrad: bool = False):
    import torch

    return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)


@OPTIMIZERS.register("rmsprop", "RMSprop: divides by a running average of squared gradients")
def rmsprop(params, lr: Lr = 1e-2, alpha: NonNegative = 0.99, eps: Annotated[float, Range(gt=0)] = 1e-8,
            weight_decay: NonNegative = 0.0, momentum: NonNegative = 0.0, centered: bool = False):
    import torch

    return torch.optim.RMSprop(params, lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                               momentum=momentum, centered=centered)


@OPTIMIZERS.register("adagrad", "Adagrad: per-parameter rates shrinking with the sum of squared gradients")
def adagrad(params, lr: Lr = 1e-2, lr_decay: NonNegative = 0.0, weight_decay: NonNegative = 0.0,
            initial_accumulator_value: NonNegative = 0.0, eps: Annotated[float, Range(gt=0)] = 1e-10):
    import torch

    return torch.optim.Adagrad(params, lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                               initial_accumulator_value=initial_accumulator_value, eps=eps)
