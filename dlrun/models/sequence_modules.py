"""Torch modules behind the sequence layer types (dlrun.models.sequence).

Every tensor here is batch-first: (batch, steps, features). Kept apart from the
layer builders so that validating a config never imports torch.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class AsSequence(nn.Module):
    """View each sample as (steps, features).

    (channels, height, width) -> (height, channels * width): an image's rows are
    the steps; (length,) -> (length, 1); (steps, features) passes unchanged.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            return x.permute(0, 2, 1, 3).flatten(2)
        if x.dim() == 2:
            return x.unsqueeze(-1)
        return x


class Recurrent(nn.Module):
    """A batch-first nn.RNN, nn.LSTM or nn.GRU that returns every step or only the last.

    The last step is the top layer's final hidden state; when bidirectional it is the
    forward direction after the last step joined with the backward one after the
    first step, so each direction has read the whole sequence.
    """

    def __init__(self, rnn: nn.RNNBase, last_only: bool):
        super().__init__()
        self.rnn = rnn
        self.last_only = last_only

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps, final = self.rnn(x)
        if not self.last_only:
            return steps
        hidden = final[0] if isinstance(final, tuple) else final  # an LSTM returns (h_n, c_n)
        directions = 2 if self.rnn.bidirectional else 1
        return torch.cat(list(hidden[-directions:]), dim=-1)  # (layers * directions, batch, hidden) -> top layer


class LearnedPosition(nn.Module):
    """Adds a trained vector per step."""

    def __init__(self, steps: int, width: int):
        super().__init__()
        self.table = nn.Parameter(torch.randn(steps, width) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.table


class SinusoidalPosition(nn.Module):
    """Adds the fixed sine/cosine code of "Attention is all you need" per step."""

    def __init__(self, steps: int, width: int):
        super().__init__()
        position = torch.arange(steps, dtype=torch.float32).unsqueeze(1)
        frequency = torch.exp(torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(10000.0) / width))
        table = torch.zeros(steps, width)
        table[:, 0::2] = torch.sin(position * frequency)
        table[:, 1::2] = torch.cos(position * frequency[: width // 2])  # odd widths have one cosine fewer
        self.register_buffer("table", table)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.table


class TransformerEncoder(nn.Module):
    """Projects each step to d_model, adds the position code, then runs encoder layers."""

    def __init__(self, features: int, position: nn.Module, layer: nn.TransformerEncoderLayer, layers: int):
        super().__init__()
        self.project = nn.Linear(features, layer.self_attn.embed_dim)
        self.position = position
        # Nested tensors only pay off with padding masks, which dlrun never passes.
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.position(self.project(x)))


class PoolSteps(nn.Module):
    """(steps, features) -> (features,): mean, max, first or last over the steps."""

    def __init__(self, mode: str):
        super().__init__()
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "mean":
            return x.mean(dim=1)
        if self.mode == "max":
            return x.amax(dim=1)
        return x[:, 0] if self.mode == "first" else x[:, -1]
