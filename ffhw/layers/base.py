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
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig, check_ranges, coerce
from ..encode import LabelPatterns
from ..errors import ConfigError

LAYER_TYPES: dict[str, type["FFLayer"]] = {}  # fully connected layers, by type name
CONV_TYPES: dict[str, type["FFLayer"]] = {}  # conv blocks of the same types


def register(name: str, kind: str = "fc"):
    def deco(cls):
        cls.type_name = name
        (CONV_TYPES if kind == "conv" else LAYER_TYPES)[name] = cls
        return cls
    return deco


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
        """Per-seed [S] statistics of one evaluation batch; averaged over batches by the trainer."""
        nonzero = out.out_nonzero if out.out_nonzero is not None else nonzero_fraction(out.out.flatten(1))
        return {"sparsity": 1.0 - nonzero}

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

    def export_qonnx(self, module: nn.Module, args: tuple, path, input_names, output_names, dynamic_axes) -> str | None:
        """Write a QONNX model (for FINN) where the type has one; returns the exporter's name, or None."""
        return None

    def parity(self, reference: torch.Tensor, exported: torch.Tensor) -> dict:
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
    return x * norm_scale(torch.linalg.vector_norm(x, dim=-1, keepdim=True).square(), x.shape[-1], kind)


def affine(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, norm: str) -> torch.Tensor:
    """norm(x) @ W + b with a seed dimension: x [S, N, D], W [S, D, U], b [S, 1, U].

    The per-sample normalisation factor is applied to the product, b + s * (x @ W), in one addcmul: that
    skips writing the normalised input and broadcasting the bias into the output (two memory passes;
    measured ~10% of an evaluation pass on the CPU). Equal to the textbook form up to float rounding.
    """
    if norm == "none":
        return torch.baddbmm(bias, x, weight)
    z, scale = affine_parts(x, weight, norm)
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad or bias.requires_grad):
        return torch.addcmul(bias, z, scale)
    return torch.addcmul(bias, z, scale, out=z)  # without autograd: in place, while z is still in cache


