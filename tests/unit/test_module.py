"""DlrunModule: penalties, non-finite loss, losses on each task."""

import warnings

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from dlrun.components.losses import LOSSES, check_fits
from dlrun.data.loader import BatchLoader
from dlrun.errors import ConfigError, TrainingFailed
from dlrun.training.module import DlrunModule, penalized_parameters

# training_step calls self.log; outside a Trainer Lightning warns and skips it.
pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")


def _net() -> nn.Sequential:
    """Weights with ndim > 1 (conv kernel, linear matrices) next to biases and norm parameters."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv1d(2, 3, 2), nn.BatchNorm1d(3), nn.Flatten(),
        nn.Linear(9, 4), nn.LayerNorm(4), nn.Linear(4, 2),
    )
    with torch.no_grad():  # make biases and norm parameters large, so including them would show
        for module in net:
            if isinstance(module, (nn.BatchNorm1d, nn.LayerNorm)):
                module.weight.fill_(-7.0)
            if getattr(module, "bias", None) is not None:
                module.bias.fill_(5.0)
    return net


def _module(net=None, loss="cross_entropy", task="classification", num_classes=2, **kw):
    net = net if net is not None else _net()
    loss_fn = LOSSES.get(loss).builder(num_classes, **LOSSES.bind(loss, {}, "loss"))  # options as loss/NAME.yaml
    return DlrunModule(net, loss_fn, lambda p: torch.optim.SGD(p, lr=0.1), task, **kw)


def _weights(net):
    return [net[0].weight, net[3].weight, net[5].weight]


def test_penalized_parameters_are_the_weights_with_ndim_above_one():
    net = _net()
    assert [id(p) for p in penalized_parameters(net)] == [id(p) for p in _weights(net)]


def test_penalized_parameters_skip_frozen_weights():
    net = _net()
    net[3].weight.requires_grad_(False)
    assert [id(p) for p in penalized_parameters(net)] == [id(net[0].weight), id(net[5].weight)]


@pytest.mark.parametrize("l1,l2", [(0.1, 0.0), (0.0, 0.2), (0.1, 0.2), (1e-4, 3e-3)])
def test_penalty_is_l1_abs_plus_l2_squares_over_weights_only(l1, l2):
    module = _module(l1=l1, l2=l2)
    weights = _weights(module.net)
    expected = sum(l1 * w.abs().sum() + l2 * w.pow(2).sum() for w in weights)
    penalty = module.penalty()
    torch.testing.assert_close(penalty, expected, rtol=1e-6, atol=0)
    # Counting biases and norm parameters too would be far off.
    every = sum(l1 * p.abs().sum() + l2 * p.pow(2).sum() for p in module.net.parameters())
    assert abs(every.item() - penalty.item()) > 1.0


def test_penalty_has_gradients_only_on_the_weights():
    module = _module(l1=0.1, l2=0.2)
    module.penalty().backward()
    for name, parameter in module.net.named_parameters():
        if parameter.ndim > 1:
            torch.testing.assert_close(parameter.grad, 0.1 * parameter.sign() + 0.4 * parameter.detach())
        else:
            assert parameter.grad is None, name


def test_penalty_is_zero_without_coefficients():
    assert _module().penalty() == 0.0


def test_training_step_adds_the_penalty_to_the_loss():
    x, y = torch.randn(6, 2, 4), torch.tensor([0, 1, 0, 1, 1, 0])
    plain, penalized = _module(), _module(l1=0.01, l2=0.02)
    penalized.net.load_state_dict(plain.net.state_dict())
    base = plain.training_step((x, y), 0)
    torch.testing.assert_close(base, F.cross_entropy(plain.net(x), y))
    torch.testing.assert_close(penalized.training_step((x, y), 0), base + penalized.penalty())


def test_training_step_with_a_nan_loss_raises_training_failed_naming_the_step():
    x, y = torch.randn(4, 2, 4), torch.tensor([0, 1, 0, 1])
    x[1, 0, 0] = float("nan")
    with pytest.raises(TrainingFailed) as info:
        _module().training_step((x, y), 3)
    message = str(info.value)
    assert "the training loss became nan at step 0" in message
    assert "batch 3" in message
    assert "optim.lr" in message


def test_training_step_with_an_infinite_loss_raises_training_failed():
    x, y = torch.randn(4, 2, 4), torch.tensor([0.0, 1.0, 0.0, 1.0]).unsqueeze(1)
    x[0, 0, 0] = float("inf")
    net = nn.Sequential(nn.Flatten(), nn.Linear(8, 1))
    with pytest.raises(TrainingFailed, match="the training loss became (inf|nan)"):
        _module(net, loss="mse", task="regression", num_classes=0).training_step((x, y), 0)


def test_nan_during_fit_names_the_global_step_and_batch():
    torch.manual_seed(0)
    x, y = torch.randn(12, 4), torch.randint(0, 2, (12,))
    x[8:] = float("nan")  # the third batch of four
    module = _module(nn.Sequential(nn.Linear(4, 2)))
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(TrainingFailed) as info:
            trainer.fit(module, BatchLoader(x, y, 4, shuffle=False))
    assert "at step 2 (epoch 0, batch 2)" in str(info.value)


def test_training_failed_exits_with_code_one():
    assert TrainingFailed.exit_code == 1


def test_mse_on_classification_trains_against_one_hot_targets():
    torch.manual_seed(0)
    outputs, targets = torch.randn(8, 3), torch.tensor([0, 1, 2, 2, 1, 0, 0, 2])
    loss_fn = LOSSES.get("mse").builder(3)
    expected = F.mse_loss(outputs, F.one_hot(targets, 3).float())
    torch.testing.assert_close(loss_fn(outputs, targets), expected)


def test_mse_module_step_on_classification_uses_one_hot_targets():
    x, y = torch.randn(5, 2, 4), torch.tensor([0, 1, 1, 0, 1])
    module = _module(loss="mse")
    expected = F.mse_loss(module.net(x), F.one_hot(y, 2).float())
    torch.testing.assert_close(module.training_step((x, y), 0), expected)


def test_mse_on_regression_is_plain_mse():
    outputs, targets = torch.randn(6, 1), torch.randn(6, 1)
    torch.testing.assert_close(LOSSES.get("mse").builder(0)(outputs, targets), F.mse_loss(outputs, targets))


def test_auto_loss_picks_cross_entropy_or_mse_by_task():
    outputs, classes = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    torch.testing.assert_close(LOSSES.get("auto").builder(3)(outputs, classes), F.cross_entropy(outputs, classes))
    values = torch.randn(6, 3)
    torch.testing.assert_close(LOSSES.get("auto").builder(0)(outputs, values), F.mse_loss(outputs, values))


def test_check_fits_rejects_cross_entropy_for_regression_listing_fitting_losses():
    with pytest.raises(ConfigError) as info:
        check_fits("cross_entropy", "regression")
    message = str(info.value)
    assert "loss 'cross_entropy' does not fit a regression task." in message
    assert "Losses that do: auto, huber, mae, mse." in message


@pytest.mark.parametrize("name,task", [("auto", "regression"), ("auto", "classification"), ("mse", "regression"),
                                       ("mse", "classification"), ("cross_entropy", "classification")])
def test_check_fits_accepts_fitting_losses(name, task):
    check_fits(name, task)  # no error


class _LastBatchAt:
    """What the module reads of a trainer and writes to it: validation has `batches` batches; the epoch's
    values go to callback_metrics."""

    def __init__(self, batches: int):
        self.num_val_batches, self.world_size = [batches], 1
        self.callback_metrics: dict = {}


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_the_epochs_accuracy_and_mae_equal_torchmetrics_over_the_same_batches(task):
    import torchmetrics

    generator = torch.Generator().manual_seed(0)
    outputs = 3 if task == "classification" else 2
    module = DlrunModule(nn.Linear(5, outputs), (lambda o, y: o.sum()), lambda p: torch.optim.SGD(p, lr=0.1), task,
                         target_scale=torch.tensor([2.5, 0.3]) if task == "regression" else None)
    module._trainer = _LastBatchAt(4)
    reference = (torchmetrics.Accuracy(task="multiclass", num_classes=3) if task == "classification"
                 else torchmetrics.MeanAbsoluteError())
    logged = module._trainer.callback_metrics
    for batch in range(4):  # batches of unequal sizes: the rows weigh, not the batches
        x = torch.randn(7 + 3 * batch, 5, generator=generator)
        y = (torch.randint(0, 3, (len(x),), generator=generator) if task == "classification"
             else torch.randn(len(x), 2, generator=generator))
        module._evaluate((x, y), "val", batch)
        with torch.no_grad():
            out = module.net(x)
        reference.update(out.argmax(-1), y) if task == "classification" else reference.update(
            out * module.target_scale, y * module.target_scale)
        assert (f"val/{module.metric_name}" in logged) == (batch == 3)  # logged once, at the last batch
    assert logged[f"val/{module.metric_name}"].dtype == torch.float32
    assert torch.equal(logged[f"val/{module.metric_name}"], reference.compute())  # bit for bit
