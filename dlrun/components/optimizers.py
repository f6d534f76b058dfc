"""Optimizers, chosen by the `optim` group. Keys use torch's own argument names.

Builders take no defaults: each key's default is in conf/optim/NAME.yaml (see dlrun.registry).
Each builds torch's fused implementation where torch has one for the optimizer and the parameters'
device (see `_fastest`): the choice depends on the device only, so a run, its resume and its
reproduction on the same kind of device take the same code path.
"""

from contextlib import contextmanager
from typing import Annotated

from dlrun.errors import ConfigError
from dlrun.registry import Range, Registry

# The first builder parameter is the model's parameters, supplied by dlrun.
OPTIMIZERS = Registry("optimizer", skip_params=1, group="optim")

Lr = Annotated[float, Range(gt=0)]
NonNegative = Annotated[float, Range(ge=0)]
Epsilon = Annotated[float, Range(gt=0)]


# Off inside `unfused()`: Lightning refuses to clip gradients under mixed precision with a fused optimizer.
_FUSED_ALLOWED = [True]


@contextmanager
def unfused():
    """Optimizers built inside the block use torch's default implementation, never the fused kernel."""
    _FUSED_ALLOWED.append(False)
    try:
        yield
    finally:
        _FUSED_ALLOWED.pop()


def _fastest(optimizer_class, params, **options):
    """optimizer_class(params, **options) with fused=True where torch offers a fused kernel for these
    parameters (one step for all tensors: about 3x quicker than the per-tensor loop on CPU for the
    reference models); elsewhere torch's own default (foreach on CUDA, the per-tensor loop otherwise)."""
    params = list(params)
    if not _FUSED_ALLOWED[-1]:
        return optimizer_class(params, **options)
    try:
        return optimizer_class(params, fused=True, **options)
    except (RuntimeError, ValueError):  # no fused kernel for this device or dtype
        return optimizer_class(params, **options)


@OPTIMIZERS.register("sgd", "Stochastic gradient descent (optional momentum and Nesterov)")
def sgd(params, lr: Lr, momentum: NonNegative, dampening: NonNegative, weight_decay: NonNegative, nesterov: bool):
    import torch

    if nesterov and (momentum <= 0 or dampening != 0):
        raise ConfigError(
            f"optim.nesterov=true needs optim.momentum > 0 and optim.dampening=0, got momentum={momentum:g} "
            f"and dampening={dampening:g}. Set optim.momentum=0.9 optim.dampening=0, or optim.nesterov=false."
        )
    return _fastest(torch.optim.SGD, params, lr=lr, momentum=momentum, dampening=dampening,
                    weight_decay=weight_decay, nesterov=nesterov)


@OPTIMIZERS.register("adam", "Adam: adaptive moment estimation")
def adam(params, lr: Lr, betas: tuple[float, float], eps: Epsilon, weight_decay: NonNegative, amsgrad: bool):
    import torch

    return _fastest(torch.optim.Adam, params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                    amsgrad=amsgrad)


@OPTIMIZERS.register("adamw", "Adam with decoupled weight decay")
def adamw(params, lr: Lr, betas: tuple[float, float], eps: Epsilon, weight_decay: NonNegative, amsgrad: bool):
    import torch

    return _fastest(torch.optim.AdamW, params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                    amsgrad=amsgrad)


@OPTIMIZERS.register("rmsprop", "RMSprop: divides by a running average of squared gradients")
def rmsprop(params, lr: Lr, alpha: NonNegative, eps: Epsilon, weight_decay: NonNegative, momentum: NonNegative,
            centered: bool):
    import torch

    return torch.optim.RMSprop(params, lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                               momentum=momentum, centered=centered)


@OPTIMIZERS.register("adagrad", "Adagrad: per-parameter rates shrinking with the sum of squared gradients")
def adagrad(params, lr: Lr, lr_decay: NonNegative, weight_decay: NonNegative,
            initial_accumulator_value: NonNegative, eps: Epsilon):
    import torch

    return _fastest(torch.optim.Adagrad, params, lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                    initial_accumulator_value=initial_accumulator_value, eps=eps)
