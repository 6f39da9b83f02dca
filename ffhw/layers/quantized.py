"""Quantized FF layer with Brevitas: normalise -> QuantIdentity (input) -> QuantLinear -> QuantReLU.

- Weights: `weight_bits` 3..8 signed, narrow range, scale per tensor or per output channel
  (Int8WeightPerTensorFloat / Int8WeightPerChannelFloat); 2 bits in narrow range is ternary {-1, 0, 1};
  1 bit is binary {-s, +s} with a constant scale s (training only: QCDQ export cannot carry binary weights).
- Activations: unsigned `act_bits` (QuantReLU, with its own gradient: zero below 0, straight-through across
  the rounding; `model.straight_through` applies to standard layers only: on quantized layers it did not
  help, measured); the layer's input (after normalisation) is quantized to
  unsigned `input_bits`, so the next layer receives quantized activations after normalisation.
- Bias: int32 with scale = input scale x weight scale (Int32Bias), as integer kernels expect.
- Clipping thresholds (scales) of inputs and activations per layer and seed: the running average of percentile
  statistics all through training (`thresholds = "running"`, default), or Brevitas's statistics-then-learned.
Only quantizers that Brevitas can export to QCDQ are used (besides the optional binary weights).
Conv blocks of this type: quantized_conv.py.

Layers train seed-batched: Brevitas modules have no seed dimension (and `torch.vmap` does not
go through its autograd functions), so `SeedActQuant` and `QuantizedLayer.weight_scale` / `int_weight` restate
exactly these Brevitas quantizers with a leading seed dimension, every scale per seed, built from Brevitas's own
straight-through functions. For export, each seed becomes a Brevitas `QuantUnit` holding the learned values
(tests check training step by step against Brevitas units, and ONNX parity). Conv blocks run seeds as groups
of one grouped convolution, with the same quantizers (quantized_conv.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from brevitas import nn as qnn
from brevitas.function.ops_ste import binary_sign_ste, round_ste, scalar_clamp_min_ste, scalar_clamp_ste
from brevitas.quant import (Int8WeightPerChannelFloat, Int8WeightPerTensorFloat, Int32Bias,
                            SignedBinaryWeightPerTensorConst, Uint8ActPerTensorFloat)
from torch import nn

from ..errors import FFHWError
from .base import FFLayer, LayerOutput, register
from .ops import init_std, normalize, seed_normal


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
    # Clipping thresholds of inputs and activations: "learned" (Brevitas's default: percentile statistics for
    # 300 steps, then a trained parameter) or "running" (the percentile statistics' running average all through
    # training, frozen at export). Learned thresholds stay where the early statistics put them while activations
    # grow, so a quarter of the active outputs end clipped, without gradient (measured: docs/layer-types.md).
    thresholds: str = "running"
    # what runs saved before an option existed used: their configs lack it
    LEGACY: ClassVar[dict] = {"thresholds": "learned"}

    def __post_init__(self):
        if not 1 <= self.weight_bits <= 8:
            raise ValueError(f"weight_bits = {self.weight_bits} must be 1 (binary), 2 (ternary) or 3..8")
        for name in ("act_bits", "input_bits"):
            if not 2 <= getattr(self, name) <= 8:
                raise ValueError(f"{name} = {getattr(self, name)} must be between 2 and 8")
        if self.scaling not in ("tensor", "channel"):
            raise ValueError(f"scaling = {self.scaling!r} is not one of tensor, channel")
        if self.thresholds not in ("learned", "running"):
            raise ValueError(f"thresholds = {self.thresholds!r} is not one of learned, running")

    def stats_steps(self, collect_stats_steps: int) -> int:
        """Training calls that read the thresholds from statistics (running: all of them)."""
        return collect_stats_steps if self.thresholds == "learned" else RUNNING_STEPS


def weight_quantizer(opts: QuantizedOptions, binary_scale: float) -> dict:
    if opts.weight_bits == 1:
        return dict(weight_quant=SignedBinaryWeightPerTensorConst, weight_scaling_const=binary_scale)
    return dict(weight_quant=Int8WeightPerChannelFloat if opts.scaling == "channel" else Int8WeightPerTensorFloat,
                weight_bit_width=opts.weight_bits)


class QuantUnit(nn.Module):
    """One seed's quantized layer as Brevitas modules: what an FC layer exports (and the reference its
    seed-batched training is tested against)."""

    def __init__(self, in_features: int, out_features: int, opts: QuantizedOptions, weight: torch.Tensor,
                 collect_stats_steps: int = 300):
        super().__init__()
        self.input_quant = qnn.QuantIdentity(act_quant=Uint8ActPerTensorFloat, bit_width=opts.input_bits,
                                             return_quant_tensor=True,
                                             collect_stats_steps=opts.stats_steps(collect_stats_steps))
        self.linear = qnn.QuantLinear(in_features, out_features, bias=True, bias_quant=Int32Bias,
                                      return_quant_tensor=False, **weight_quantizer(opts, init_std(out_features)))
        with torch.no_grad():
            self.linear.weight.copy_(weight.t())
            self.linear.bias.zero_()
        self.act = qnn.QuantReLU(act_quant=Uint8ActPerTensorFloat, bit_width=opts.act_bits, return_quant_tensor=False,
                                 collect_stats_steps=opts.stats_steps(collect_stats_steps))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.linear(self.input_quant(x)))


SCALE_MIN = 1e-10  # Brevitas's scaling_min_val for these quantizers
RUNNING_STEPS = 2 ** 62  # "running" thresholds: statistics for every training call


def seed_abs_percentile(x: torch.Tensor, q: float) -> torch.Tensor:
    """Brevitas's AbsPercentile over each seed's whole tensor: x [S, ...] -> [S]."""
    flat = x.reshape(x.shape[0], -1).abs()
    k = max(int(math.floor(0.01 * q * flat.shape[1] + 0.5)), 1)  # 1-indexed, rounded as Brevitas does
    top = flat.shape[1] - k + 1  # the same order statistic counted from the top
    if top <= 64:  # near the maximum a partial top-k is far cheaper than a full selection, and exact
        return flat.topk(top, dim=1).values[:, -1]
    return flat.kthvalue(k, dim=1).values


class SeedActQuant(nn.Module):
    """Brevitas's Uint8ActPerTensorFloat (unsigned, per-tensor float scale; or Int8ActPerTensorFloat with
    `signed`) with a seed dimension.

    As ParameterFromRuntimeStatsScaling: for the first `collect_steps` training calls the clipping threshold
    is the 99.999th percentile of |x| (per seed), averaged into `buffer` with momentum 0.1; at the next call
    the learned `value` is initialised from it (multiplied, as Brevitas does) and trained from then on.
    scale = threshold / (2^bits - 1); x -> clamp(round_ste(x / scale), 0, 2^bits - 1) * scale.
    """

    def __init__(self, seeds: int, bits: int, collect_steps: int = 300, momentum: float = 0.1,
                 percentile: float = 99.999, signed: bool = False):
        super().__init__()
        self.bits, self.collect_steps, self.momentum, self.percentile = bits, collect_steps, momentum, percentile
        self.signed = signed  # Int8ActPerTensorFloat: [-2^(b-1), 2^(b-1) - 1], scale = threshold / 2^(b-1)
        self.value = nn.Parameter(torch.ones(seeds))
        self.register_buffer("buffer", torch.ones(seeds))
        self.register_buffer("counter", torch.zeros((), dtype=torch.long))
        self.count = 0  # host copy of `counter`: read every call without a device sync
        # the regime is part of the model, so a model loads with the thresholds it was trained with
        self.register_buffer("stats_steps", torch.tensor(collect_steps, dtype=torch.long))
        self.register_load_state_dict_post_hook(lambda module, keys: setattr(module, "count", int(module.counter)))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # a model saved before this buffer existed trained the regime its config names (load_model fills
        # options older configs lack with Options.LEGACY)
        state_dict.setdefault(f"{prefix}stats_steps", torch.tensor(self.collect_steps))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.collect_steps = int(self.stats_steps)

    def _advance(self, count: int) -> None:
        self.count = count
        self.counter.fill_(count)

    # torch.compile would specialise on the host-side step count and recompile at every statistics step
    # (measured: 10 s per step); kept eager, so a compiled quantized step runs like an eager one.
    @torch.compiler.disable
    def threshold(self, x: torch.Tensor) -> torch.Tensor:
        """Per-seed clipping threshold [S] for input x [S, ...] (advances the statistics in training)."""
        if self.training and self.count < self.collect_steps:
            stats = scalar_clamp_min_ste(seed_abs_percentile(x, self.percentile) + 0.0 * self.value, SCALE_MIN)
            with torch.no_grad():
                if self.count == 0:
                    self.buffer.mul_(stats)
                else:
                    self.buffer.mul_(1 - self.momentum).add_(self.momentum * stats)
            self._advance(self.count + 1)
            return stats
        if self.training and self.count == self.collect_steps:
            with torch.no_grad():
                self.buffer.abs_()
                self.value.mul_(self.buffer)
            self._advance(self.collect_steps + 1)
        if not self.training and self.count <= self.collect_steps:
            return scalar_clamp_min_ste(self.buffer.abs(), SCALE_MIN)
        return scalar_clamp_min_ste(self.value.abs(), SCALE_MIN)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Quantized x and its scale [S, 1, ..., 1]."""
        low, high, divisor = ((-2 ** (self.bits - 1), 2 ** (self.bits - 1) - 1, 2 ** (self.bits - 1)) if self.signed
                              else (0, 2 ** self.bits - 1, 2 ** self.bits - 1))
        scale = (self.threshold(x) / divisor).view(-1, *[1] * (x.dim() - 1))
        return torch.clamp(round_ste(x / scale), low, high) * scale, scale

    def deployed_threshold(self) -> torch.Tensor:
        """The threshold an exported unit uses (eval mode), per seed."""
        with torch.no_grad():
            return (self.buffer if self.count <= self.collect_steps else self.value).abs().clamp_min(SCALE_MIN)


