"""Machinery shared by the conv block types (the Trifecta networks): inputs [S, N, C, H, W], seeds as groups
of one grouped convolution, and the block-input normaliser (batch norm keeps statistics per seed)."""
from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .base import FFLayer


def max_pool2x2(x: torch.Tensor, kernel: int = 2) -> torch.Tensor:
    """F.max_pool2d(x, 2) with the same values, gradients and tie rule (first in scan order), faster on the CPU,
    whose NCHW pooling kernel is several times slower than its channels-last one at these small planes
    (benchmarks/results/conv_bench.json): without autograd, two elementwise maxima of strided views; with it,
    the channels-last kernel's indices drive the NCHW backward."""
    if kernel != 2 or x.device.type != "cpu" or x.dim() != 4:
        return F.max_pool2d(x, kernel)
    if x.requires_grad and torch.is_grad_enabled():
        return _ChannelsLastMaxPool.apply(x)
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    cols = torch.maximum(x[..., :h, 0:w:2], x[..., :h, 1:w:2])
    return torch.maximum(cols[..., 0::2, :], cols[..., 1::2, :])


class _ChannelsLastMaxPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y, idx = torch.ops.aten.max_pool2d_with_indices(x.contiguous(memory_format=torch.channels_last), [2, 2], [2, 2])
        ctx.save_for_backward(x, idx.contiguous())  # indices are per plane (h * W + w), whatever the layout
        return y.contiguous()

    @staticmethod
    def backward(ctx, grad):
        x, idx = ctx.saved_tensors
        return torch.ops.aten.max_pool2d_with_indices_backward(grad.contiguous(), x, [2, 2], [2, 2], [0, 0], [1, 1],
                                                               False, idx)


# ---- conv blocks: [norm at the block input] -> conv 3x3 pad 1, no bias -> activation -> optional max-pool 2 ----

class ConvBlock(FFLayer):
    """Shared machinery of the conv block types. Inputs are [S, N, C, H, W]. Seeds run as groups of one
    grouped convolution, and batch norm over the S*C channels keeps separate statistics per seed."""

    compile_max_values: ClassVar[float] = 0.0  # conv steps: torch.compile not measured

    def __init__(self, index, in_shape: tuple[int, int, int], out_channels: int, pool: bool, seeds, model,
                 options, generators):
        c, h, w = in_shape
        oh, ow = (h // 2, w // 2) if pool else (h, w)
        # FFLayer by name: a block type may also inherit its FC sibling's rules (parity, export) but not its init
        FFLayer.__init__(self, index, c * h * w, out_channels * oh * ow, seeds, model, options, generators)
        self.in_shape, self.out_shape, self.pool = tuple(in_shape), (out_channels, oh, ow), pool
        self.block_norm = model.block_norm
        nc, nh, nw = self.norm_shape()
        if self.block_norm == "batch":
            self.bn = nn.BatchNorm2d(seeds * nc)
        elif self.block_norm == "layer":  # over C, H, W per sample, with an affine map per seed
            self.ln_weight = nn.Parameter(torch.ones(seeds, 1, nc, nh, nw))
            self.ln_bias = nn.Parameter(torch.zeros(seeds, 1, nc, nh, nw))

    def norm_shape(self) -> tuple[int, int, int]:
        """The (C, H, W) the block normaliser acts on: the block's input here; a type may normalise elsewhere."""
        return self.in_shape

    @staticmethod
    def conv_init(out_channels: int, in_channels: int, generators) -> torch.Tensor:
        bound = 1.0 / math.sqrt(in_channels * 9)  # torch's default Conv2d init
        return torch.stack([(torch.rand(out_channels, in_channels, 3, 3, generator=g) * 2 - 1) * bound
                            for g in generators])

    @staticmethod
    def grouped(x: torch.Tensor) -> torch.Tensor:
        """[S, N, C, H, W] -> [N, S*C, H, W]"""
        s, n, c, h, w = x.shape
        return x.transpose(0, 1).reshape(n, s * c, h, w)

    @staticmethod
    def ungrouped(y: torch.Tensor, seeds: int) -> torch.Tensor:
        n, sc, h, w = y.shape
        return y.reshape(n, seeds, sc // seeds, h, w).transpose(0, 1)

    def normalize_block(self, x: torch.Tensor) -> torch.Tensor:
        if self.block_norm == "batch":
            return self.ungrouped(self.bn(self.grouped(x)), self.seeds)
        if self.block_norm == "layer":
            mean = x.mean(dim=(-3, -2, -1), keepdim=True)
            var = x.var(dim=(-3, -2, -1), keepdim=True, unbiased=False)
            return (x - mean) / torch.sqrt(var + 1e-5) * self.ln_weight + self.ln_bias
        return x

    def conv(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """Seed-grouped 3x3 convolution: x [S, N, C, H, W], weight [S, O, C, 3, 3], bias [S, O] or None
        -> [S, N, O, H, W]."""
        s, o = weight.shape[:2]
        y = F.conv2d(self.grouped(x), weight.reshape(s * o, *weight.shape[2:]),
                     None if bias is None else bias.reshape(s * o), padding=1, groups=s)
        return self.ungrouped(y, s)

    def maybe_pool(self, y: torch.Tensor, pool=None) -> torch.Tensor:
        """The block's 2x2 pool (max by default) over the last three dimensions, if the block pools."""
        if not self.pool:
            return y
        lead = y.shape[:-3]
        return (pool or max_pool2x2)(y.reshape(-1, *y.shape[-3:]), 2).reshape(*lead, *self.out_shape)

    def forward_labels(self, base, patterns, neutral=None):
        raise TypeError("conv blocks take the label as an input channel: use LabelChannel.all_labels")

    def block_norm_module(self, seed: int) -> nn.Module:
        """This seed's block normaliser as a plain eval-mode module, for export."""
        c, h, w = self.norm_shape()
        if self.block_norm == "batch":
            bn = nn.BatchNorm2d(c).eval()
            sl = slice(seed * c, (seed + 1) * c)
            with torch.no_grad():
                bn.weight.copy_(self.bn.weight[sl])
                bn.bias.copy_(self.bn.bias[sl])
                bn.running_mean.copy_(self.bn.running_mean[sl])
                bn.running_var.copy_(self.bn.running_var[sl])
            return bn
        if self.block_norm == "layer":
            ln = nn.LayerNorm((c, h, w), eps=1e-5)
            with torch.no_grad():
                ln.weight.copy_(self.ln_weight[seed, 0])
                ln.bias.copy_(self.ln_bias[seed, 0])
            return ln
        return nn.Identity()

    def op_counts(self, input_density: float) -> dict:
        c, h, w = self.in_shape
        macs = self.out_shape[0] * c * 9 * h * w
        return {"macs": macs, "mac_kind": "fp32_mac", "nonzero_macs": macs * input_density, "acs": 0.0,
                "neuron_updates": 0, "bops": None}
