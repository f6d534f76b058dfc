"""Augmentations of training batches, chosen by the `augment` group.

A builder returns a function (batch inputs, torch.Generator) -> augmented inputs
that works on whole batches of tensors (no per-sample Python), or None for no
augmentation. Only training batches pass through it; val and test never do.
"""

from __future__ import annotations

from dlrun.registry import Registry

AUGMENTS = Registry("augmentation")


@AUGMENTS.register("none", "No augmentation: training batches as the data set gives them")
def none():
    return None