@register("quantized")
class QuantizedLayer(FFLayer):
    Options = QuantizedOptions

    def __init__(self, index, in_features, out_features, seeds, model, options: QuantizedOptions, generators,
                 collect_stats_steps: int = 300):
        super().__init__(index, in_features, out_features, seeds, model, options, generators)
        self.collect_stats_steps = collect_stats_steps
        self.weight = nn.Parameter(seed_normal((in_features, out_features), init_std(out_features), generators))
        self.bias = nn.Parameter(torch.zeros(seeds, 1, out_features))
        steps = options.stats_steps(collect_stats_steps)
        self.input_quant = SeedActQuant(seeds, options.input_bits, steps)
        self.act_quant = SeedActQuant(seeds, options.act_bits, steps)

    @classmethod
    def values_per_unit(cls, options: QuantizedOptions) -> int:
        # More than the 4 tensors per quantizer: stacked quantized seeds stop paying sooner than their memory
        # says (per-seed statistics); 16 matches the measured crossover (benchmarks/results, seed_batching).
        return 16

    @classmethod
    def describe(cls, options: QuantizedOptions) -> dict:
        return {"weight_bits": options.weight_bits, "act_bits": options.act_bits, "steps": None,
                "label": f"{options.weight_bits}/{options.act_bits}"}

    out_dim = 2  # the output-unit dimension of `weight` ([S, D, U]): per-channel scales run along it

    def binary_scale(self) -> torch.Tensor:
        """The constant scale of binary weights, per seed (SignedBinaryWeightPerTensorConst)."""
        return self.weight.new_full((self.seeds,), init_std(self.out_features))

    def weight_scale(self) -> torch.Tensor:
        """Int8WeightPerTensorFloat / PerChannelFloat: abs-max / (2^(b-1) - 1), narrow range; per seed (and
        per output unit), shaped to broadcast against `weight`."""
        w = self.weight
        if self.options.weight_bits == 1:
            return self.binary_scale().view(-1, *[1] * (w.dim() - 1))
        dims = tuple(d for d in range(1, w.dim()) if self.options.scaling == "tensor" or d != self.out_dim)
        amax = scalar_clamp_min_ste(w.abs().amax(dim=dims, keepdim=True), SCALE_MIN)
        return amax / (2 ** (self.options.weight_bits - 1) - 1)

    def int_weight(self, scale: torch.Tensor) -> torch.Tensor:
        """Integer weights (straight-through rounding and clamp), shaped like `weight`."""
        if self.options.weight_bits == 1:
            with torch.no_grad():  # Brevitas's ClampedBinaryQuant clamps the latent weights in place
                self.weight.copy_(torch.maximum(torch.minimum(self.weight, scale), -scale))
            return binary_sign_ste(self.weight)
        top = 2 ** (self.options.weight_bits - 1) - 1
        return scalar_clamp_ste(round_ste(self.weight / scale), -float(top), float(top))  # bounds stay host scalars

    def forward(self, x: torch.Tensor) -> LayerOutput:
        x_q, input_scale = self.input_quant(normalize(x, self.norm))
        w_scale = self.weight_scale()
        w_q = self.int_weight(w_scale) * w_scale
        bias_scale = input_scale * w_scale  # Int32Bias: the accumulator's scale
        b_q = torch.clamp(round_ste(self.bias / bias_scale), -2 ** 31, 2 ** 31 - 1) * bias_scale
        h, _ = self.act_quant(torch.relu(torch.baddbmm(b_q, x_q, w_q)))
        return LayerOutput(act=h, out=h)

    def weight_bits(self) -> int:
        return self.options.weight_bits

    @torch.no_grad()
    def weight_levels(self) -> torch.Tensor:
        """Distinct integer weight levels in use, per seed (largest over scale groups for per-channel): one
        histogram over all seeds and groups on the device, no per-group loop and no host read."""
        ints = self.int_weight(self.weight_scale())
        groups = ints.transpose(1, self.out_dim).flatten(2)  # [S, outputs, rest]
        if self.options.scaling == "tensor":
            groups = groups.flatten(1).unsqueeze(1)
        top = 1 if self.options.weight_bits == 1 else 2 ** (self.options.weight_bits - 1) - 1
        bins = (groups + top).long().clamp_(0, 2 * top)  # levels -top..top as bins 0..2 top (binary: bins 0, 2)
        s, g = bins.shape[:2]
        counts = torch.zeros(s, g, 2 * top + 1, device=bins.device).scatter_add_(
            2, bins, torch.ones_like(bins, dtype=torch.float32))
        return (counts > 0).sum(-1).amax(-1).float()

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

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Models saved before quantized layers were seed-batched hold one Brevitas unit per seed: restack them."""
        old = f"{prefix}units_per_seed."
        if any(key.startswith(old) for key in state_dict):
            units = [{k[len(f"{old}{s}."):]: state_dict.pop(k) for k in list(state_dict) if k.startswith(f"{old}{s}.")}
                     for s in range(self.seeds)]
            state_dict.update({prefix + k: v for k, v in self.restack_units(units).items()})
            act = "act_quant.fused_activation_quant_proxy.tensor_quant.scaling_impl.value"
            for name, key in (("input_quant", f"input_quant.{act}"), ("act_quant", f"act.{act}")):
                values = [u.get(key) for u in units]
                trained = all(v is not None for v in values)
                state_dict[f"{prefix}{name}.value"] = torch.stack(values).view(-1) if trained else torch.ones(self.seeds)
                state_dict[f"{prefix}{name}.buffer"] = torch.ones(self.seeds)
                state_dict[f"{prefix}{name}.counter"] = torch.tensor(self.collect_stats_steps + 1 if trained else 0)
                # this format predates running thresholds: its units learned theirs
                state_dict[f"{prefix}{name}.stats_steps"] = torch.tensor(self.collect_stats_steps)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def restack_units(self, units: list[dict]) -> dict:
        """This layer's weights from per-seed Brevitas unit state dicts."""
        return {"weight": torch.stack([u["linear.weight"].t() for u in units]),
                "bias": torch.stack([u["linear.bias"].view(1, -1) for u in units])}

    def unit_state(self, seed: int) -> dict:
        """One seed's weights as a Brevitas unit's state dict entries."""
        return {"linear.weight": self.weight[seed].detach().t(), "linear.bias": self.bias[seed].detach().view(-1)}

    def new_unit(self, seed: int) -> nn.Module:
        return QuantUnit(self.in_features, self.out_features, self.options, self.weight[seed].detach())

    # ---- export ----
    def export_unit(self, seed: int) -> nn.Module:
        """This seed's layer as Brevitas modules holding the learned weights and clipping thresholds."""
        unit = self.new_unit(seed)
        act = "act_quant.fused_activation_quant_proxy.tensor_quant.scaling_impl.value"
        unit.load_state_dict({**self.unit_state(seed), f"input_quant.{act}": self.input_quant.deployed_threshold()[seed],
                              f"act.{act}": self.act_quant.deployed_threshold()[seed]})
        return unit.eval()

    def export_module(self, seed: int) -> nn.Module:
        if self.options.weight_bits == 1:
            raise FFHWError("binary weights cannot be exported to QCDQ ONNX (onnxruntime has no 1-bit kernels); "
                            "train with weight_bits >= 2 to export")
        return QuantExport(self.export_unit(seed), self.norm)

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

    def output_step(self, seed: int = 0) -> float:
        """One seed's output quantisation step (parity is judged in these units)."""
        return float(self.act_quant.deployed_threshold()[seed] / (2 ** self.options.act_bits - 1))

    def parity(self, reference: torch.Tensor, exported: torch.Tensor, seed: int = 0) -> dict:
        """Compared in units of the output quantisation step: integer kernels may round one step apart."""
        err = (reference - exported).abs().max().item() / self.output_step(seed)
        return {"metric": "max abs error in output quantisation steps", "value": err, "tolerance": 1.0,
                "ok": err <= 1.0 + 1e-3}
