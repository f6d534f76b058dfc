"""An example dlrun plugin: a layer type, a loss, a data source and the config options that use them.

Installed (`pip install ./examples/plugin`), it is found through its entry point in the group
`dlrun.plugins`; dlrun imports this module, which registers its components with the
decorators of `dlrun.plugins` and adds its config tree (model=se_cnn, loss=focal, data=rings).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np

from dlrun import plugins
from dlrun.plugins import Range

plugins.config_dir(Path(__file__).parent / "conf")


@plugins.layer("se_block", "Squeeze-and-excitation: each channel reweighted by a gate on the channels' means")
def se_block(ctx: plugins.LayerContext, in_shape, reduction: Annotated[int, Range(ge=1)] = 4):
    from dlrun_example_plugin.layers import SqueezeExcite

    if len(in_shape) != 3:
        from dlrun.errors import ConfigError

        raise ConfigError(f"'{ctx.where}': se_block takes (channels, height, width) inputs, got {tuple(in_shape)}. "
                          "Put it after a conv2d layer.")
    return SqueezeExcite(in_shape[0], reduction)


@plugins.loss("focal", "Focal loss: cross-entropy that down-weights examples the model already gets right",
              fits={"classification"})
def focal(num_classes: int, gamma: Annotated[float, Range(ge=0)], label_smoothing: Annotated[float, Range(ge=0, lt=1)]):
    from dlrun_example_plugin.layers import FocalLoss

    return FocalLoss(gamma, label_smoothing)


@plugins.data_source("rings", "Concentric rings in the plane, one class each (synthetic)")
def rings(n_samples: Annotated[int, Range(ge=10)] = 600, classes: Annotated[int, Range(ge=2)] = 3,
          noise: Annotated[float, Range(ge=0)] = 0.08, seed: Annotated[int, Range(ge=0)] = 0) -> plugins.RawData:
    """`classes` rings of radius 1, 2, ...; each point's class is its ring."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n_samples) % classes
    angles = rng.uniform(0, 2 * np.pi, n_samples)
    radii = labels + 1 + rng.normal(0, noise, n_samples)
    x = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1).astype(np.float32)
    return plugins.RawData(x, labels.astype(np.int64), "classification", (2,), [f"ring{i}" for i in range(classes)],
                           ["x", "y"])
