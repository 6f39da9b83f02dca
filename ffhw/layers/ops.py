"""Building blocks shared by the fully connected layer types: seed-stacked initialisation, input
normalisation, the affine map and its label-splitting forms (layer 0 projects each image once for all its
labels), and the straight-through ReLU."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..encode import LabelPatterns


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
    skips writing the normalised input and broadcasting the bias into the output (two memory passes).
    Equal to the textbook form up to float rounding.
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


def linear_module(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    """One seed's weight [D, U] and bias as an nn.Linear, for export."""
    linear = nn.Linear(weight.shape[0], weight.shape[1])
    with torch.no_grad():
        linear.weight.copy_(weight.t())
        linear.bias.copy_(bias.reshape(-1))
    return linear
