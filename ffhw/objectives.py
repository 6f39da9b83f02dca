"""Goodness, the layer-local losses, the binary layer accuracy and peer normalisation.

All functions take a leading seed dimension S: goodness is [S, N], losses and accuracies are [S].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig


def sum_of_squares(x: torch.Tensor) -> torch.Tensor:
    """Squared L2 norm over the last dim, accumulated and returned in at least float32 (one fused pass)."""
    return torch.linalg.vector_norm(x, dim=-1, dtype=torch.promote_types(x.dtype, torch.float32)).square()


class GoodnessStats(torch.autograd.Function):
    """Squared L2 norm of each sample [S, N, F] -> [S, N] and, for peer normalisation, the mean of the
    first `b` samples (the positives) [S, F], with one hand-written backward.

    Forward: one fused reduction (square().sum() would write the squared tensor out first). Backward: one pass, 2 x grad plus, on the positives, the mean's gradient.
    Plain autograd would divide by the norm and mask zero norms (vector_norm's backward), and route the
    mean through a zero-filled slice gradient: five more memory passes over the activities.
    """

    @staticmethod
    def forward(ctx, x, b):
        ctx.save_for_backward(x)
        ctx.b = b
        sum_sq = sum_of_squares(x)
        positive_mean = x[:, :b].mean(1) if b else x.new_zeros(())
        return sum_sq, positive_mean

    @staticmethod
    def backward(ctx, grad_sum_sq, grad_mean):
        (x,) = ctx.saved_tensors
        b = ctx.b if grad_mean is not None else 0
        row_factor = (2.0 * grad_sum_sq).unsqueeze(-1)
        if torch.compiler.is_compiling():  # dynamo cannot trace out= into a slice; inductor fuses this form anyway
            grad = x * row_factor
            return (grad + F.pad((grad_mean / b).unsqueeze(1).expand(-1, b, -1), (0, 0, 0, x.shape[1] - b)) if b else grad), None
        grad = torch.empty_like(x)
        if b:  # positives: 2 g x + grad_mean / b, written in the same pass
            torch.addcmul((grad_mean / b).unsqueeze(1), x[:, :b], row_factor[:, :b], out=grad[:, :b])
        torch.mul(x[:, b:], row_factor[:, b:], out=grad[:, b:])
        return grad, None


def goodness_stats(act: torch.Tensor, kind: str, positives: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sum or mean of squared activities over all feature dims, act [S, N, ...] -> [S, N], and each unit's
    mean activity over the first `positives` samples [S, F] (None when `positives` is 0). Goodness is
    float32 whatever the activities' dtype: in bfloat16 a sum near 2000 is rounded to a multiple of 16, so
    the logits (goodness - threshold) would be off by up to 8."""
    flat = act.flatten(2)
    if flat.requires_grad:
        sum_sq, positive_mean = GoodnessStats.apply(flat, positives)
        positive_mean = positive_mean if positives else None
    else:
        sum_sq = sum_of_squares(flat)
        positive_mean = flat[:, :positives].mean(1) if positives else None
    return (sum_sq if kind == "sum" else sum_sq / flat.shape[-1]), positive_mean


def goodness(act: torch.Tensor, kind: str) -> torch.Tensor:
    """Sum or mean of squared activities over all feature dims: act [S, N, ...] -> [S, N]."""
    return goodness_stats(act, kind)[0]


class Objective(nn.Module):
    """The loss and the layer accuracy that goes with it, for one layer of `units` units, and the state of
    its peer normalisation: each unit's running mean activity on positives, per seed (loeweX init 0.5)."""

    def __init__(self, cfg: ModelConfig, units: int, seeds: int = 1):
        super().__init__()
        self.kind, self.loss_kind, self.alpha = cfg.goodness, cfg.loss, cfg.alpha
        # Threshold per unit: sum goodness compares with theta * width (loeweX: the width itself).
        self.threshold = cfg.theta * units if cfg.goodness == "sum" else cfg.theta
        self.peer_norm, self.peer_momentum = cfg.peer_norm, cfg.peer_momentum
        self.register_buffer("peer_running", torch.full((seeds, units), 0.5))

    def training_loss(self, act: torch.Tensor, positives: int):
        """A training step's loss for activities [S, 2B, ...] (positives, then negatives): the objective to
        minimise [S] (with the peer-normalisation term, whose running state advances), the FF loss [S], and the
        goodness of positives and negatives [S, B]."""
        g, positive_mean = self.goodness_and_positive_mean(act, positives if self.peer_norm > 0 else 0)
        g_pos, g_neg = g[:, :positives], g[:, positives:]
        loss = self.loss(g_pos, g_neg)
        if self.peer_norm <= 0:
            return loss, loss, g_pos, g_neg
        running = peer_update(self.peer_running, positive_mean, self.peer_momentum)
        self.peer_running.copy_(running.detach())
        return loss + self.peer_norm * peer_loss(running), loss, g_pos, g_neg

    def goodness(self, act: torch.Tensor) -> torch.Tensor:
        return goodness(act, self.kind)

    def goodness_of(self, out) -> torch.Tensor:
        """Goodness of a LayerOutput [S, M], from the sum of squares a fused kernel already took if it did."""
        if out.act_sum_sq is None:
            return self.goodness(out.act)
        return out.act_sum_sq if self.kind == "sum" else out.act_sum_sq / out.act_features

    def goodness_and_positive_mean(self, act: torch.Tensor, positives: int):
        """Goodness [S, N] and each unit's mean activity over the first `positives` samples [S, F] (or None)."""
        return goodness_stats(act, self.kind, positives)

    def loss(self, g_pos: torch.Tensor, g_neg: torch.Tensor) -> torch.Tensor:
        """[S, N] positives and [S, N] aligned negatives -> [S]. softplus keeps large goodness finite."""
        if self.loss_kind == "symba":
            # SymBa: one loss per (positive, negative) pair on their goodness gap.
            return F.softplus(-self.alpha * (g_pos - g_neg)).mean(-1)
        # BCE with logits (goodness - threshold), positives and negatives weighted equally (loeweX).
        return 0.5 * (F.softplus(self.threshold - g_pos).mean(-1) + F.softplus(g_neg - self.threshold).mean(-1))

    def binary_accuracy(self, g_pos: torch.Tensor, g_neg: torch.Tensor) -> torch.Tensor:
        """Adamson's layer accuracy (TP + TN) / m at sigmoid(goodness - threshold) > 0.5; chance is 0.5.

        SymBa has no threshold: there the accuracy is the share of pairs ranked correctly (g_pos > g_neg),
        which also has chance 0.5.
        """
        if self.loss_kind == "symba":
            return (g_pos > g_neg).float().mean(-1)
        return 0.5 * ((g_pos > self.threshold).float().mean(-1) + (g_neg <= self.threshold).float().mean(-1))


def peer_update(running: torch.Tensor, batch_mean: torch.Tensor, momentum: float) -> torch.Tensor:
    """New running mean of each unit's activity on positives (carries gradient through this batch).

    running [S, U], batch_mean [S, U] (this batch's mean activity on positives) -> [S, U]
    """
    return running.detach() * momentum + batch_mean * (1.0 - momentum)


def peer_loss(running: torch.Tensor) -> torch.Tensor:
    """Penalise units whose running activity differs from the layer's average (loeweX): [S, U] -> [S]."""
    return (running.mean(-1, keepdim=True) - running).square().mean(-1)
