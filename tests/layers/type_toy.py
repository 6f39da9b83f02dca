"""A test-only layer type, registered from this one file: a leaky-ReLU layer. Its presence proves that a new
type gets the whole layer contract (tests/layers/test_contract.py) without touching any other file."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ffhw.layers.base import FFLayer, LayerOutput, register
from ffhw.layers.ops import affine, init_std, linear_module, normalize, seed_normal

SLOPE = 0.1


class ToyExport(nn.Module):
    def __init__(self, weight, bias, norm):
        super().__init__()
        self.linear, self.norm = linear_module(weight, bias), norm

    def forward(self, x):
        h = F.leaky_relu(self.linear(normalize(x, self.norm)), SLOPE)
        return h, h


@register("toy")
class ToyLayer(FFLayer):
    def __init__(self, index, in_features, out_features, seeds, model, options, generators):
        super().__init__(index, in_features, out_features, seeds, model, options, generators)
        self.weight = nn.Parameter(seed_normal((in_features, out_features), init_std(out_features), generators))
        self.bias = nn.Parameter(torch.zeros(seeds, 1, out_features))

    def forward(self, x: torch.Tensor) -> LayerOutput:
        h = F.leaky_relu(affine(x, self.weight, self.bias, self.norm), SLOPE)
        return LayerOutput(act=h, out=h)

    def export_module(self, seed: int) -> nn.Module:
        return ToyExport(self.weight[seed].detach(), self.bias[seed].detach(), self.norm)