def affine_parts(x: torch.Tensor, weight: torch.Tensor, norm: str,
                 x_sum_sq: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """What `affine` combines: the product x @ W [S, N, U] and the normalisation factors [S, N, 1];
    `x_sum_sq` [S, N]: the rows' sums of squares where already known."""
    sum_sq = torch.linalg.vector_norm(x, dim=-1).square() if x_sum_sq is None else x_sum_sq
    return torch.bmm(x, weight), norm_scale(sum_sq.unsqueeze(-1), x.shape[-1], norm)


def affine_labels(base: torch.Tensor, patterns: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                  norm: str, neutral: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`affine` of base + patterns[c] for all labels c, with one matmul per image instead of C, and of
    base + neutral (for the linear head) from the same image product when a `neutral` pattern is given.

    The label positions are disjoint from the image content, so ||x_c||^2 = ||base||^2 + ||p_c||^2 and
    W x_c = W base + W p_c: the normalisation factor and the projection split exactly.
    base [S, N, D], patterns [C, D], neutral [D] -> [S, N*C, U] and [S, N, U] (or None)
    """
    s, n = base.shape[:2]
    c = patterns.shape[0]
    z_base, z_label, scale = affine_label_parts(base, patterns, weight, norm, neutral)
    tracked = torch.is_grad_enabled() and (base.requires_grad or weight.requires_grad or bias.requires_grad)

    def finish(z, scale):  # bias + scale * z, in place where no gradient is recorded
        return torch.addcmul(bias.unsqueeze(2), z, scale) if tracked else torch.addcmul(bias.unsqueeze(2), z, scale, out=z)

    z = finish(z_base[:, :, None, :] + z_label[:, None, :c, :], scale[:, :, :c]).reshape(s, n * c, -1)
    z_neutral = None
    if neutral is not None:
        z_neutral = finish((z_base + z_label[:, c:])[:, :, None], scale[:, :, c:])[:, :, 0]
    return z, z_neutral


def affine_label_parts(base: torch.Tensor, patterns: torch.Tensor, weight: torch.Tensor, norm: str,
                       neutral: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What `affine_labels` combines: image products [S, N, U], label products [S, C(+1), U] (the neutral
    pattern last) and normalisation factors [S, N, C(+1), 1]."""
    if neutral is not None:
        patterns = torch.cat([patterns, neutral[None]])
    z_base = torch.bmm(base, weight)  # [S, N, U]
    z_label = torch.matmul(patterns, weight)  # [S, C(+1), U]
    sum_sq = (torch.linalg.vector_norm(base, dim=-1, keepdim=True).square()
              + torch.linalg.vector_norm(patterns, dim=-1).square())  # [S, N, C(+1)]
    return z_base, z_label, norm_scale(sum_sq, base.shape[-1], norm).unsqueeze(-1)


class LabelSetsAffine(torch.autograd.Function):
    """The pre-activations of layer 0 for K label sets, each image projected once (see `affine_label_sets`).

    A hand-written backward keeps the weight gradient one dense product: base^T @ (the sets' gradients
    summed), with the label part, which touches only the few label positions, added to those rows in place.
    Plain autograd would form a second dense [D, U] gradient for the label part and add the two.
    """

    @staticmethod
    def forward(ctx, base, weight, bias, labels, patterns, frozen_labels, norm):
        s, k, n = labels.shape
        dim, p = base.shape[-1], patterns.values.shape[0]
        z_pattern = torch.matmul(patterns.values.to(weight.dtype), weight.index_select(1, patterns.positions))  # [S, P, U]
        z_base = torch.bmm(base, weight)  # [S, N, U]
        base_sq = torch.linalg.vector_norm(base, dim=-1).square()  # [S, N]
        pattern_sq = torch.linalg.vector_norm(patterns.values, dim=-1).square()  # [P]

        def rows(labels):  # [S, K, N] -> b + scale * (z_base + z_pattern[label]): [S, K*N, U], onehot, scale
            onehot = F.one_hot(labels.reshape(s, -1), p).to(z_pattern.dtype)
            z = torch.bmm(onehot, z_pattern)
            z.view(s, labels.shape[1], n, -1).add_(z_base.unsqueeze(1))
            if norm == "none":
                return z.add_(bias), onehot, None
            scale = norm_scale(base_sq.unsqueeze(1) + pattern_sq[labels], dim, norm).reshape(s, -1, 1)
            return torch.addcmul(bias, z, scale, out=z), onehot, scale  # in place: z is ours

        z, onehot, scale = rows(labels)
        frozen = rows(frozen_labels.unsqueeze(1))[0] if frozen_labels is not None else z.new_zeros(())
        ctx.mark_non_differentiable(frozen)
        ctx.save_for_backward(base, onehot, scale)
        ctx.patterns, ctx.sets, ctx.dtypes = patterns, k, (weight.dtype, bias.dtype)
        return z, frozen

    @staticmethod
    def backward(ctx, grad_z, _):
        base, onehot, scale = ctx.saved_tensors
        s, rows, u = grad_z.shape
        dtype = onehot.dtype  # the forward's product dtype (bf16/fp16 under autocast)
        grad_bias = grad_z.sum(1, keepdim=True)
        g = (grad_z if scale is None else grad_z * scale).to(dtype)  # gradient of the unscaled product
        image_grad = g.view(s, ctx.sets, rows // ctx.sets, u).sum(1)  # [S, N, U]: one image, all its sets
        grad_weight = torch.bmm(base.transpose(1, 2).to(dtype), image_grad)
        pattern_grad = torch.bmm(onehot.transpose(1, 2), g)  # [S, P, U]
        label_part = torch.matmul(ctx.patterns.values.t().to(dtype), pattern_grad)  # [S, m, U]
        grad_weight.index_add_(1, ctx.patterns.positions, label_part)
        weight_dtype, bias_dtype = ctx.dtypes
        return None, grad_weight.to(weight_dtype), grad_bias.to(bias_dtype), None, None, None, None


def affine_label_sets(base: torch.Tensor, patterns: LabelPatterns, labels: torch.Tensor, weight: torch.Tensor,
                      bias: torch.Tensor, norm: str, frozen_labels: torch.Tensor | None = None):
    """`affine` of base[:, n] + pattern[labels[:, k, n]] for K label sets, each image projected once.

    base [S, N, D], labels [S, K, N] -> [S, K*N, U] (set after set); with `frozen_labels` [S, N] also those
    rows [S, N, U], without gradient. As in `affine_labels`, the image and label parts of the input are
    disjoint, so the product and the sum of squares split exactly. A training step with a true and a wrong
    label per image (and the neutral label for the head) then needs one image product instead of three,
    and the weight gradient one instead of two. The label part (one row of patterns @ W per row) is a
    product with the one-hot labels: its backward is a small product too, where indexing would scatter-add
    row by row.
    """
    z, frozen = LabelSetsAffine.apply(base, weight, bias, labels, patterns, frozen_labels, norm)
    return z, (frozen if frozen_labels is not None else None)


class StraightThroughReLU(torch.autograd.Function):
    """ReLU forward, identity gradient backward (loeweX's ReLU_full_grad): dead units keep learning.
    In place: the input is a fresh pre-activation that nothing else reads (see `relu`)."""

    @staticmethod
    def forward(ctx, z):
        ctx.mark_dirty(z)
        return z.clamp_min_(0)

    @staticmethod
    def backward(ctx, grad):
        return grad


def relu(z: torch.Tensor, straight_through: bool) -> torch.Tensor:
    """ReLU of a freshly computed pre-activation, in place (one memory pass less; `z` must not be reused)."""
    if not straight_through:
        return torch.relu_(z)
    if torch.compiler.is_compiling():  # torch.compile cannot trace mark_dirty; it fuses this form anyway
        return z + (torch.relu(z) - z).detach()
    return StraightThroughReLU.apply(z)


def init_std(out_features: int) -> float:
    return 1.0 / math.sqrt(out_features)  # loeweX: N(0, 1/sqrt(out_features))


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
        if self.block_norm == "batch":
            self.bn = nn.BatchNorm2d(seeds * c)
        elif self.block_norm == "layer":  # over C, H, W per sample, with an affine map per seed
            self.ln_weight = nn.Parameter(torch.ones(seeds, 1, c, h, w))
            self.ln_bias = nn.Parameter(torch.zeros(seeds, 1, c, h, w))

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

    def conv(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Seed-grouped 3x3 convolution: x [S, N, C, H, W], weight [S, O, C, 3, 3] -> [S, N, O, H, W]."""
        s, o = weight.shape[:2]
        y = F.conv2d(self.grouped(x), weight.reshape(s * o, *weight.shape[2:]), padding=1, groups=s)
        return self.ungrouped(y, s)

    def maybe_pool(self, y: torch.Tensor) -> torch.Tensor:
        if not self.pool:
            return y
        lead = y.shape[:-3]
        return F.max_pool2d(y.reshape(-1, *y.shape[-3:]), 2).reshape(*lead, *self.out_shape)

    def forward_labels(self, base, patterns, neutral=None):
        raise TypeError("conv blocks take the label as an input channel: use LabelChannel.all_labels")

    def block_norm_module(self, seed: int) -> nn.Module:
        """This seed's block-input normaliser as a plain eval-mode module, for export."""
        c, h, w = self.in_shape
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
