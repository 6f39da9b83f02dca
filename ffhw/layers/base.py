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
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..config import ModelConfig, check_ranges, coerce
from ..encode import LabelPatterns
from ..errors import ConfigError, ExportError

LAYER_TYPES: dict[str, type["FFLayer"]] = {}  # fully connected layers, by type name
CONV_TYPES: dict[str, type["FFLayer"]] = {}  # conv blocks of the same types


def register(name: str, kind: str = "fc"):
    def deco(cls):
        cls.type_name = name
        (CONV_TYPES if kind == "conv" else LAYER_TYPES)[name] = cls
        return cls
    return deco


@dataclass
class NirPart:
    """A layer's NIR nodes and edges (names local to the layer); `entry` receives the layer's input,
    `exit` emits its output spikes."""
    nodes: dict
    edges: list[tuple[str, str]]
    entry: str
    exit: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    # how the input reaches the graph at each step: "repeat" (the analog input, normalised with `input_norm`,
    # every step), "bernoulli" (spikes drawn with the analog input as probability) or "spikes" (as received)
    input_encoding: str = "spikes"
    input_norm: str = "none"


@dataclass
class LayerOutput:
    act: torch.Tensor | None
    out: torch.Tensor | None
    # Reductions a fused evaluation kernel computed in the same pass (None: computed from act and out):
    # per-sample sums of squares of act (over its act_features values) and of out [S, M], and each seed's
    # share of non-zero values of out [S]. act and out are None where the caller asked for reductions only.
    act_sum_sq: torch.Tensor | None = None
    act_features: int = 0
    out_sum_sq: torch.Tensor | None = None
    out_nonzero: torch.Tensor | None = None
    unit_active: torch.Tensor | None = None  # [S, U]: rows each unit of act was active in


@dataclass
class NoOptions:
    pass


