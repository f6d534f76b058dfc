"""dlrun: a declarative command-line experiment runner for deep learning.

The Python API (dlrun.api) is importable from here; importing dlrun imports nothing heavy.
"""

from dlrun.api import compose, evaluate, grid, load_model, predict, reproduce, run_config, sweep, train
from dlrun.errors import ConfigError, DataError, DlrunError, PluginError, TrainingFailed
from dlrun.version import __version__


__all__ = [
    "compose", "evaluate", "grid", "load_model", "predict", "reproduce", "run_config", "sweep", "train",
    "ConfigError", "DataError", "DlrunError", "PluginError", "TrainingFailed", "__version__",
]
