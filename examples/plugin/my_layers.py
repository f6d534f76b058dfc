"""A single-file dlrun plugin: `dlrun train --plugin examples/plugin/my_layers.py ...`.

It adds a layer type and a callback; a config names them, never imports them:
    dlrun train --plugin examples/plugin/my_layers.py data=iris \
        'model.layers=[{type: linear, out_features: 32}, {type: scaled_tanh, scale: 2.0}, {type: linear}]' \
        'callbacks=[{name: epoch_timer}]'
"""

from __future__ import annotations

import time

from dlrun import plugins


@plugins.layer("scaled_tanh", "scale * tanh(x / scale): a soft clip of the activations to [-scale, scale]")
def scaled_tanh(ctx: plugins.LayerContext, in_shape, scale: float = 1.0):
    import torch
    from torch import nn

    class ScaledTanh(nn.Module):
        def forward(self, x):
            return scale * torch.tanh(x / scale)

    return ScaledTanh()


@plugins.callback("epoch_timer", "Print each training epoch's wall time")
def epoch_timer(prefix: str = "epoch"):
    import pytorch_lightning as pl

    class EpochTimer(pl.Callback):
        def on_train_epoch_start(self, trainer, module):
            self.started = time.perf_counter()

        def on_train_epoch_end(self, trainer, module):
            print(f"{prefix} {trainer.current_epoch}: {time.perf_counter() - self.started:.2f} s")

    return EpochTimer()
