"""Synthetic data sets that need no file: blobs, spirals, sine.

Each is drawn from its `seed` key, which the config files set to the run's
`${seed}`: the same seed gives the same data, and `data.seed=N` fixes the data
while the training seed varies.
"""

from __future__ import annotations

import math
from typing import Annotated

import numpy as np

from dlrun.data.raw import DATASETS, RawData
from dlrun.data.timeseries import windows
from dlrun.errors import DataError
from dlrun.registry import Range

Seed = Annotated[int, Range(ge=0)]
Samples = Annotated[int, Range(ge=10)]
NonNegative = Annotated[float, Range(ge=0)]


@DATASETS.register("blobs", "Gaussian blobs: data.centers classes in data.n_features dimensions (synthetic)")
def blobs(n_samples: Samples = 500, centers: Annotated[int, Range(ge=2)] = 3,
          n_features: Annotated[int, Range(ge=1)] = 2, cluster_std: Annotated[float, Range(gt=0)] = 1.0,
          seed: Seed = 0) -> RawData:
    """Isotropic Gaussian clusters, one class each (scikit-learn's make_blobs)."""
    from sklearn.datasets import make_blobs

    x, y = make_blobs(n_samples=n_samples, centers=centers, n_features=n_features, cluster_std=cluster_std,
                      random_state=seed)
    return RawData(x.astype(np.float32), y.astype(np.int64), "classification", (n_features,),
                   [str(c) for c in range(centers)])


@DATASETS.register("spirals", "Interleaved spirals: data.classes arms in the plane, one class each (synthetic)")
def spirals(n_samples: Samples = 600, classes: Annotated[int, Range(ge=2)] = 2, noise: NonNegative = 0.05,
            turns: Annotated[float, Range(gt=0)] = 1.5, seed: Seed = 0) -> RawData:
    """`classes` spiral arms from the centre out to radius 1, rotated evenly apart.

    Args:
        n_samples: points in all, shared evenly among the arms.
        classes: arms, one class each.
        noise: standard deviation of Gaussian noise added to each coordinate (the outer radius is 1).
        turns: how many times each arm winds around the centre.
        seed: draws the points and the noise.
    """
    rng = np.random.default_rng(seed)
    labels = np.arange(n_samples) % classes
    radius = rng.uniform(0.05, 1.0, n_samples)  # not at the very centre, where every arm meets
    angle = radius * turns * 2 * math.pi + labels * 2 * math.pi / classes
    points = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    points += rng.normal(0.0, noise, points.shape)
    return RawData(points.astype(np.float32), labels.astype(np.int64), "classification", (2,),
                   [str(c) for c in range(classes)], feature_names=["x", "y"])


@DATASETS.register("sine", "Noisy sine wave: windows of data.window steps predict the next value (synthetic)")
def sine(length: Annotated[int, Range(ge=20)] = 1000, period: Annotated[float, Range(gt=0)] = 50.0,
         noise: NonNegative = 0.1, window: Annotated[int, Range(ge=1)] = 20, seed: Seed = 0) -> RawData:
    """A sine wave with Gaussian noise and a random phase, cut into windows like `timeseries`.

    Args:
        length: time steps in the series; it gives length - window samples.
        period: steps per cycle.
        noise: standard deviation of the noise (the wave's amplitude is 1).
        window: steps per sample; the target is the value after the window.
        seed: draws the phase and the noise.
    """
    if length <= window:
        raise DataError(f"data=sine: data.length={length} leaves no sample after a window of data.window={window}; "
                        "use a longer series or a smaller window.")
    rng = np.random.default_rng(seed)
    steps = np.arange(length)
    series = np.sin(2 * math.pi * steps / period + rng.uniform(0, 2 * math.pi)) + rng.normal(0.0, noise, length)
    return windows(series, window, horizon=1, name="sine")
