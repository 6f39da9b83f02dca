"""The one layer interface every FF layer type implements.

A layer holds S independent copies (one per seed: a leading seed dimension on every weight, as in an
ensemble Linear) and maps its input [S, N, ...] to a `LayerOutput`:

- `act`: what goodness reads ([S, N, units]): activities, or firing rates for spiking layers;
- `out`: what the next layer receives: activities, or spike trains [S, N, T, units].

The trainer detaches `out` between layers, computes goodness and losses from `act`, and never asks what
type a layer is. A layer type is one module in this package that subclasses `FFLayer`, declares its
options dataclass and registers itself with `@register("name")`.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..config import ModelConfig
from ..errors import ConfigError

LAYER_TYPES: dict[str, type["FFLayer"]] = {}


def register(name: str):
    def deco(cls):
        cls.type_name = name
        LAYER_TYPES[name] = cls
        return cls
    return deco


@dataclass
class LayerOutput:
    act: torch.Tensor
    out: torch.Tensor


@dataclass
class NoOptions:
    pass


class FFLayer(nn.Module):
    type_name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions

    def __init__(self, index: int, in_features: int, out_features: int, seeds: int,
                 model: ModelConfig, options: Any, generators: list[torch.Generator]):
        super().__init__()
        self.index, self.in_features, self.out_features, self.seeds = index, in_features, out_features, seeds
        self.norm, self.straight_through = model.norm, model.straight_through
        self.options = options
        # Running mean activity of each unit on positives, for peer normalisation (loeweX init 0.5).
        self.register_buffer("peer_running", torch.full((seeds, out_features), 0.5))

    @classmethod
    def resolve_options(cls, values: dict) -> Any:
        known = {f.name for f in dataclasses.fields(cls.Options)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown option(s) {', '.join(unknown)} for {cls.type_name} layers; "
                              f"known: {', '.join(sorted(known)) or 'none'}")
        try:
            return cls.Options(**values)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{cls.type_name} layer options: {exc}") from None

    @property
    def units(self) -> int:
        return self.out_features

    def forward(self, x: torch.Tensor) -> LayerOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_labels(self, base: torch.Tensor, patterns: torch.Tensor) -> LayerOutput:
        """The layer on base + patterns[c] for every label c: base [S, N, D], patterns [C, D] -> [S, N*C, ...].

        This default builds all N*C inputs. Types whose first operation is linear override it to compute
        the image part once per image (see `affine_labels`).
        """
        s, n, d = base.shape
        x = (base[:, :, None, :] + patterns[None, None]).reshape(s, n * patterns.shape[0], d)
        return self(x)

    def hardware_stats(self, out: LayerOutput) -> dict[str, torch.Tensor]:
        """Per-seed [S] statistics of one evaluation batch; averaged over batches by the trainer."""
        return {"sparsity": (out.out == 0).flatten(1).float().mean(-1)}

    def static_stats(self) -> dict[str, torch.Tensor | float]:
        """Per-seed statistics of the parameters (bit widths, weight levels); recorded once per epoch."""
        return {}

    def weight_bits(self) -> int:
        """Bits per stored weight once deployed (float32 unless the type says otherwise)."""
        return 32

    def parameters_per_seed(self) -> int:
        """Trainable numbers of one seed's copy (works for seed-stacked weights and per-seed modules)."""
        return sum(p.numel() for p in self.parameters()) // self.seeds

    def deployed_weight_bytes(self) -> float:
        """Bytes of one seed's deployed weights and biases (and scales, for quantized types)."""
        return self.parameters_per_seed() * 4.0

    def op_counts(self, input_density: float) -> dict:
        """Operations of one pass of one sample (see ffhw/hardware.py); dense fp32 by default.
        `input_density` is the measured share of non-zero inputs."""
        macs = self.in_features * self.out_features
        return {"macs": macs, "mac_kind": "fp32_mac", "nonzero_macs": macs * input_density, "acs": 0.0,
                "neuron_updates": 0, "bops": None}

    # ---- export (see ffhw/export.py): each type says how its trained layer becomes a graph ----
    def export_module(self, seed: int) -> nn.Module:
        """A plain module for one seed: the layer's deployed input [N, ...] -> (act, out), no seed dim."""
        raise NotImplementedError(f"{self.type_name} layers cannot be exported yet")

    def takes_label_input(self) -> bool:
        """Whether layer 0's exported graph can take the raw image and label (else the caller encodes)."""
        return True

    def export_meta(self) -> dict:
        """Facts a deployment needs beyond shapes (bit widths, T, neuron constants...)."""
        return {}

    def export_onnx(self, module: nn.Module, args: tuple, path, input_names, output_names, dynamic_axes,
                    opset: int) -> str:
        """Write `module` to ONNX at `path`; returns the exporter's name. Float types use torch's exporter."""
        torch.onnx.export(module, args, str(path), input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes, opset_version=opset, dynamo=False)
        return f"torch.onnx (TorchScript) {torch.__version__}"

    def parity(self, reference: torch.Tensor, exported: torch.Tensor) -> dict:
        """Compare this layer's torch output with onnxruntime's; float types: relative error 1e-4."""
        err = ((reference - exported).abs() / (reference.abs().max() + 1e-12)).max().item()
        return {"metric": "max abs error / max |output|", "value": err, "tolerance": 1e-4, "ok": err <= 1e-4}


