"""Quantized FF layer with Brevitas: normalise -> QuantIdentity (input) -> QuantLinear -> QuantReLU.

- Weights: `weight_bits` 3..8 signed, narrow range, scale per tensor or per output channel
  (Int8WeightPerTensorFloat / Int8WeightPerChannelFloat); 2 bits in narrow range is ternary {-1, 0, 1};
  1 bit is binary {-s, +s} with a constant scale s (training only: QCDQ export cannot carry binary weights).
- Activations: unsigned `act_bits` (QuantReLU, with its own gradient: zero below 0, straight-through across
  the rounding; `model.straight_through` applies to standard layers only: on quantized layers it did not
  help, measured); the layer's input (after normalisation) is quantized to
  unsigned `input_bits`, so the next layer receives quantized activations after normalisation.
- Bias: int32 with scale = input scale x weight scale (Int32Bias), as integer kernels expect.
- Scales of inputs and activations are learned from statistics, then as parameters, per layer and seed.
Only quantizers that Brevitas can export to QCDQ are used (besides the optional binary weights).
Brevitas modules have no seed dimension, so each seed holds its own modules and they run in turn.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from brevitas import nn as qnn
from brevitas.quant import (Int8ActPerTensorFloat, Int8WeightPerChannelFloat, Int8WeightPerTensorFloat, Int32Bias,
                            SignedBinaryWeightPerTensorConst, Uint8ActPerTensorFloat)
from torch import nn

from ..errors import FFHWError
from .base import ConvBlock, FFLayer, LayerOutput, init_std, normalize, register, seed_normal


class QuantExport(nn.Module):
    """One seed's quantized layer for QCDQ export: float normalisation, then the Brevitas unit."""

    def __init__(self, unit: "QuantUnit", norm: str):
        super().__init__()
        self.unit, self.norm = unit, norm

    def forward(self, x):
        h = self.unit(normalize(x, self.norm))
        return h, h


@dataclass
class QuantizedOptions:
    weight_bits: int = 8  # 8..3; 2 = ternary; 1 = binary (not exportable to QCDQ)
    act_bits: int = 8
    input_bits: int = 8
    scaling: str = "tensor"  # tensor | channel: one weight scale per tensor or per output unit

    def __post_init__(self):
        if not 1 <= self.weight_bits <= 8:
            raise ValueError(f"weight_bits = {self.weight_bits} must be 1 (binary), 2 (ternary) or 3..8")
        for name in ("act_bits", "input_bits"):
            if not 2 <= getattr(self, name) <= 8:
                raise ValueError(f"{name} = {getattr(self, name)} must be between 2 and 8")
        if self.scaling not in ("tensor", "channel"):
            raise ValueError(f"scaling = {self.scaling!r} is not one of tensor, channel")


def weight_quantizer(opts: QuantizedOptions, binary_scale: float) -> dict:
    if opts.weight_bits == 1:
        return dict(weight_quant=SignedBinaryWeightPerTensorConst, weight_scaling_const=binary_scale)
    return dict(weight_quant=Int8WeightPerChannelFloat if opts.scaling == "channel" else Int8WeightPerTensorFloat,
                weight_bit_width=opts.weight_bits)


class QuantUnit(nn.Module):
    """One seed's quantized layer."""

    def __init__(self, in_features: int, out_features: int, opts: QuantizedOptions, weight: torch.Tensor):
        super().__init__()
        self.input_quant = qnn.QuantIdentity(act_quant=Uint8ActPerTensorFloat, bit_width=opts.input_bits,
                                             return_quant_tensor=True)
        self.linear = qnn.QuantLinear(in_features, out_features, bias=True, bias_quant=Int32Bias,
                                      return_quant_tensor=False, **weight_quantizer(opts, init_std(out_features)))
        with torch.no_grad():
            self.linear.weight.copy_(weight.t())
            self.linear.bias.zero_()
        self.act = qnn.QuantReLU(act_quant=Uint8ActPerTensorFloat, bit_width=opts.act_bits, return_quant_tensor=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.linear(self.input_quant(x)))


