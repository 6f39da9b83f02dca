"""Standard float FF layer: normalise input -> Linear -> ReLU (straight-through gradient optional)."""
from __future__ import annotations

import torch
from torch import nn

from .fused import relu_affine, relu_affine_labels
from .base import FFLayer, LayerOutput, register
from .conv import ConvBlock
from .ops import (affine, affine_label_parts, affine_label_sets, affine_labels, affine_parts, init_std, linear_module,
                  normalize, relu, seed_normal)


class StandardExport(nn.Module):
    """One seed's standard layer as a plain graph: normalise -> Gemm -> Relu."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, norm: str):
        super().__init__()
        self.linear, self.norm = linear_module(weight, bias), norm

    def forward(self, x):
        h = torch.relu(self.linear(normalize(x, self.norm)))
        return h, h


@register("standard")
class StandardLayer(FFLayer):
    # Beyond ~1.5M values per activation tensor the matrix products dominate and compiling gains too little to
    # pay for itself (benchmarks/results/train_bench.json, section compile).
    compile_max_values = 1_500_000
    def __init__(self, index, in_features, out_features, seeds, model, options, generators):
        super().__init__(index, in_features, out_features, seeds, model, options, generators)
        self.weight = nn.Parameter(seed_normal((in_features, out_features), init_std(out_features), generators))
        self.bias = nn.Parameter(torch.zeros(seeds, 1, out_features))

    def forward(self, x: torch.Tensor) -> LayerOutput:
        h = relu(affine(x, self.weight, self.bias, self.norm), self.straight_through)
        return LayerOutput(act=h, out=h)

    def evaluate(self, inp: LayerOutput, keep_output: bool = True) -> LayerOutput:
        if not self.runs_fused():
            return self(inp.out)
        z, scale = affine_parts(inp.out, self.weight, self.norm, inp.out_sum_sq)
        return relu_affine(z, self.bias, scale, keep_output)

    def forward_labels(self, base, patterns, neutral=None):
        if self.runs_fused():
            c = patterns.shape[0]
            z_base, z_label, scale = affine_label_parts(base, patterns, self.weight, self.norm, neutral)
            out = relu_affine_labels(z_base, z_label[:, :c], self.bias, scale[:, :, :c])
            if neutral is None:
                return out, None
            return out, relu_affine(z_base + z_label[:, c:], self.bias, scale[:, :, c])
        z, z_neutral = affine_labels(base, patterns, self.weight, self.bias, self.norm, neutral)
        h = relu(z, self.straight_through)
        h_neutral = relu(z_neutral, self.straight_through) if z_neutral is not None else None
        return LayerOutput(act=h, out=h), (LayerOutput(act=h_neutral, out=h_neutral) if h_neutral is not None else None)

    def forward_label_sets(self, base, patterns, labels, frozen_labels=None):
        z, z_frozen = affine_label_sets(base, patterns, labels, self.weight, self.bias, self.norm, frozen_labels)
        h = relu(z, self.straight_through)
        frozen = None
        if z_frozen is not None:
            h_frozen = torch.relu_(z_frozen)
            frozen = LayerOutput(act=h_frozen, out=h_frozen)
        return LayerOutput(act=h, out=h), frozen

    def export_module(self, seed: int) -> nn.Module:
        return StandardExport(self.weight[seed].detach(), self.bias[seed].detach(), self.norm)


class StandardConvExport(nn.Module):
    """One seed's conv block as a plain graph: norm -> Conv 3x3 -> Relu -> MaxPool."""

    def __init__(self, norm: nn.Module, weight: torch.Tensor, pool: bool):
        super().__init__()
        self.norm = norm
        self.conv = nn.Conv2d(weight.shape[1], weight.shape[0], 3, padding=1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(weight)
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()

    def forward(self, x):
        h = self.pool(torch.relu(self.conv(self.norm(x))))
        return h, h


@register("standard", kind="conv")
class StandardConvBlock(ConvBlock):
    def __init__(self, index, in_shape, out_channels, pool, seeds, model, options, generators):
        super().__init__(index, in_shape, out_channels, pool, seeds, model, options, generators)
        self.weight = nn.Parameter(self.conv_init(out_channels, in_shape[0], generators))

    def forward(self, x: torch.Tensor) -> LayerOutput:
        h = self.maybe_pool(relu(self.conv(self.normalize_block(x), self.weight), self.straight_through))
        return LayerOutput(act=h, out=h)

    def export_module(self, seed: int) -> nn.Module:
        return StandardConvExport(self.block_norm_module(seed), self.weight[seed].detach(), self.pool)