# ---- building blocks shared by the fully connected layer types ----

def seed_normal(shape: tuple[int, ...], std: float, generators: list[torch.Generator]) -> torch.Tensor:
    """One independent N(0, std^2) draw per seed, stacked on a leading seed dimension."""
    return torch.stack([torch.randn(shape, generator=g) * std for g in generators])


def norm_scale(sum_sq: torch.Tensor, dim: int, kind: str) -> torch.Tensor:
    """Per-sample factor that normalises an input with the given sum of squares (no centring, no affine)."""
    if kind == "rms":
        return 1.0 / (torch.sqrt(sum_sq / dim) + 1e-8)
    if kind == "l2":
        return 1.0 / (torch.sqrt(sum_sq) + 1e-8)
    return torch.ones_like(sum_sq)


def normalize(x: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "none":
        return x
    return x * norm_scale(x.square().sum(-1, keepdim=True), x.shape[-1], kind)


def affine(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, norm: str) -> torch.Tensor:
    """norm(x) @ W + b with a seed dimension: x [S, N, D], W [S, D, U], b [S, 1, U]."""
    return torch.baddbmm(bias, normalize(x, norm), weight)


def affine_labels(base: torch.Tensor, patterns: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                  norm: str) -> torch.Tensor:
    """`affine` of base + patterns[c] for all labels c, with one matmul per image instead of C.

    The label positions are disjoint from the image content, so ||x_c||^2 = ||base||^2 + ||p_c||^2 and
    W x_c = W base + W p_c: the normalisation factor and the projection split exactly.
    base [S, N, D], patterns [C, D] -> [S, N*C, U]
    """
    s, n, d = base.shape
    c = patterns.shape[0]
    z_base = torch.bmm(base, weight)  # [S, N, U]
    z_label = torch.matmul(patterns, weight)  # [S, C, U]
    sum_sq = base.square().sum(-1, keepdim=True) + patterns.square().sum(-1)  # [S, N, C]
    scale = norm_scale(sum_sq, d, norm)
    z = (z_base[:, :, None, :] + z_label[:, None, :, :]) * scale[..., None] + bias[:, :, None, :]
    return z.reshape(s, n * c, -1)


class StraightThroughReLU(torch.autograd.Function):
    """ReLU forward, identity gradient backward (loeweX's ReLU_full_grad): dead units keep learning."""

    @staticmethod
    def forward(ctx, z):
        return z.clamp_min(0)

    @staticmethod
    def backward(ctx, grad):
        return grad


def relu(z: torch.Tensor, straight_through: bool) -> torch.Tensor:
    return StraightThroughReLU.apply(z) if straight_through else torch.relu(z)


def init_std(out_features: int) -> float:
    return 1.0 / math.sqrt(out_features)  # loeweX: N(0, 1/sqrt(out_features))
