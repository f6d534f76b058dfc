"""The loss, optim, regularization, scheduler and early-stopping options each take effect.

Every test composes the config as `dlrun train` does (compose + validate), builds the
component from it and checks the built object or the numbers it produces against the
reference formula, not merely that something ran.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlrun.components.losses import LOSSES, check_fits, fitting_losses, output_size
from dlrun.components.schedulers import SCHEDULERS, ScheduleContext
from dlrun.config.compose import compose
from dlrun.config.validate import validate
from dlrun.data.loader import BatchLoader
from dlrun.errors import ConfigError
from dlrun.training import setup as train_setup
from dlrun.training.callbacks import EpochMetricsToMlflow, StopOnSignal
from dlrun.training.module import DlrunModule
from dlrun.training.trainer import build_trainer, early_stopping

# training_step calls self.log; outside a Trainer Lightning warns and skips it.
pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")


def _run(*overrides: str):
    return validate(compose(list(overrides)))


# --- optimizers -------------------------------------------------------------------------


@pytest.mark.parametrize("overrides,cls,expected", [
    (["optim=sgd", "optim.lr=0.2"], torch.optim.SGD, {"lr": 0.2, "momentum": 0.0, "nesterov": False}),
    (["optim=momentum", "optim.momentum=0.8", "optim.nesterov=true"], torch.optim.SGD,
     {"lr": 0.05, "momentum": 0.8, "nesterov": True, "dampening": 0.0}),
    (["optim=adagrad", "optim.lr=0.02", "optim.lr_decay=0.001", "optim.initial_accumulator_value=0.1"],
     torch.optim.Adagrad, {"lr": 0.02, "lr_decay": 0.001, "initial_accumulator_value": 0.1, "eps": 1e-10}),
    (["optim=rmsprop", "optim.alpha=0.9", "optim.momentum=0.5", "optim.weight_decay=0.01"], torch.optim.RMSprop,
     {"lr": 0.001, "alpha": 0.9, "momentum": 0.5, "weight_decay": 0.01}),
    (["optim=adam", "optim.betas=[0.8,0.99]", "optim.eps=1e-6"], torch.optim.Adam,
     {"lr": 0.001, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.0}),
    (["optim=adamw", "optim.weight_decay=0.05", "optim.lr=0.003"], torch.optim.AdamW,
     {"lr": 0.003, "weight_decay": 0.05, "betas": (0.9, 0.999)}),
])
def test_each_optimizer_option_builds_its_torch_class_with_the_configured_arguments(overrides, cls, expected):
    run = _run(*overrides)
    optimizer = train_setup._optimizer_factory(run)(nn.Linear(3, 2).parameters())
    assert type(optimizer) is cls
    group = optimizer.param_groups[0]
    for key, value in expected.items():
        assert group[key] == pytest.approx(value), key
    # Every key the config holds reached torch, under torch's own name.
    name, options = run.optim
    for key, value in options.items():
        assert optimizer.defaults[key] == pytest.approx(tuple(value) if isinstance(value, tuple) else value), key


def test_nesterov_without_momentum_is_a_config_error_naming_the_fix():
    run = _run("optim=momentum", "optim.momentum=0", "optim.nesterov=true")
    with pytest.raises(ConfigError, match=r"optim.nesterov=true needs optim.momentum > 0.*optim.momentum=0.9"):
        train_setup._optimizer_factory(run)(nn.Linear(3, 2).parameters())


# --- losses -------------------------------------------------------------------------------

torch.manual_seed(0)
LOGITS = torch.randn(6, 3)
CLASSES = torch.tensor([0, 2, 1, 1, 0, 2])
VALUES = torch.randn(6, 3) * 2


def _loss(num_classes: int, *overrides: str):
    name, options = _run(*overrides).loss
    return LOSSES.get(name).builder(num_classes, **options)


def _one_hot(classes=CLASSES, k=3):
    return F.one_hot(classes, k).float()


def test_cross_entropy_with_label_smoothing_matches_the_formula():
    s = 0.1
    wanted = (1 - s) * _one_hot() + s / 3
    expected = -(wanted * LOGITS.log_softmax(-1)).sum(-1).mean()
    torch.testing.assert_close(_loss(3, "loss=cross_entropy", f"loss.label_smoothing={s}")(LOGITS, CLASSES), expected)


def test_bce_on_one_logit_matches_the_formula():
    logit, y = torch.tensor([[2.0], [-1.0], [0.5], [-3.0]]), torch.tensor([1, 0, 0, 1])
    p = torch.sigmoid(logit[:, 0])
    expected = -(y * p.log() + (1 - y) * (1 - p).log()).mean()
    torch.testing.assert_close(_loss(2, "loss=bce")(logit, y), expected)


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_kl_div_of_log_softmax_from_smoothed_one_hot_matches_the_formula(smoothing):
    wanted = (1 - smoothing) * _one_hot() + smoothing / 3
    log_q = LOGITS.log_softmax(-1)
    terms = torch.where(wanted > 0, wanted * (wanted.clamp_min(1e-30).log() - log_q), torch.zeros(()))
    expected = terms.sum() / len(LOGITS)
    loss_fn = _loss(3, "loss=kl_div", f"loss.smoothing={smoothing}")
    torch.testing.assert_close(loss_fn(LOGITS, CLASSES), expected)


@pytest.mark.parametrize("margin,p", [(1.0, 1), (0.5, 2)])
def test_hinge_is_the_multi_class_margin_formula(margin, p):
    correct = LOGITS.gather(1, CLASSES[:, None])
    violations = (margin - correct + LOGITS).clamp_min(0).pow(p)
    violations = violations.masked_fill(_one_hot().bool(), 0)  # the true class is not a margin violation
    expected = (violations.sum(1) / 3).mean()
    torch.testing.assert_close(_loss(3, "loss=hinge", f"loss.margin={margin}", f"loss.p={p}")(LOGITS, CLASSES), expected)


def _huber(d, delta):
    return torch.where(d.abs() < delta, 0.5 * d**2, delta * (d.abs() - 0.5 * delta)).mean()


@pytest.mark.parametrize("overrides,formula", [
    (["loss=mse"], lambda d: (d**2).mean()),
    (["loss=mae"], lambda d: d.abs().mean()),
    (["loss=huber", "loss.delta=0.5"], lambda d: _huber(d, 0.5)),
])
def test_regression_losses_match_their_formulas_on_values_and_on_one_hot_classes(overrides, formula):
    torch.testing.assert_close(_loss(0, *overrides)(LOGITS, VALUES), formula(LOGITS - VALUES))
    torch.testing.assert_close(_loss(3, *overrides)(LOGITS, CLASSES), formula(LOGITS - _one_hot()))


@pytest.mark.parametrize("overrides,task,classes,fitting", [
    (["data=diabetes", "loss=bce"], "regression", 0, "auto, huber, mae, mse"),
    (["data=diabetes", "loss=cross_entropy"], "regression", 0, "auto, huber, mae, mse"),
    (["data=diabetes", "loss=hinge"], "regression", 0, "auto, huber, mae, mse"),
    (["data=digits", "loss=bce"], "classification", 10, "auto, cross_entropy, hinge, huber, kl_div, mae, mse"),
])
def test_a_loss_that_does_not_fit_the_task_is_a_config_error_listing_the_fitting_ones(overrides, task, classes, fitting):
    name, _ = _run(*overrides).loss
    with pytest.raises(ConfigError) as info:
        check_fits(name, task, classes)
    message = str(info.value)
    assert f"loss '{name}' does not fit" in message
    assert f"Losses that do: {fitting}." in message


def test_every_loss_but_bce_fits_many_classes_and_every_one_fits_two():
    assert fitting_losses("classification", 2) == ["auto", "bce", "cross_entropy", "hinge", "huber", "kl_div", "mae", "mse"]
    for name in fitting_losses("classification", 2):
        check_fits(name, "classification", 2)
    with pytest.raises(ConfigError, match="needs two classes"):
        check_fits("bce", "classification", 3)


def test_only_bce_asks_the_model_for_a_single_output():
    data = SimpleNamespace(out_features=2)
    assert output_size("bce", data) == 1
    assert {output_size(name, data) for name in LOSSES.names() if name != "bce"} == {2}


def test_bce_module_scores_accuracy_from_the_sign_of_its_logit():
    net = nn.Linear(2, 1)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0, 0.0]]))
        net.bias.zero_()
    module = DlrunModule(net, _loss(2, "loss=bce"), lambda p: torch.optim.SGD(p, lr=0.1), "classification")
    x, y = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [2.0, 0.0], [-2.0, 0.0]]), torch.tensor([1, 0, 0, 0])
    module._trainer = SimpleNamespace(num_val_batches=[1], world_size=1, callback_metrics={})
    module._evaluate((x, y), "val", 0)
    assert float(module._trainer.callback_metrics["val/acc"]) == pytest.approx(0.75)


# --- regularization -----------------------------------------------------------------------


def test_elastic_adds_exactly_l1_abs_plus_l2_squares_to_the_loss():
    run = _run("regularization=elastic", "regularization.l1=0.01", "regularization.l2=0.02")
    reg = run.regularization
    assert (reg["l1"], reg["l2"], reg["dropout"]) == (0.01, 0.02, 0.0)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 5), nn.Linear(5, 3))
    module = DlrunModule(net, _loss(3, "loss=cross_entropy"), lambda p: torch.optim.SGD(p, lr=0.1),
                         "classification", l1=reg["l1"], l2=reg["l2"])
    x = torch.randn(6, 4)
    weights = [net[0].weight, net[1].weight]
    expected = F.cross_entropy(net(x), CLASSES) + sum(0.01 * w.abs().sum() + 0.02 * w.pow(2).sum() for w in weights)
    torch.testing.assert_close(module.training_step((x, CLASSES), 0), expected)


def test_elastic_defaults_set_both_penalties_and_dropout_combines_with_them():
    assert _run("regularization=elastic").regularization == {"l1": 1e-4, "l2": 1e-4, "dropout": 0.0}
    assert _run("regularization=elastic", "regularization.dropout=0.3").regularization["dropout"] == 0.3


# --- schedulers ---------------------------------------------------------------------------


def _schedule(overrides, lr=0.1, max_epochs=5, steps_per_epoch=1):
    """The configured schedule on a real SGD optimizer: (Lightning dict, optimizer)."""
    name, options = _run(f"optim.lr={lr}", "optim=sgd", *overrides).scheduler
    optimizer = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=lr)
    ctx = ScheduleContext(max_epochs=max_epochs, steps_per_epoch=steps_per_epoch)
    return SCHEDULERS.get(name).builder(optimizer, ctx, **options), optimizer


def _rates(schedule, optimizer, count, metrics=None):
    """The rate each of `count` steps uses, stepping the scheduler after each as Lightning does."""
    rates = []
    for i in range(count):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule["scheduler"].step(*([metrics[i]] if metrics else []))
    return rates


def test_no_scheduler_keeps_optim_lr():
    assert _schedule(["scheduler=none"])[0] is None


def test_step_multiplies_by_gamma_every_step_size_epochs():
    schedule, optimizer = _schedule(["scheduler=step", "scheduler.step_size=2", "scheduler.gamma=0.5"])
    assert schedule["interval"] == "epoch"
    assert _rates(schedule, optimizer, 6) == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025])


def test_cosine_anneals_to_eta_min_over_max_epochs():
    schedule, optimizer = _schedule(["scheduler=cosine", "scheduler.eta_min=0.01"], max_epochs=4)
    assert schedule["interval"] == "epoch"
    expected = [0.01 + 0.09 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(5)]
    assert _rates(schedule, optimizer, 5) == pytest.approx(expected)


def test_plateau_cuts_the_rate_by_factor_after_patience_epochs_without_a_better_val_loss():
    schedule, optimizer = _schedule(["scheduler=plateau", "scheduler.factor=0.5", "scheduler.patience=1"])
    assert (schedule["monitor"], schedule["interval"]) == ("val/loss", "epoch")
    val_losses = [1.0, 0.9, 0.95, 0.95, 0.95, 0.95, 0.95]
    # Epochs 2 and 3 are the 1st and 2nd without improvement: more than patience=1, so the cut
    # applies from epoch 4; the count restarts and epochs 4 and 5 cut again from epoch 6.
    assert _rates(schedule, optimizer, 7, val_losses) == pytest.approx([0.1] * 4 + [0.05] * 2 + [0.025])


def _one_cycle_reference(step, total, peak, pct_start=0.3, div=25.0, final_div=1e4):
    start, low = peak / div, peak / div / final_div
    rise_end = pct_start * total - 1
    if step <= rise_end:
        a, b, t = start, peak, step / rise_end
    else:
        a, b, t = peak, low, (step - rise_end) / (total - 1 - rise_end)
    return b + (a - b) / 2 * (1 + math.cos(math.pi * t))


def test_onecycle_peaks_at_optim_lr_by_default_and_steps_per_optimizer_step():
    assert _run("scheduler=onecycle", "optim.lr=0.3").scheduler[1]["max_lr"] == 0.3  # YAML: max_lr = optim.lr
    schedule, optimizer = _schedule(["scheduler=onecycle"], lr=0.2, max_epochs=2, steps_per_epoch=5)
    assert schedule["interval"] == "step"
    rates = _rates(schedule, optimizer, 10)
    assert rates == pytest.approx([_one_cycle_reference(s, 10, 0.2) for s in range(10)])
    assert max(rates) == pytest.approx(0.2) and rates[0] == pytest.approx(0.2 / 25)


def test_onecycle_max_lr_overrides_the_peak_and_none_means_the_optimizers_rate():
    schedule, optimizer = _schedule(["scheduler=onecycle", "scheduler.max_lr=0.5", "scheduler.anneal_strategy=linear"],
                                    lr=0.2, max_epochs=1, steps_per_epoch=10)
    rates = _rates(schedule, optimizer, 10)
    assert max(rates) == pytest.approx(0.5) and rates[0] == pytest.approx(0.02)
    assert rates[1] == pytest.approx(0.02 + (0.5 - 0.02) / 2)  # linear: halfway up at step 1 of 0..2
    optimizer = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=0.7)
    options = SCHEDULERS.bind("onecycle", {"max_lr": None}, "scheduler")  # the rest from onecycle.yaml
    SCHEDULERS.get("onecycle").builder(optimizer, ScheduleContext(2, 3), **options)
    assert optimizer.param_groups[0]["max_lr"] == 0.7


def test_warmup_cosine_rises_linearly_for_warmup_epochs_then_follows_a_cosine_per_step():
    schedule, optimizer = _schedule(["scheduler=warmup_cosine", "scheduler.warmup_epochs=1", "scheduler.eta_min=0.01"],
                                    lr=0.1, max_epochs=3, steps_per_epoch=4)
    assert schedule["interval"] == "step"
    rates = _rates(schedule, optimizer, 12)
    assert rates[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1])
    assert rates[4:] == pytest.approx([0.01 + 0.09 * (1 + math.cos(math.pi * s / 8)) / 2 for s in range(8)])


@pytest.mark.parametrize("warmup_epochs,max_epochs", [(3, 3), (5, 2), (1, 1)])
def test_a_warmup_as_long_as_training_or_longer_warms_up_over_what_there_is(warmup_epochs, max_epochs):
    schedule, optimizer = _schedule(["scheduler=warmup_cosine", f"scheduler.warmup_epochs={warmup_epochs}"],
                                    lr=0.1, max_epochs=max_epochs, steps_per_epoch=4)
    steps = 4 * max_epochs
    # A linear rise over every step, optim.lr at the last one, and no cosine part.
    assert _rates(schedule, optimizer, steps) == pytest.approx([0.1 * (s + 1) / steps for s in range(steps)])


def test_a_one_epoch_run_with_the_shipped_warmup_builds_its_schedule():
    run = _run("scheduler=warmup_cosine", "trainer.max_epochs=1", "optim=sgd", "optim.lr=0.1")
    optimizer = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=0.1)
    schedule = train_setup._scheduler_factory(run, SimpleNamespace(x_train=torch.zeros(128, 2)))(optimizer)
    assert _rates(schedule, optimizer, 2) == pytest.approx([0.05, 0.1])  # 128 rows in batches of 64: 2 steps


# --- trainer: early stopping, pass-through, logged lr -------------------------------------


class _Metrics:
    """Stands in for the RunRecord: keeps what would be logged to MLflow."""

    def __init__(self):
        self.logged: list[dict] = []

    def log_metrics(self, metrics, step, send=True):
        self.logged.append(dict(metrics))

    def flush_metrics(self):
        pass


def _fit(tmp_path, *overrides: str):
    """A short real fit of a linear model on 32 separable rows with dlrun's Trainer and callbacks."""
    run = _run("data=iris", "data.batch_size=8", "model=linear", "trainer.enable_progress_bar=false",
               "trainer.deterministic=false", *overrides)
    torch.manual_seed(0)
    x = torch.randn(32, 4)
    y = (x[:, 0] > 0).long()
    data = SimpleNamespace(x_train=x)
    name, options = run.loss
    module = DlrunModule(nn.Linear(4, 2), LOSSES.get(name).builder(2, **options), train_setup._optimizer_factory(run),
                         "classification", make_scheduler=train_setup._scheduler_factory(run, data))
    epoch_logger = EpochMetricsToMlflow(_Metrics())
    trainer = build_trainer(run, "classification", tmp_path, epoch_logger, StopOnSignal(tmp_path / "last.ckpt"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, BatchLoader(x, y, 8, shuffle=True), BatchLoader(x, y, 8, shuffle=False))
    return trainer, epoch_logger.record.logged


def test_early_stopping_stops_a_real_fit_after_patience_epochs_without_improvement(tmp_path):
    # min_delta larger than any possible gain: after the first epoch nothing counts as better.
    trainer, logged = _fit(tmp_path, "trainer.max_epochs=30", "trainer.early_stopping.patience=2",
                           "trainer.early_stopping.min_delta=100")
    assert trainer.should_stop
    assert len(logged) == 3 and trainer.current_epoch == 3  # epoch 0 sets the best, 1 and 2 do not beat it


def test_without_patience_there_is_no_early_stopping(tmp_path):
    from pytorch_lightning.callbacks import EarlyStopping

    trainer, logged = _fit(tmp_path, "trainer.max_epochs=4", "trainer.early_stopping.min_delta=100")
    assert not any(isinstance(c, EarlyStopping) for c in trainer.callbacks)
    assert len(logged) == 4


def test_early_stopping_watches_the_configured_metric_and_infers_max_for_accuracy():
    stopper = early_stopping({"patience": 3, "monitor": "val/acc", "mode": None, "min_delta": 0.0},
                                        "classification")
    assert (stopper.monitor, stopper.mode, stopper.patience) == ("val/acc", "max", 3)
    stopper = early_stopping({"patience": 1, "monitor": "val/loss", "mode": "max"}, "regression")
    assert (stopper.monitor, stopper.mode) == ("val/loss", "max")


def test_early_stopping_on_a_metric_the_task_lacks_is_a_config_error():
    with pytest.raises(ConfigError, match="val/acc is not logged for a regression task.*val/loss, val/mae"):
        early_stopping({"patience": 3, "monitor": "val/acc"}, "regression")


@pytest.mark.parametrize("override,message", [
    ("trainer.early_stopping.mode=lowest", "unknown value 'lowest' \\(in trainer.early_stopping.mode\\)"),
    ("trainer.early_stopping.patience=0", "'trainer.early_stopping.patience' must be at least 1"),
    ("trainer.early_stopping.monitor=val/accuracy", "Did you mean 'val/acc'"),
    ("+trainer.early_stopping.wait=3", "unknown config key 'trainer.early_stopping.wait'"),
])
def test_bad_early_stopping_keys_are_config_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        _run(override)


def test_clipping_precision_and_accumulation_reach_the_lightning_trainer():
    run = _run("trainer.gradient_clip_val=0.5", "+trainer.gradient_clip_algorithm=value", "trainer.precision=bf16-mixed",
               "trainer.accumulate_grad_batches=3", "trainer.enable_progress_bar=false")
    trainer = build_trainer(run, "classification", Path("unused"), EpochMetricsToMlflow(_Metrics()),
                            StopOnSignal(Path("unused/last.ckpt")))
    assert trainer.gradient_clip_val == 0.5
    assert trainer.gradient_clip_algorithm == "value"
    assert trainer.precision == "bf16-mixed"
    assert trainer.accumulate_grad_batches == 3


def test_the_trainer_profiles_nothing_with_one_shared_context():
    from dlrun.training.trainer import NoProfiler

    trainer = build_trainer(_run("trainer.enable_progress_bar=false"), "classification", Path("unused"),
                            EpochMetricsToMlflow(_Metrics()), StopOnSignal(Path("unused/last.ckpt")))
    profiler = trainer.profiler
    assert isinstance(profiler, NoProfiler)
    first, second = profiler.profile("[Callback]a.on_train_batch_end"), profiler.profile("b")
    assert first is second
    with first, second:  # entered nested, as Lightning's hooks within hooks do
        pass


def test_the_logged_lr_is_the_rate_each_epoch_trained_with(tmp_path):
    _, logged = _fit(tmp_path, "trainer.max_epochs=3", "optim=sgd", "optim.lr=0.1",
                     "scheduler=step", "scheduler.step_size=1", "scheduler.gamma=0.5")
    assert [m["lr"] for m in logged] == pytest.approx([0.1, 0.05, 0.025])


def test_the_logged_lr_of_a_step_schedule_is_the_rate_of_each_epochs_first_step(tmp_path):
    # 32 rows in batches of 8: 4 steps an epoch; warm-up over the first epoch.
    _, logged = _fit(tmp_path, "trainer.max_epochs=3", "optim=sgd", "optim.lr=0.1", "scheduler=warmup_cosine")
    expected = [0.025] + [0.5 * 0.1 * (1 + math.cos(math.pi * s / 8)) for s in (0, 4)]
    assert [m["lr"] for m in logged] == pytest.approx(expected)


def test_mixed_precision_with_gradient_clipping_builds_the_unfused_optimizer(workdir):
    """Lightning refuses to clip gradients under mixed precision with a fused optimizer."""
    def optimizer(*overrides):
        return train_setup.prepare(validate(compose(["data=iris", "optim=adam", *overrides]))).module.configure_optimizers()

    assert optimizer().defaults["fused"] is True
    assert optimizer("trainer.precision=bf16-mixed").defaults["fused"] is True
    assert not optimizer("trainer.precision=bf16-mixed", "trainer.gradient_clip_val=1.0").defaults["fused"]
