"""Torch modules behind the sequence layer types (dlrun.models.sequence).

Every tensor here is batch-first: (batch, steps, features). Kept apart from the
layer builders so that validating a config never imports torch.

Padding: a TokenEmbedding marks where its token ids are 0 (PAD); MaskedSequential
hands that mask, `padding` (batch, steps), True at padded steps, to the layers after
it that take one (`takes_padding`), so that padding changes neither attention, nor
pooling, nor a recurrent layer's summary. Texts are right-padded, and every text has
at least one token (dlrun.data.tokenizer), so no row is padding only.
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


class TokenEmbedding(nn.Module):
    """Token ids (steps,) -> vectors (steps, dim); id 0 is padding: a zero vector that never trains."""

    makes_padding = True

    def __init__(self, vocab_size: int, dim: int):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=0)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(ids.long())  # shape inference probes with float zeros


class MaskedSequential(nn.Sequential):
    """nn.Sequential that passes the padding mask of a TokenEmbedding to the layers after it.

    The mask holds while the steps do: once a layer's output has no steps dimension, or
    another number of steps, the layers after it get none.
    """

    takes_padding = True

    def __init__(self, *modules: nn.Module):
        super().__init__(*modules)
        self.makes_padding = any(getattr(module, "makes_padding", False) for module in modules)

    def forward(self, x: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        if padding is None and not self.makes_padding:
            return super().forward(x)
        for module in self:
            if getattr(module, "makes_padding", False):
                padding = x == 0
            x = module(x, padding) if padding is not None and getattr(module, "takes_padding", False) else module(x)
            if padding is not None and (x.dim() != 3 or x.shape[1] != padding.shape[1]):
                padding = None
        return x


def _last_real_step(x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
    """x[b, length_b - 1] for each row b: the last step that is not padding (right-padded rows)."""
    last = ((~padding).sum(dim=1) - 1).clamp(min=0)  # a row of padding only (a shape probe): its first step
    return x.gather(1, last.view(-1, 1, 1).expand(-1, 1, x.shape[-1])).squeeze(1)


def _rotate_rows(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Row b rolled by shift[b] steps: x[b, (t - shift[b]) mod steps] at step t."""
    steps = x.shape[1]
    index = (torch.arange(steps, device=x.device).unsqueeze(0) - shift.unsqueeze(1)) % steps
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class Recurrent(nn.Module):
    """A batch-first nn.RNN, nn.LSTM or nn.GRU that returns every step or only the last.

    The last step is the top layer's final hidden state; when bidirectional it is the
    forward direction after the last step joined with the backward one after the
    first step, so each direction has read the whole sequence.
    """

    takes_padding = True

    def __init__(self, rnn: nn.RNNBase, last_only: bool):
        super().__init__()
        self.rnn = rnn
        self.last_only = last_only

    def forward(self, x: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        if padding is not None:
            return self._padded(x, padding)
        steps, final = self.rnn(x)
        if not self.last_only:
            return steps
        hidden = final[0] if isinstance(final, tuple) else final  # an LSTM returns (h_n, c_n)
        directions = 2 if self.rnn.bidirectional else 1
        return torch.cat(list(hidden[-directions:]), dim=-1)  # (layers * directions, batch, hidden) -> top layer

    def _padded(self, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """Every step's output, or the summary, as if the rows had no padding.

        Going forward, trailing padding comes after every real step, so it changes none of
        their outputs. The backward direction would read the padding first: it runs on the
        rows rotated so that the padding leads (left-padded), and its outputs are rotated
        back. With more than one bidirectional layer the second layer's backward input
        would mix both, so the builder refuses that combination after an embedding.
        """
        if self.rnn.bidirectional:  # both layouts in one call: one batch twice as large runs faster than two
            width = self.rnn.hidden_size
            pad_count = padding.sum(dim=1)
            both, _ = self.rnn(torch.cat([x, _rotate_rows(x, pad_count)]))
            forward, backward = both[: x.shape[0]], both[x.shape[0]:]
            steps = torch.cat([forward[..., :width], _rotate_rows(backward, -pad_count)[..., width:]], dim=-1)
        else:
            steps, _ = self.rnn(x)
        if not self.last_only:
            return steps.masked_fill(padding.unsqueeze(-1), 0.0)
        if not self.rnn.bidirectional:
            return _last_real_step(steps, padding)
        width = self.rnn.hidden_size  # forward after the last real step, backward after the first step
        return torch.cat([_last_real_step(steps[..., :width], padding), steps[:, 0, width:]], dim=-1)


class LearnedPosition(nn.Module):
    """Adds a trained vector per step."""

    def __init__(self, steps: int, width: int):
        super().__init__()
        self.table = nn.Parameter(torch.randn(steps, width) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.table[: x.shape[1]]  # fewer steps than built for: the first ones


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
        return x + self.table[: x.shape[1]]


class TransformerEncoder(nn.Module):
    """Projects each step to d_model, adds the position code, then runs encoder layers."""

    takes_padding = True

    def __init__(self, features: int, position: nn.Module, layer: nn.TransformerEncoderLayer, layers: int):
        super().__init__()
        self.project = nn.Linear(features, layer.self_attn.embed_dim)
        self.position = position
        # Nested tensors would drop padded steps, but their shapes follow the data, which torch.export refuses.
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, x: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        """Padded steps are no key of any attention, and their outputs are zero."""
        encoded = self.encoder(self.position(self.project(x)), src_key_padding_mask=padding)
        return encoded if padding is None else encoded.masked_fill(padding.unsqueeze(-1), 0.0)


class PoolSteps(nn.Module):
    """(steps, features) -> (features,): mean, max, first or last over the steps."""

    takes_padding = True

    def __init__(self, mode: str):
        super().__init__()
        self.mode = mode

    def forward(self, x: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        if padding is not None:
            return self._padded(x, padding)
        if self.mode == "mean":
            return x.mean(dim=1)
        if self.mode == "max":
            return x.amax(dim=1)
        return x[:, 0] if self.mode == "first" else x[:, -1]

    def _padded(self, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """The same over the steps that are not padding."""
        if self.mode == "mean":
            keep = (~padding).unsqueeze(-1).to(x.dtype)
            return (x * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1.0)
        if self.mode == "max":
            return x.masked_fill(padding.unsqueeze(-1), float("-inf")).amax(dim=1)
        return x[:, 0] if self.mode == "first" else _last_real_step(x, padding)