@register("quantized")
class QuantizedLayer(FFLayer):
    Options = QuantizedOptions

    def __init__(self, index, in_features, out_features, seeds, model, options: QuantizedOptions, generators):
        super().__init__(index, in_features, out_features, seeds, model, options, generators)
        init = seed_normal((in_features, out_features), init_std(out_features), generators)
        self.units_per_seed = nn.ModuleList(QuantUnit(in_features, out_features, options, w) for w in init)

    def forward(self, x: torch.Tensor) -> LayerOutput:
        x = normalize(x, self.norm)
        h = torch.stack([unit(x[s]) for s, unit in enumerate(self.units_per_seed)])
        return LayerOutput(act=h, out=h)

    def weight_bits(self) -> int:
        return self.options.weight_bits

    def quant_weights(self, unit):
        return unit.linear.quant_weight()

    @torch.no_grad()
    def weight_levels(self) -> torch.Tensor:
        """Distinct integer weight levels in use, per seed (largest over scale groups for per-channel)."""
        counts = []
        for unit in self.units_per_seed:
            w = self.quant_weights(unit)
            ints = torch.sign(w.value) if self.options.weight_bits == 1 else w.int()
            counts.append(max(len(torch.unique(row)) for row in ints) if self.options.scaling == "channel"
                          else len(torch.unique(ints)))
        return torch.tensor(counts, dtype=torch.float32)

    def static_stats(self) -> dict[str, torch.Tensor | float]:
        o = self.options
        return {"weight_bits": float(o.weight_bits), "act_bits": float(o.act_bits), "weight_levels": self.weight_levels()}

    def deployed_weight_bytes(self) -> float:
        o = self.options
        scales = self.out_features if o.scaling == "channel" else 1
        # integer weights, int32 biases, and float32 scales (weights, input, activation)
        return self.in_features * self.out_features * o.weight_bits / 8 + self.out_features * 4 + (scales + 2) * 4

    def op_counts(self, input_density: float) -> dict:
        counts = super().op_counts(input_density)
        o = self.options
        # Integer kernels run sub-8-bit weights as int8; BOPs count the bits the format could exploit.
        return {**counts, "mac_kind": "int8_mac", "bops": counts["macs"] * o.weight_bits * o.input_bits}

    # ---- export ----
    def export_module(self, seed: int) -> nn.Module:
        if self.options.weight_bits == 1:
            raise FFHWError("binary weights cannot be exported to QCDQ ONNX (onnxruntime has no 1-bit kernels); "
                            "train with weight_bits >= 2 to export")
        return QuantExport(copy.deepcopy(self.units_per_seed[seed]).eval(), self.norm)

    def export_meta(self) -> dict:
        o = self.options
        return {"weight_bits": o.weight_bits, "act_bits": o.act_bits, "input_bits": o.input_bits, "scaling": o.scaling,
                "note": "sub-8-bit weights are stored and run as int8 in QCDQ/onnxruntime"}

    def export_onnx(self, module, args, path, input_names, output_names, dynamic_axes, opset) -> str:
        import brevitas
        from brevitas.export import export_onnx_qcdq
        # keep_initializers_as_inputs=False lets onnxruntime fold the QDQ pattern into integer kernels;
        # the TorchScript path keeps the int8 weights in the file.
        export_onnx_qcdq(module, args=args, export_path=str(path), input_names=input_names,
                         output_names=output_names, dynamic_axes=dynamic_axes, opset_version=opset,
                         keep_initializers_as_inputs=False, dynamo=False)
        return f"brevitas {brevitas.__version__} export_onnx_qcdq"

    def export_qonnx(self, module, args, path, input_names, output_names, dynamic_axes) -> str | None:
        import brevitas
        from brevitas.export import export_qonnx
        export_qonnx(module, args=args, export_path=str(path), input_names=input_names, output_names=output_names,
                     dynamic_axes=dynamic_axes, dynamo=False)
        return f"brevitas {brevitas.__version__} export_qonnx"

    def parity(self, reference: torch.Tensor, exported: torch.Tensor) -> dict:
        """Compared in units of the output quantisation step: integer kernels may round one step apart."""
        step = min(float(unit.act.act_quant.scale()) for unit in self.units_per_seed)
        err = (reference - exported).abs().max().item() / step
        return {"metric": "max abs error in output quantisation steps", "value": err, "tolerance": 1.0,
                "ok": err <= 1.0 + 1e-3}


class QuantConvUnit(nn.Module):
    """One seed's quantized conv block after its float block normaliser: signed input quantizer (the
    normalised input has both signs) -> QuantConv2d 3x3 (no bias) -> QuantReLU -> optional max-pool."""

    def __init__(self, in_channels: int, out_channels: int, pool: bool, opts: QuantizedOptions, weight: torch.Tensor):
        super().__init__()
        self.input_quant = qnn.QuantIdentity(act_quant=Int8ActPerTensorFloat, bit_width=opts.input_bits,
                                             return_quant_tensor=True)
        self.conv = qnn.QuantConv2d(in_channels, out_channels, 3, padding=1, bias=False, return_quant_tensor=False,
                                    **weight_quantizer(opts, float(weight.abs().mean())))
        with torch.no_grad():
            self.conv.weight.copy_(weight)
        self.act = qnn.QuantReLU(act_quant=Uint8ActPerTensorFloat, bit_width=opts.act_bits, return_quant_tensor=False)
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
    """Brevitas QuantConv2d blocks; the export, parity, statistics and footprint rules are the FC layer's."""

    def __init__(self, index, in_shape, out_channels, pool, seeds, model, options: QuantizedOptions, generators):
        ConvBlock.__init__(self, index, in_shape, out_channels, pool, seeds, model, options, generators)
        init = self.conv_init(out_channels, in_shape[0], generators)
        self.units_per_seed = nn.ModuleList(QuantConvUnit(in_shape[0], out_channels, pool, options, w) for w in init)

    def forward(self, x: torch.Tensor) -> LayerOutput:
        x = self.normalize_block(x)
        h = torch.stack([unit(x[s]) for s, unit in enumerate(self.units_per_seed)])
        return LayerOutput(act=h, out=h)

    def quant_weights(self, unit):
        return unit.conv.quant_weight()

    def export_module(self, seed: int) -> nn.Module:
        if self.options.weight_bits == 1:
            raise FFHWError("binary weights cannot be exported to QCDQ ONNX; train with weight_bits >= 2 to export")
        return QuantConvExport(self.block_norm_module(seed), copy.deepcopy(self.units_per_seed[seed]).eval())

    def op_counts(self, input_density: float) -> dict:
        counts = ConvBlock.op_counts(self, input_density)
        o = self.options
        return {**counts, "mac_kind": "int8_mac", "bops": counts["macs"] * o.weight_bits * o.input_bits}

    def deployed_weight_bytes(self) -> float:
        o = self.options
        c = self.in_shape[0]
        scales = self.out_shape[0] if o.scaling == "channel" else 1
        return self.out_shape[0] * c * 9 * o.weight_bits / 8 + (scales + 2) * 4  # no bias in conv blocks
