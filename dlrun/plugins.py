"""The public module for plugins: register your own components into dlrun's registries.

A plugin is a module (or a single .py file) that dlrun imports because the user installed
it (an entry point in the group `dlrun.plugins`) or named it (`--plugin PATH_OR_MODULE`,
`$DLRUN_PLUGINS`, `dlrun.train(..., plugins=[...])`). While it is imported, it registers
components with the decorators below: the same registries, signature checks and
did-you-mean as dlrun's own components. Configs then name them like any built-in
(`model.layers: [{type: se_block}]`, `loss=focal`); a config never imports anything.

    from dlrun import plugins

    @plugins.layer("se_block", "Squeeze-and-excitation: channels reweighted by their mean")
    def se_block(ctx: plugins.LayerContext, in_shape, reduction: int = 4):
        return SqueezeExcite(in_shape[0], reduction)

    plugins.config_dir(Path(__file__).parent / "conf")   # model/se_cnn.yaml, loss/focal.yaml, ...

Builders of group options (activation, loss, optimizer, scheduler, augmentation) take no
defaults in their signature: the plugin's own option file (conf/loss/focal.yaml) holds
them, as dlrun's do. A name that dlrun or another plugin already uses is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable

from dlrun.components.activations import ACTIVATIONS
from dlrun.components.callbacks import CALLBACKS
from dlrun.components.losses import LOSSES
from dlrun.components.metrics import METRICS, RESERVED_METRIC_NAMES, MetricContext
from dlrun.components.optimizers import OPTIMIZERS
from dlrun.components.schedulers import SCHEDULERS, ScheduleContext
from dlrun.data.augment import AUGMENTS
from dlrun.data.raw import DATASETS, RawData, encode_labels
from dlrun.errors import PluginError
from dlrun.models.layers import LAYERS, LayerContext
from dlrun.registry import Choice, Range, Registry, current_plugin
from dlrun.tuning.pruners import PRUNERS
from dlrun.tuning.samplers import SAMPLERS, SamplerContext

__all__ = [
    "layer", "activation", "loss", "metric", "optimizer", "scheduler", "augmentation", "data_source",
    "sampler", "pruner", "callback", "config_dir",
    "Range", "Choice", "LayerContext", "MetricContext", "ScheduleContext", "SamplerContext",
    "RawData", "encode_labels",
]

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def layer(name: str, description: str) -> Decorator:
    """A layer type: `builder(ctx: LayerContext, in_shape, **options) -> torch.nn.Module`, where in_shape is
    one sample's shape without the batch dimension; its options' defaults in the signature."""
    return _register(LAYERS, name, description)


def activation(name: str, description: str) -> Decorator:
    """An activation option: `builder(**options) -> torch.nn.Module`; ship conf/activation/NAME.yaml."""
    return _register(ACTIVATIONS, name, description)


def loss(name: str, description: str, *, fits: Iterable[str]) -> Decorator:
    """A loss option: `builder(num_classes, **options) -> callable(outputs, targets)`; `fits` names the tasks
    it trains (classification, regression, binary); ship conf/loss/NAME.yaml."""
    return _register(LOSSES, name, description, fits=fits)


def metric(name: str, description: str, *, fits: Iterable[str], higher_is_better: bool) -> Decorator:
    """A metric for `metrics: [NAME]`: `builder(ctx: MetricContext, **options)` returns a `torchmetrics.Metric`;
    its `update(predictions, targets)` gets class indices (classification) or values (regression). The
    names every run logs already (loss, acc, mae) are dlrun's."""
    if name in RESERVED_METRIC_NAMES:
        raise PluginError(f"the metric '{name}' is one every run logs already (val/{name}); register the plugin's "
                          "under another name.")
    return _register(METRICS, name, description, fits=fits, higher_is_better=higher_is_better)


def optimizer(name: str, description: str) -> Decorator:
    """An optim option: `builder(parameters, **options) -> torch.optim.Optimizer`; ship conf/optim/NAME.yaml."""
    return _register(OPTIMIZERS, name, description)


def scheduler(name: str, description: str) -> Decorator:
    """A scheduler option: `builder(optimizer, ctx: ScheduleContext, **options)` returns Lightning's
    lr-scheduler dict, or None; ship conf/scheduler/NAME.yaml."""
    return _register(SCHEDULERS, name, description)


def augmentation(name: str, description: str) -> Decorator:
    """An augment option: `builder(sample_shape, **options)` returns `apply(inputs, generator) -> inputs`
    (draw every random number from the generator, so runs stay exact), or None; ship conf/augment/NAME.yaml."""
    return _register(AUGMENTS, name, description)


def data_source(name: str, description: str) -> Decorator:
    """A data source for `data.name`: `builder(**options) -> RawData`; its options' defaults in the signature.
    Ship conf/data/NAME.yaml with name, batch_size, val_fraction and test_fraction."""
    return _register(DATASETS, name, description)


def sampler(name: str, description: str, *, optuna_class: str) -> Decorator:
    """A sweep sampler: `builder(ctx: SamplerContext, **options) -> optuna.samplers.BaseSampler`."""
    return _register(SAMPLERS, name, description, optuna_class=optuna_class)


def pruner(name: str, description: str, *, optuna_class: str) -> Decorator:
    """A sweep pruner: `builder(max_epochs, **options) -> optuna.pruners.BasePruner` (max_epochs: the trials' trainer.max_epochs)."""
    return _register(PRUNERS, name, description, optuna_class=optuna_class)


def callback(name: str, description: str) -> Decorator:
    """A Lightning callback for `callbacks: [{name: NAME, ...}]`: `builder(**options) -> pytorch_lightning.Callback`."""
    return _register(CALLBACKS, name, description)


def config_dir(path: str | Path) -> None:
    """The plugin's config tree (group folders such as model/ and loss/): it joins the search path after
    --config-dir and ./conf, before dlrun's own."""
    _loading("config_dir").conf_dir = Path(path).resolve()


def _register(registry: Registry, name: str, description: str, **details: Any) -> Decorator:
    _loading(f"the {registry.kind} '{name}'")
    return registry.register(name, description, **details)


def _loading(what: str):
    origin = current_plugin()
    if origin is None:
        raise PluginError(f"{what} is registered outside a plugin's import. dlrun records the plugins a run "
                          "uses, so it loads them itself: install the plugin with an entry point in the group "
                          "dlrun.plugins, or name it: --plugin PATH_OR_MODULE, $DLRUN_PLUGINS, or "
                          "dlrun.train(..., plugins=[...]).")
    return origin
