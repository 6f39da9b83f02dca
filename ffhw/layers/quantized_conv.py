"""Quantized conv blocks (the Trifecta networks): the FC quantized layer's quantizers, statistics, export and
parity rules on a seed-grouped 3x3 convolution; each seed exports as a Brevitas `QuantConvUnit`."""
from __future__ import annotations

import torch
from brevitas import nn as qnn
from brevitas.quant import Int8ActPerTensorFloat, Uint8ActPerTensorFloat
from torch import nn

from ..errors import FFHWError
from .base import LayerOutput, register
from .conv import ConvBlock
from .quantized import QuantizedLayer, QuantizedOptions, SeedActQuant, weight_quantizer


class QuantConvUnit(nn.Module):
    """One seed's quantized conv block after its float block normaliser: signed input quantizer (the
    normalised input has both signs) -> QuantConv2d 3x3 (no bias) -> QuantReLU -> optional max-pool."""

    def __init__(self, in_channels: int, out_channels: int, pool: bool, opts: QuantizedOptions, weight: torch.Tensor,
                 collect_stats_steps: int = 300, binary_scale: float | None = None):
        super().__init__()
        self.input_quant = qnn.QuantIdentity(act_quant=Int8ActPerTensorFloat, bit_width=opts.input_bits,
                                             return_quant_tensor=True,
                                             collect_stats_steps=opts.stats_steps(collect_stats_steps))
        self.conv = qnn.QuantConv2d(in_channels, out_channels, 3, padding=1, bias=False, return_quant_tensor=False,
                                    **weight_quantizer(opts, binary_scale or float(weight.abs().mean())))
        with torch.no_grad():
            self.conv.weight.copy_(weight)
        self.act = qnn.QuantReLU(act_quant=Uint8ActPerTensorFloat, bit_width=opts.act_bits, return_quant_tensor=False,
                                 collect_stats_steps=opts.stats_steps(collect_stats_steps))
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.act(self.conv(self.input_quant(x))))


class QuantConvExport(nn.Module):
    def __init__(self, norm: nn.Module, unit: QuantConvUnit):
        super().__init__()
        self.norm, self.unit = norm, unit

    def forward(self, x):
        h = self.unit(self.norm(x))
        return h, h


@register("quantized", kind="conv")
class QuantizedConvBlock(ConvBlock, QuantizedLayer):
    """Seed-batched quantized conv block (grouped convolution): block normaliser -> signed input quantizer
    (the normalised input has both signs) -> 3x3 conv with quantized weights (no bias) -> QuantReLU ->
    optional max-pool. Quantizers, statistics, export and parity rules are the FC layer's; each seed
    exports as a `QuantConvUnit`."""

    out_dim = 1  # weight [S, O, C, 3, 3]

    def __init__(self, index, in_shape, out_channels, pool, seeds, model, options: QuantizedOptions, generators,
                 collect_stats_steps: int = 300):
        ConvBlock.__init__(self, index, in_shape, out_channels, pool, seeds, model, options, generators)
        self.collect_stats_steps = collect_stats_steps
        init = self.conv_init(out_channels, in_shape[0], generators)
        self.weight = nn.Parameter(init)
        # QuantConvUnit's constant scale for binary weights: the mean |initial weight| of each seed
        self.register_buffer("binary_scales", init.abs().flatten(1).mean(1))
        steps = options.stats_steps(collect_stats_steps)
        self.input_quant = SeedActQuant(seeds, options.input_bits, steps, signed=True)
        self.act_quant = SeedActQuant(seeds, options.act_bits, steps)

    def binary_scale(self) -> torch.Tensor:
        return self.binary_scales

    def forward(self, x: torch.Tensor) -> LayerOutput:
        x_q, _ = self.input_quant(self.normalize_block(x))
        w_scale = self.weight_scale()
        h, _ = self.act_quant(torch.relu(self.conv(x_q, self.int_weight(w_scale) * w_scale)))
        h = self.maybe_pool(h)
        return LayerOutput(act=h, out=h)

    def restack_units(self, units: list[dict]) -> dict:
        weight = torch.stack([u["conv.weight"] for u in units])
        return {"weight": weight, "binary_scales": weight.abs().flatten(1).mean(1)}

    def unit_state(self, seed: int) -> dict:
        return {"conv.weight": self.weight[seed].detach()}

    def new_unit(self, seed: int) -> nn.Module:
        return QuantConvUnit(self.in_shape[0], self.out_shape[0], self.pool, self.options, self.weight[seed].detach(),
                             binary_scale=float(self.binary_scales[seed]))

    def export_module(self, seed: int) -> nn.Module:
        if self.options.weight_bits == 1:
            raise FFHWError("binary weights cannot be exported to QCDQ ONNX; train with weight_bits >= 2 to export")
        return QuantConvExport(self.block_norm_module(seed), self.export_unit(seed))

    def op_counts(self, input_density: float) -> dict:
        counts = ConvBlock.op_counts(self, input_density)
        o = self.options
        return {**counts, "mac_kind": "int8_mac", "bops": counts["macs"] * o.weight_bits * o.input_bits}

    def deployed_weight_bytes(self) -> float:
        o = self.options
        c = self.in_shape[0]
        scales = self.out_shape[0] if o.scaling == "channel" else 1
        return self.out_shape[0] * c * 9 * o.weight_bits / 8 + (scales + 2) * 4  # no bias in conv blocks