class FFLayer(nn.Module):
    type_name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    # Per-seed generators for any sampling a layer does (e.g. rate encoding), set by the trainer at the start
    # of every epoch from (seed, layer, epoch): seed-batched and separate runs draw the same numbers per seed.
    # None (outside training): the global RNG.
    noise_generators: list[torch.Generator] | None = None
    # Set by a compiling trainer (FFNet.fuse_evaluation): without gradient, a type that has fused kernels
    # (layers/fused.py) uses them and fills LayerOutput's reductions.
    fused_evaluation: bool = False

    def __init__(self, index: int, in_features: int, out_features: int, seeds: int,
                 model: ModelConfig, options: Any, generators: list[torch.Generator]):
        super().__init__()
        self.index, self.in_features, self.out_features, self.seeds = index, in_features, out_features, seeds
        self.norm, self.straight_through = model.norm, model.straight_through
        self.options = options

    @classmethod
    def resolve_options(cls, values: dict) -> Any:
        known = {f.name for f in dataclasses.fields(cls.Options)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown option(s) {', '.join(unknown)} for {cls.type_name} layers; "
                              f"known: {', '.join(sorted(known)) or 'none'}")
        defaults = cls.Options()
        values = {k: coerce(f"model.layer.{k}", getattr(defaults, k), v) for k, v in values.items()}
        try:
            options = cls.Options(**values)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{cls.type_name} layer options: {exc}") from None
        ranges = getattr(cls.Options, "RANGES", {})  # the options' own ranges, checked like every config value
        check_ranges(options, {f"model.layer.{k}": r for k, r in ranges.items()}, "model.layer.")
        return options

    # The largest activation tensor of a training step (values, as in `values_per_unit`) up to which
    # torch.compile measured faster than eager for this type on the CPU (benchmarks/train_bench.py
    # --sections compile); train.compile = "auto" compiles below it. 0: not measured faster, never auto.
    compile_max_values: ClassVar[float] = 0.0

    @classmethod
    def values_per_unit(cls, options: Any) -> int:
        """Activity values one unit counts for per sample in a training step (spiking: one per time step),
        which sizes seed-batched steps (and the compile rule); a type may charge more where it measured
        seed batching to stop paying sooner than its memory says."""
        return 1

    @classmethod
    def describe(cls, options: Any) -> dict:
        """How this type's numbers are represented, for reports: weight and activation bits (32: float),
        time steps T (spiking; None otherwise) and a short label. From the options alone, so reports read it
        from saved configs."""
        return {"weight_bits": 32, "act_bits": 32, "steps": None, "label": "32/32"}

    @property
    def units(self) -> int:
        return self.out_features

    def forward(self, x: torch.Tensor) -> LayerOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_labels(self, base: torch.Tensor, patterns: torch.Tensor,
                       neutral: torch.Tensor | None = None) -> tuple[LayerOutput, LayerOutput | None]:
        """The layer on base + patterns[c] for every label c: base [S, N, D], patterns [C, D] -> [S, N*C, ...]
        (all labels of image 0 first), and, given a `neutral` pattern [D], on base + neutral: [S, N, ...].

        This default builds all inputs. Types whose first operation is linear override it to compute the
        image part once per image (see `affine_labels`).
        """
        s, n, d = base.shape
        out = self((base[:, :, None, :] + patterns[None, None]).reshape(s, n * patterns.shape[0], d))
        return out, (self(base + neutral) if neutral is not None else None)

    def forward_label_sets(self, base: torch.Tensor, patterns: LabelPatterns, labels: torch.Tensor,
                           frozen_labels: torch.Tensor | None = None) -> tuple[LayerOutput, LayerOutput | None]:
        """The layer on base[:, n] + pattern[labels[:, k, n]] for K label sets (training: true and wrong
        labels): base [S, N, D], labels [S, K, N] -> rows [S, K*N], set after set. With
        `frozen_labels` [S, N], also the layer on those labels, without gradient (the linear head's
        neutral pass): [S, N] rows.

        This default builds the inputs. Types whose first operation is linear override it to project each
        image once for all its sets (see `affine_label_sets`).
        """
        s, k, n = labels.shape
        dense = patterns.dense()
        out = self((base.unsqueeze(1) + dense[labels]).reshape(s, k * n, base.shape[-1]))
        frozen = None
        if frozen_labels is not None:
            with torch.no_grad():
                frozen = self(base + dense[frozen_labels])
        return out, frozen

    def runs_fused(self) -> bool:
        """Whether this call should use fused evaluation kernels: asked for, no gradient, not being traced."""
        return self.fused_evaluation and not torch.is_grad_enabled() and not torch.compiler.is_compiling()

    def evaluate(self, inp: LayerOutput, keep_output: bool = True) -> LayerOutput:
        """The layer in evaluation (no gradient) on the previous layer's output. `keep_output=False`: the
        caller reads only goodness and statistics (the last layer), so a type with fused kernels may skip
        writing its activities."""
        return self(inp.out)

    def hardware_stats(self, out: LayerOutput) -> dict[str, torch.Tensor]:
        """Statistics of one evaluation batch: per-seed [S] means, averaged over batches by the evaluation,
        and `unit_activity` [S, U] (see `unit_activity`), summed."""
        counts = self.unit_activity(out)
        if out.out_nonzero is not None:
            nonzero = out.out_nonzero
        elif out.out is out.act:  # the outputs are the activities: their count is the units' counts summed
            nonzero = counts.sum(-1) / (out.act.shape[1] * counts.shape[-1])
        else:
            nonzero = nonzero_fraction(out.out.flatten(1))
        return {"sparsity": 1.0 - nonzero, "unit_activity": counts}

    def needs_calibration(self) -> bool:
        """Whether this layer's initialisation depends on data (see `calibrate`)."""
        return False

    @torch.no_grad()
    def calibrate(self, run, inp: torch.Tensor) -> None:
        """Data-dependent initialisation before training: `run(inp)` gives this layer's output on a fixed
        calibration batch of its real inputs. Default: nothing (the initialisation is data-independent)."""

    def unit_activity(self, out: LayerOutput) -> torch.Tensor:
        """How many of this batch's rows each unit was active in (non-zero activity or firing rate), [S, U]:
        summed over batches, it shows dead units (never active) and always-on ones (active for every input)."""
        if out.unit_active is not None:  # counted by a fused evaluation kernel
            return out.unit_active
        return (out.act.flatten(2) != 0).sum(1, dtype=torch.float32)

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

    def export_input(self, x: torch.Tensor) -> torch.Tensor:
        """What a deployment feeds this exported layer, given its encoded analog input [N, D] (where it cannot
        take the raw image and label, e.g. seeded rate-encoded spike trains)."""
        return x

    def export_meta(self) -> dict:
        """Facts a deployment needs beyond shapes (bit widths, T, neuron constants...)."""
        return {}

    def export_nir(self, seed: int, dt: float) -> "NirPart":
        """One seed's layer as NIR nodes for neuromorphic toolchains (see ffhw/deploy_nir.py)."""
        raise ExportError(f"{self.type_name} layers have no NIR form (NIR describes spiking neurons); deploy them "
                          f"with the ONNX bundle, or train with --layer-type spiking")

    def nir_input(self, x: torch.Tensor) -> torch.Tensor:
        """What this layer's NIR graph receives at each of its time steps, [N, T, D], given the input its
        export module takes (layer 0: the label-embedded image)."""
        raise ExportError(f"{self.type_name} layers have no NIR form")

    def export_onnx(self, module: nn.Module, args: tuple, path, input_names, output_names, dynamic_axes,
                    opset: int) -> str:
        """Write `module` to ONNX at `path`; returns the exporter's name. Float types use torch's exporter."""
        torch.onnx.export(module, args, str(path), input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes, opset_version=opset, dynamo=False)
        return f"torch.onnx (TorchScript) {torch.__version__}"

    def export_qonnx(self, module: nn.Module, args: tuple, path, input_names, output_names, dynamic_axes) -> str | None:
        """Write a QONNX model (for FINN) where the type has one; returns the exporter's name, or None."""
        return None

    def parity(self, reference: torch.Tensor, exported: torch.Tensor, seed: int = 0) -> dict:
        """Compare this layer's torch output with onnxruntime's; float types: relative error 1e-4."""
        err = ((reference - exported).abs() / (reference.abs().max() + 1e-12)).max().item()
        return {"metric": "max abs error / max |output|", "value": err, "tolerance": 1e-4, "ok": err <= 1e-4}


def nonzero_fraction(x: torch.Tensor, chunk: int = 1 << 18) -> torch.Tensor:
    """Share of non-zero values per row of x [S, M] -> [S].

    A float comparison into a buffer and a sum, both vectorised, where a bool mask, count_nonzero or
    vector_norm(ord=0) run 3-7x slower on the CPU; taken in chunks of `chunk` values so that the buffer
    stays in cache instead of being written to and read back from memory (4x faster on evaluation-sized
    activities, measured)."""
    s, m = x.shape
    if x.device.type != "cpu":  # a GPU has no such cache to keep it in, and each chunk is a kernel launch
        chunk = s * m
    width = max(1, min(m, chunk // max(s, 1)))
    buffer = x.new_empty(s, width)
    count = x.new_zeros(s)
    for start in range(0, m, width):
        part = x[:, start:start + width]
        count += torch.ne(part, 0, out=buffer[:, :part.shape[1]]).sum(-1)
    return count / m
