"""Optimizers, chosen by the `optim` group. Keys use torch's own argument names."""

from typing import Annotated

from dlrun.registry import Range, Registry

# The first builder parameter is the model's parameters, supplied by dlrun.
OPTIMIZERS = Registry("optimizer", skip_params=1)

Lr = Annotated[float, Range(gt=0)]
NonNegative = Annotated[float, Range(ge=0)]


@OPTIMIZERS.register("sgd", "Stochastic gradient descent (optional momentum)")
def sgd(params, lr: Lr = 0.01, momentum: NonNegative = 0.0, dampening: NonNegative = 0.0,
        weight_decay: NonNegative = 0.0, nesterov: bool = False):
    import torch

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
