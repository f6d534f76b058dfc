"""Loss functions, chosen by the `loss` group, and which tasks each one fits.

Every loss takes the model's raw outputs and the batch targets as the data module
stores them: class indices (int64) for classification, standardized values
(float32, shape (N, targets)) for regression.
"""

from dlrun.errors import ConfigError
from dlrun.registry import Registry

LOSSES = Registry("loss", skip_params=1)  # the first parameter is the number of classes (0 for regression)

FITS = {"cross_entropy": {"classification"}, "mse": {"classification", "regression"}}


@LOSSES.register("auto", "cross_entropy for classification, mse for regression")
def auto(num_classes: int):
    return cross_entropy(num_classes) if num_classes else mse(num_classes)


@LOSSES.register("cross_entropy", "Cross-entropy over class logits (classification)")
def cross_entropy(num_classes: int):
    from torch import nn

    return nn.CrossEntropyLoss()


@LOSSES.register("mse", "Mean squared error (regression; one-hot targets on classification)")
def mse(num_classes: int):
    import torch.nn.functional as F

    if not num_classes:
        return F.mse_loss

    def one_hot_mse(outputs, targets):
        return F.mse_loss(outputs, F.one_hot(targets, num_classes).to(outputs.dtype))

    return one_hot_mse


def check_fits(name: str, task: str) -> None:
    """Raise a ConfigError when loss `name` cannot train a `task` problem."""
    if name == "auto" or task in FITS.get(name, {task}):
        return
    fitting = sorted(n for n, tasks in FITS.items() if task in tasks)
    raise ConfigError(
        f"loss '{name}' does not fit a {task} task. Losses that do: auto, {', '.join(fitting)}."
    )
