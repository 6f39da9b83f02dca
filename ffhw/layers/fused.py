"""Fused evaluation epilogues for layers whose activation is a ReLU of an affine map (torch.compile'd).

Evaluation runs every layer on all labels of each image, so after each matrix product the CPU makes
several passes over a [S, N*C, U] tensor: bias and normalisation factor, ReLU, the goodness's sum of
squares, the count of non-zero outputs for the sparsity statistic. Each pass moves ~25 MB per evaluation
batch and together they took ~14% of an evaluation (3x1000, measured with the profiler). One compiled
kernel does them in one pass and, for the last layer, whose activities nobody reads, skips writing them.

Used only while the Trainer compiles (train.compile resolved to on): compiling costs seconds per shape,
which pays off for the long runs that `auto` compiles, not for short runs or the tests.
"""
from __future__ import annotations

import torch

from .base import LayerOutput


def _relu_reductions(z: torch.Tensor, bias: torch.Tensor, scale: torch.Tensor, keep_output: bool):
    """relu(bias + scale * z) -> (activities or None, per-row sum of squares, per-unit count of active rows)."""
    h = torch.relu(torch.addcmul(bias, z, scale))
    return (h if keep_output else None), (h * h).sum(-1), (h > 0).to(torch.float32).sum(1)


def _label_relu_reductions(z_base: torch.Tensor, z_label: torch.Tensor, bias: torch.Tensor, scale: torch.Tensor):
    """Layer 0 over all labels: relu(bias + scale * (z_base[n] + z_label[c])) as rows [S, N*C, U], with the
    same reductions; the broadcast sum is never written out."""
    s, n, u = z_base.shape
    # rows [S, N*C, U] before any value is stored: with the [S, N, C, U] nest inductor stores h in one loop
    # and reads it back for the sums in a second one
    z = (z_base[:, :, None, :] + z_label[:, None, :, :]).reshape(s, -1, u)
    h = torch.relu(torch.addcmul(bias, z, scale.reshape(s, -1, 1)))
    return h, (h * h).sum(-1), (h > 0).to(torch.float32).sum(1)


_compiled: dict[str, object] = {}


def _kernel(fn):
    if fn.__name__ not in _compiled:
        _compiled[fn.__name__] = torch.compile(fn, dynamic=False)
    return _compiled[fn.__name__]


def _rows_dynamic(*tensors: torch.Tensor) -> None:
    # Evaluation batches differ only in their number of rows (the last batch, the neutral pass): one kernel
    # for all of them instead of one compilation per row count.
    for t in tensors:
        torch._dynamo.maybe_mark_dynamic(t, 1)


def _output(h, sum_sq, active, units: int) -> LayerOutput:
    return LayerOutput(act=h, out=h, act_sum_sq=sum_sq, act_features=units, out_sum_sq=sum_sq,
                       out_nonzero=active.sum(-1) / (sum_sq.shape[-1] * units), unit_active=active)


def relu_affine(z: torch.Tensor, bias: torch.Tensor, scale: torch.Tensor, keep_output: bool = True) -> LayerOutput:
    """relu(bias + scale * z) for z [S, M, U] (a product x @ W), bias [S, 1, U], scale [S, M, 1]."""
    _rows_dynamic(z, scale)
    return _output(*_kernel(_relu_reductions)(z, bias, scale, keep_output), z.shape[-1])


def relu_affine_labels(z_base: torch.Tensor, z_label: torch.Tensor, bias: torch.Tensor,
                       scale: torch.Tensor) -> LayerOutput:
    """Layer 0 on every label: z_base [S, N, U], z_label [S, C, U], scale [S, N, C, 1] -> rows [S, N*C, U]."""
    _rows_dynamic(z_base, scale)
    return _output(*_kernel(_label_relu_reductions)(z_base, z_label, bias, scale), z_base.shape[-1])
