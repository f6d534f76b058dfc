"""The callback registry: Lightning callbacks a run adds by name, `callbacks: [{name: NAME, ...}]`.

dlrun's own callbacks (metrics to MLflow, checkpoints, signals) are always there and are
not listed here; this registry holds the callbacks that plugins add. A builder takes the
entry's keys as keyword arguments (their defaults in its signature) and returns a
`pytorch_lightning.Callback`. A config names a callback; it never imports one.

Nothing here imports torch: config validation imports CALLBACKS.
"""

from __future__ import annotations

from dlrun.registry import Registry

CALLBACKS = Registry("callback")
