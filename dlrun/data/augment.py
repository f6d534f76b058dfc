"""Augmentations of training batches, chosen by the `augment` group.

A builder gets the shape of one model-ready sample (so it can refuse data it does
not fit before any run starts) and returns a function (batch inputs,
torch.Generator) -> augmented inputs, or None for no augmentation. The function
works on whole batches (one affine_grid + grid_sample, no per-sample Python) and
draws every random number from the generator it is given, which the training
loader seeds per epoch: the same seed gives the same augmented batches. Only
training batches pass through it; val and test never do.

Inputs arrive preprocessed (standardized), so `noise.std` is in units of the
features' standard deviation. torch is imported when a builder runs, not here:
config validation imports AUGMENTS. Builders take no defaults: each key's default
is in conf/augment/NAME.yaml (see dlrun.registry).
"""

from __future__ import annotations

import math
from typing import Annotated

from dlrun.errors import ConfigError
from dlrun.registry import Range, Registry

# The first builder parameter, the sample shape, is dlrun's to supply, not the config's.
AUGMENTS = Registry("augmentation", skip_params=1, group="augment")

Degrees = Annotated[float, Range(ge=0, le=180)]
Zoom = Annotated[float, Range(gt=0)]
Std = Annotated[float, Range(ge=0)]


@AUGMENTS.register("none", "No augmentation: training batches as the data set gives them")
def none(sample_shape: tuple[int, ...]):
    return None


@AUGMENTS.register("flip", "Mirror each training image with probability 0.5: augment.horizontal, augment.vertical")
def flip(sample_shape: tuple[int, ...], horizontal: bool, vertical: bool):
    """Left-right (horizontal) and/or top-bottom (vertical) mirroring, each drawn per sample; neither: no augmentation."""
    _need_images(sample_shape, "flip")
    dims = [dim for dim, on in ((-1, horizontal), (-2, vertical)) if on]

    def apply(inputs, generator):
        for dim in dims:
            inputs = _where_drawn(inputs, generator, inputs.flip(dim))
        return inputs

    return apply if dims else None


@AUGMENTS.register("rotate", "Rotate each training image by a random angle in [-augment.degrees, augment.degrees]")
def rotate(sample_shape: tuple[int, ...], degrees: Degrees):
    """A uniform random rotation about the image centre per sample."""
    _need_images(sample_shape, "rotate")
    return lambda inputs, generator: _affine(inputs, generator, degrees, 1.0, 1.0)


@AUGMENTS.register("scale", "Zoom each training image by a random factor in [augment.min, augment.max]")
def scale(sample_shape: tuple[int, ...], min: Zoom, max: Zoom):  # noqa: A002 (config key names)
    """A uniform random zoom about the image centre per sample (above 1 zooms in)."""
    _need_images(sample_shape, "scale")
    _need_order(min, max)
    return lambda inputs, generator: _affine(inputs, generator, 0.0, min, max)


@AUGMENTS.register("noise", "Add Gaussian noise of standard deviation augment.std to every training input (any data)")
def noise(sample_shape: tuple[int, ...], std: Std):
    """Gaussian noise on every feature; works for images, tables and sequences alike."""
    return (lambda inputs, generator: _add_noise(inputs, generator, std)) if std > 0 else None


@AUGMENTS.register("basic", "Rotate, zoom and add noise to each training image (augment.degrees, min, max, std)")
def basic(sample_shape: tuple[int, ...], degrees: Degrees, min: Zoom, max: Zoom, std: Std):  # noqa: A002
    """rotate and scale in one resampling (no double blur), then noise."""
    _need_images(sample_shape, "basic")
    _need_order(min, max)

    def apply(inputs, generator):
        return _add_noise(_affine(inputs, generator, degrees, min, max), generator, std)

    return apply


def _need_images(sample_shape: tuple[int, ...], name: str) -> None:
    if len(sample_shape) != 3:
        raise ConfigError(
            f"augment={name} transforms images shaped (channels, height, width), but this data set's samples are "
            f"shaped {tuple(sample_shape)}. Use augment=noise or augment=none for non-image data."
        )


def _need_order(low: float, high: float) -> None:
    if low > high:
        raise ConfigError(f"augment.min ({low}) is above augment.max ({high}); the zoom is drawn from [min, max].")


def _uniform(generator, n: int, low: float, high: float):
    import torch

    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)


def _where_drawn(inputs, generator, changed):
    """`changed` for a random half of the samples, `inputs` for the rest."""
    import torch

    chosen = torch.rand(len(inputs), generator=generator) < 0.5
    return torch.where(chosen.to(inputs.device).view(-1, *[1] * (inputs.dim() - 1)), changed, inputs)


def _affine(inputs, generator, degrees: float, zoom_low: float, zoom_high: float):
    """Rotate by a uniform angle in [-degrees, degrees] and zoom by a uniform factor in
    [zoom_low, zoom_high], per sample, about the centre, in one grid_sample."""
    import torch
    import torch.nn.functional as F

    n, _, height, width = inputs.shape
    angle = _uniform(generator, n, -degrees, degrees) * (math.pi / 180)
    zoom = _uniform(generator, n, zoom_low, zoom_high)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    # affine_grid maps each output position to where it samples the input, in coordinates
    # normalized to [-1, 1] per axis; the aspect factors keep a rotation rigid on
    # non-square images, and dividing by the zoom samples a smaller area (zooms in).
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin * height / width
    theta[:, 1, 0], theta[:, 1, 1] = sin * width / height, cos
    theta = theta.to(device=inputs.device, dtype=inputs.dtype)
    grid = F.affine_grid(theta, list(inputs.shape), align_corners=False)
    # Border padding repeats the edge pixels (usually background) instead of adding a
    # frame of zeros, which after standardization would be the mean, not the background.
    return F.grid_sample(inputs, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _add_noise(inputs, generator, std: float):
    import torch

    if std == 0:
        return inputs
    noise = torch.randn(inputs.shape, generator=generator, dtype=inputs.dtype)
    return inputs + std * noise.to(inputs.device)
