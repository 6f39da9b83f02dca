"""Standard float FF layer: normalise input -> Linear -> ReLU (straight-through gradient optional)."""
from __future__ import annotations

import torch
from torch import nn

from .base import FFLayer, LayerOutput, affine, affine_labels, init_std, register, relu, seed_normal


@register("standard")
class StandardLayer(FFLayer):
    def __init__(self, index, in_features, out_features, seeds, model, options, generators):
        super().__init__(index, in_features, out_features, seeds, model, options, generators)
        self.weight = nn.Parameter(seed_normal((in_features, out_features), init_std(out_features), generators))
        self.bias = nn.Parameter(torch.zeros(seeds, 1, out_features))

    def forward(self, x: torch.Tensor) -> LayerOutput:
        h = relu(affine(x, self.weight, self.bias, self.norm), self.straight_through)
        return LayerOutput(act=h, out=h)

    def forward_labels(self, base: torch.Tensor, patterns: torch.Tensor) -> LayerOutput:
        h = relu(affine_labels(base, patterns, self.weight, self.bias, self.norm), self.straight_through)
        return LayerOutput(act=h, out=h)
