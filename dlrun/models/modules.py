"""Small torch modules that the declarative layers and the exported model need."""

import torch
from torch import nn


class Reshape(nn.Module):
    """Reshape each sample to `shape`, keeping the batch dimension."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)


class Residual(nn.Module):
    """x + block(x): a skip connection around a block that keeps the shape."""

    takes_padding = True  # the block's layers may mask padded steps (dlrun.models.sequence_modules)

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        return x + (self.block(x) if padding is None else self.block(x, padding))


class Standardize(nn.Module):
    """(x - mean) / scale with constants fitted on the training split."""

    def __init__(self, mean: torch.Tensor, scale: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean.float())
        self.register_buffer("scale", scale.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.scale


class Unstandardize(Standardize):
    """The inverse of Standardize: x * scale + mean (regression targets)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.mean


class ServingModel(nn.Module):
    """What MLflow serves: raw features in, probabilities or values out.

    Embeds the data preprocessing fitted on the training split and the output
    transform (softmax, sigmoid, or target un-scaling), so that users feed the
    features exactly as the data set provides them.
    """

    def __init__(self, preprocess: nn.Module, net: nn.Module, postprocess: nn.Module):
        super().__init__()
        self.preprocess = preprocess
        self.net = net
        self.postprocess = postprocess

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.postprocess(self.net(self.preprocess(x)))


class Probabilities(nn.Module):
    """Class probabilities from logits: softmax, or sigmoid for one binary logit."""

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        if logits.shape[-1] == 1:
            p = torch.sigmoid(logits)
            return torch.cat([1 - p, p], dim=-1)
        return torch.softmax(logits, dim=-1)
