"""Loss functions, chosen by the `loss` group, and which tasks each one fits.

Every loss takes the model's raw outputs and the batch targets as the data module
stores them: class indices (int64, shape (N,)) for classification, standardized
values (float32, shape (N, targets)) for regression. Regression losses used on a
classification task compare the outputs with one-hot targets.
"""

import functools
from typing import Annotated, Iterable

from dlrun.errors import ConfigError
from dlrun.registry import Range, Registry

# The kinds of task a loss can train. "binary" is classification with exactly two
# classes, where the model outputs one logit (see output_size).
TASK_KINDS = ("classification", "regression", "binary")
ONE_LOGIT = frozenset({"binary"})


def _checked_fits(fits: Iterable[str]) -> frozenset[str]:
    """The `fits` of a loss registration, checked: a non-empty set of TASK_KINDS."""
    kinds = frozenset([fits] if isinstance(fits, str) else fits)
    if not kinds or not kinds <= set(TASK_KINDS):
        raise TypeError(f"a loss's fits must name some of {', '.join(TASK_KINDS)}; got {sorted(kinds)}.")
    return kinds


# The first builder parameter is the number of classes (0 for regression). Each loss
# registers with fits=..., the tasks it can train: a loss without it cannot register.
# Builders take no defaults: each key's default is in conf/loss/NAME.yaml (see dlrun.registry).
LOSSES = Registry("loss", skip_params=1, group="loss", required={"fits": _checked_fits})

Probability = Annotated[float, Range(ge=0, lt=1)]


@LOSSES.register("auto", "cross_entropy for classification, mse for regression",
                 fits={"classification", "regression"})
def auto(num_classes: int):
    return cross_entropy(num_classes, label_smoothing=0.0) if num_classes else mse(num_classes)


@LOSSES.register("cross_entropy", "Cross-entropy over class logits (classification)", fits={"classification"})
def cross_entropy(num_classes: int, label_smoothing: Probability):
    from torch import nn

    return nn.CrossEntropyLoss(label_smoothing=label_smoothing)


@LOSSES.register("bce", "Binary cross-entropy on one logit (two classes; targets 0/1)", fits=ONE_LOGIT)
def bce(num_classes: int):
    import torch.nn.functional as F

    def one_logit_bce(outputs, targets):
        return F.binary_cross_entropy_with_logits(outputs[:, 0], targets.to(outputs.dtype))

    return one_logit_bce


@LOSSES.register("kl_div", "KL divergence of log_softmax(outputs) from one-hot or smoothed targets",
                 fits={"classification"})
def kl_div(num_classes: int, smoothing: Probability):
    import torch.nn.functional as F

    def smoothed_kl_div(outputs, targets):
        wanted = F.one_hot(targets, num_classes).to(outputs.dtype) * (1 - smoothing) + smoothing / num_classes
        return F.kl_div(F.log_softmax(outputs, dim=-1), wanted, reduction="batchmean")

    return smoothed_kl_div


@LOSSES.register("hinge", "Multi-class margin (SVM) loss, as torch's MultiMarginLoss", fits={"classification"})
def hinge(num_classes: int, margin: Annotated[float, Range(gt=0)], p: Annotated[int, Range(ge=1, le=2)]):
    from torch import nn

    return nn.MultiMarginLoss(p=p, margin=margin)


@LOSSES.register("mse", "Mean squared error (regression; one-hot targets on classification)",
                 fits={"classification", "regression"})
def mse(num_classes: int):
    import torch.nn.functional as F

    return _against_one_hot(F.mse_loss, num_classes)


@LOSSES.register("mae", "Mean absolute error (regression; one-hot targets on classification)",
                 fits={"classification", "regression"})
def mae(num_classes: int):
    import torch.nn.functional as F

    return _against_one_hot(F.l1_loss, num_classes)


@LOSSES.register("huber", "Huber loss: squared below delta, linear above (one-hot targets on classification)",
                 fits={"classification", "regression"})
def huber(num_classes: int, delta: Annotated[float, Range(gt=0)]):
    import torch.nn.functional as F

    return _against_one_hot(functools.partial(F.huber_loss, delta=delta), num_classes)


def _against_one_hot(loss_fn, num_classes: int):
    """loss_fn itself for regression; on classification, loss_fn against one-hot targets."""
    if not num_classes:
        return loss_fn

    import torch.nn.functional as F

    def one_hot_loss(outputs, targets):
        return loss_fn(outputs, F.one_hot(targets, num_classes).to(outputs.dtype))

    return one_hot_loss


def fits(name: str) -> frozenset[str]:
    """The kinds of task loss `name` trains, as it registered them."""
    return LOSSES.get(name, "loss.name").details["fits"]


def output_size(name: str, data) -> int:
    """How many values the model's last layer outputs per sample for loss `name`.

    Args:
        name: the loss's registry name.
        data: the DataBundle (its out_features: classes or regression targets).

    Returns:
        1 for a loss that fits only two-class tasks with one logit (bce), else data.out_features.
    """
    return 1 if fits(name) == ONE_LOGIT else data.out_features


def fitting_losses(task: str, num_classes: int | None = None) -> list[str]:
    """The losses that can train this task, auto first."""
    kinds = _task_kinds(task, num_classes)
    return ["auto"] + [name for name in LOSSES.names() if name != "auto" and fits(name) & kinds]


def check_fits(name: str, task: str, num_classes: int | None = None) -> None:
    """Raise a ConfigError when loss `name` cannot train this task.

    Args:
        name: the loss's registry name (loss.name).
        task: "classification" or "regression".
        num_classes: classes of a classification task; None when unknown, which
            accepts the two-class-only losses.
    """
    if name == "auto" or fits(name) & _task_kinds(task, num_classes):
        return
    what = f"a {task} task"
    if task == "classification" and num_classes:
        what = f"a classification task with {num_classes} classes"
        if fits(name) == ONE_LOGIT:
            what += " (it needs two classes: the model outputs one logit)"
    raise ConfigError(
        f"loss '{name}' does not fit {what}. "
        f"Losses that do: {', '.join(fitting_losses(task, num_classes))}. Choose one with loss=NAME."
    )


def _task_kinds(task: str, num_classes: int | None) -> set[str]:
    if task == "classification" and num_classes in (2, None):
        return {"classification", "binary"}
    return {task}
