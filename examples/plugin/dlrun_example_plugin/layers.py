"""The torch modules of the example plugin (imported by its builders only: loading the plugin stays light)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class SqueezeExcite(nn.Module):
    """Channels reweighted by a small gate on their spatial means (Hu et al., 2018)."""

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.gate = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.gate(x.mean(dim=(2, 3)))
        return x * weights[:, :, None, None]


class FocalLoss(nn.Module):
    """(1 - p_t)^gamma * cross-entropy (Lin et al., 2017); gamma=0 is plain cross-entropy."""

    def __init__(self, gamma: float, label_smoothing: float):
        super().__init__()
        self.gamma, self.label_smoothing = gamma, label_smoothing

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(outputs, targets, reduction="none", label_smoothing=self.label_smoothing)
        p_t = torch.exp(-F.cross_entropy(outputs, targets, reduction="none"))
        return ((1 - p_t) ** self.gamma * ce).mean()
