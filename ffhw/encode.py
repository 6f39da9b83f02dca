"""Label encoding (where the label is written into the input) and negative labels.

Every encoding writes the label on a fixed set of input positions, disjoint from the image content:
`embed(x, y) = base(x) + pattern[y]`, where `base` zeroes (or appends) the label positions. That split is
what lets evaluation compute layer 0 once per image for all labels (see `FFLayer.forward_labels`).

- onehot: the first C pixels of the flattened image (row 0, columns 0..C-1 of a 28x28 image; Hinton/loeweX)
  hold the one-hot label; the neutral label is 1/C on each of them (loeweX: 0.1).
- border: the outer ring of pixels, walked clockwise from the top-left corner (top row left to right,
  right column downwards, bottom row right to left, left column upwards), is cut into C consecutive
  segments of ring_length // C pixels (10 pixels each for 28x28: 108 ring pixels); label c sets segment c
  to 1 and the rest of the ring to 0; the neutral label sets the used ring pixels to 1/C. Multi-channel
  images get the same pattern in every channel.
- concat: C extra inputs appended after the image; one-hot label, neutral 1/C.
- channel (conv networks): a learned H*W embedding per label, appended as an extra image channel.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

ENCODINGS = ("onehot", "border", "concat")


@dataclass
class LabelPatterns:
    """Label patterns by the input positions they occupy: values [P, m] at positions [m] (long) of a
    `dim`-wide input, zero elsewhere. Layers that split image and label use the few positions directly."""
    values: torch.Tensor
    positions: torch.Tensor
    dim: int

    def dense(self) -> torch.Tensor:
        """[P, dim]"""
        return self.values.new_zeros(self.values.shape[0], self.dim).index_copy_(1, self.positions, self.values)


@dataclass
class LabelSetInputs:
    """Layer 0's inputs in a training step, K label sets per image (true and wrong labels), as the encoding
    gives them: split into the image part `base` [S, N, D] and label `patterns` on disjoint positions with
    `labels` [S, K, N] (and `frozen_labels` [S, N] for the neutral pass), so a layer that starts with a linear
    map can project each image once; or, where the label cannot be split off, the `full` inputs [S, K*N, ...]
    (and `frozen_full` [S, N, ...])."""
    base: torch.Tensor | None = None
    patterns: LabelPatterns | None = None
    labels: torch.Tensor | None = None
    frozen_labels: torch.Tensor | None = None
    full: torch.Tensor | None = None
    frozen_full: torch.Tensor | None = None


@dataclass
class AllLabelInputs:
    """Layer 0's inputs in evaluation, every label of each image: `base` [S, N, D] with `patterns` [C, D]
    (and a `neutral` pattern [D] for the head), or the `full` inputs [S, N*C, ...] (and `neutral_full`)."""
    base: torch.Tensor | None = None
    patterns: torch.Tensor | None = None
    neutral: torch.Tensor | None = None
    full: torch.Tensor | None = None
    neutral_full: torch.Tensor | None = None


def border_ring(height: int, width: int) -> list[int]:
    """Flat indices of the image border, clockwise from the top-left corner."""
    top = [c for c in range(width)]
    right = [r * width + width - 1 for r in range(1, height)]
    bottom = [(height - 1) * width + c for c in range(width - 2, -1, -1)]
    left = [r * width for r in range(height - 2, 0, -1)]
    return top + right + bottom + left


class LabelEncoding(nn.Module):
    def __init__(self, kind: str, num_classes: int, image_shape: tuple[int, ...]):
        super().__init__()
        if kind not in ENCODINGS:
            raise ValueError(f"unknown label encoding {kind!r}; choose one of {', '.join(ENCODINGS)}")
        self.kind, self.num_classes, self.image_shape = kind, num_classes, tuple(image_shape)
        self.image_dim = math.prod(image_shape)
        self.in_dim = self.image_dim + (num_classes if kind == "concat" else 0)
        patterns = torch.zeros(num_classes, self.in_dim)
        if kind in ("onehot", "concat"):
            first = 0 if kind == "onehot" else self.image_dim
            patterns[:, first:first + num_classes] = torch.eye(num_classes)
        else:
            channels, height, width = (1, *image_shape) if len(image_shape) == 2 else image_shape[-3:]
            ring = border_ring(height, width)
            seg = len(ring) // num_classes
            if seg == 0:
                raise ValueError(f"a {height}x{width} border has too few pixels for {num_classes} labels")
            for c in range(num_classes):
                for ch in range(channels):
                    idx = [ch * height * width + p for p in ring[c * seg:(c + 1) * seg]]
                    patterns[c, idx] = 1.0
        label_mask = patterns.sum(0) > 0
        self.register_buffer("patterns", patterns, persistent=False)
        self.register_buffer("label_mask", label_mask, persistent=False)
        self.register_buffer("neutral", label_mask.float() / num_classes, persistent=False)
        # The label patterns and, as pattern C, the neutral label, on the label positions (for `label_sets`).
        positions = label_mask.nonzero()[:, 0]
        self.register_buffer("label_positions", positions, persistent=False)
        self.register_buffer("label_values", torch.cat([patterns, self.neutral[None]])[:, positions], persistent=False)

    def base(self, images: torch.Tensor) -> torch.Tensor:
        """Flatten images [..., *image_shape] to [..., in_dim] with the label positions cleared."""
        lead = images.shape[: images.dim() - len(self.image_shape)]
        flat = images.reshape(*lead, self.image_dim)
        if self.kind == "concat":
            return torch.cat([flat, flat.new_zeros(*lead, self.num_classes)], dim=-1)
        return flat.masked_fill(self.label_mask, 0.0)

    def embed(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Images [..., *image_shape] with labels [...] -> inputs [..., in_dim]."""
        return self.base(images) + self.patterns[labels]

    def embed_neutral(self, images: torch.Tensor) -> torch.Tensor:
        return self.base(images) + self.neutral

    def all_labels(self, images: torch.Tensor, seeds: int, neutral: bool = False) -> AllLabelInputs:
        """Every label of images [N, ...] for S seeds (and the neutral label, with `neutral`), split."""
        base = self.base(images)
        return AllLabelInputs(base=base.unsqueeze(0).expand(seeds, *base.shape), patterns=self.patterns,
                              neutral=self.neutral if neutral else None)

    def label_sets(self, images: torch.Tensor, labels: torch.Tensor, neutral: bool) -> LabelSetInputs:
        """Images [S, N, ...] with K label sets [S, K, N] (and, with `neutral`, the neutral label), split."""
        frozen = torch.full_like(labels[:, 0], self.num_classes) if neutral else None
        patterns = LabelPatterns(self.label_values, self.label_positions, self.in_dim)
        return LabelSetInputs(base=self.base(images), patterns=patterns, labels=labels, frozen_labels=frozen)

    def input_density(self, images: torch.Tensor) -> float:
        """Share of non-zero values in layer 0's inputs for images [N, ...] with label 0 (cost model)."""
        return (self.embed(images, torch.zeros(len(images), dtype=torch.long, device=images.device)) != 0).float().mean().item()

    def export_front(self, seed: int) -> nn.Module:
        return PixelLabelFront(self)


class PixelLabelFront(nn.Module):
    """Export form of LabelEncoding: raw image [N, *shape] and int64 label [N] -> layer 0's input [N, D]."""

    def __init__(self, encoding: LabelEncoding):
        super().__init__()
        self.kind, self.image_dim, self.num_classes = encoding.kind, encoding.image_dim, encoding.num_classes
        self.register_buffer("patterns", encoding.patterns.clone())
        self.register_buffer("keep", (~encoding.label_mask[: encoding.image_dim]).float())
        self.register_buffer("neutral_pattern", encoding.neutral.clone())

    def base(self, image):
        flat = image.reshape(image.shape[0], self.image_dim)
        if self.kind == "concat":
            return torch.cat([flat, torch.zeros_like(flat[:, : self.num_classes])], dim=1)
        return flat * self.keep

    def forward(self, image, label):
        return self.base(image) + self.patterns[label]

    def all_labels(self, image):
        """[N, ...] -> [N*C, D], sample-major (all labels of image 0 first)."""
        return (self.base(image).unsqueeze(1) + self.patterns.unsqueeze(0)).reshape(-1, self.patterns.shape[1])

    def neutral(self, image):
        return self.base(image) + self.neutral_pattern


class ChannelLabelFront(nn.Module):
    """Export form of LabelChannel for one seed: image [N, C, H, W] and label [N] -> [N, C+1, H, W]."""

    def __init__(self, table: torch.Tensor, image_shape: tuple[int, ...]):
        super().__init__()
        self.register_buffer("table", table.detach().clone())
        self.num_classes, self.hw = table.shape[0], tuple(image_shape[-2:])

    def forward(self, image, label):
        return torch.cat([image, self.table[label].reshape(-1, 1, *self.hw)], dim=1)

    def all_labels(self, image):
        n, c = image.shape[0], self.num_classes
        images = image.unsqueeze(1).expand(n, c, *image.shape[1:]).reshape(n * c, *image.shape[1:])
        return torch.cat([images, self.table.repeat(n, 1).reshape(n * c, 1, *self.hw)], dim=1)

    def neutral(self, image):
        return torch.cat([image, torch.zeros_like(image[:, :1])], dim=1)


class LabelChannel(nn.Module):
    """The label as a learned extra input channel (the Trifecta's conv networks): each class has an embedding
    of H*W values, one table per seed, appended to the image as channel C+1. It is trained with block 0."""

    kind = "channel"

    def __init__(self, num_classes: int, image_shape: tuple[int, ...], generators: list[torch.Generator]):
        super().__init__()
        self.num_classes, self.image_shape = num_classes, tuple(image_shape)
        h, w = image_shape[-2:]
        self.weight = nn.Parameter(torch.stack([torch.randn(num_classes, h * w, generator=g) for g in generators]))
        self.in_shape = (image_shape[0] + 1, h, w)

    def _with_channel(self, images: torch.Tensor, channel: torch.Tensor) -> torch.Tensor:
        h, w = self.image_shape[-2:]
        return torch.cat([images, channel.reshape(*channel.shape[:-1], 1, h, w)], dim=-3)

    def embed(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Images [S, N, C, H, W] with labels [S, N] -> [S, N, C+1, H, W]."""
        seeds = torch.arange(self.weight.shape[0], device=labels.device).unsqueeze(-1)
        return self._with_channel(images, self.weight[seeds, labels])

    def embed_neutral(self, images: torch.Tensor) -> torch.Tensor:
        return self._with_channel(images, images.new_zeros(*images.shape[:-3], self.weight.shape[-1]))

    def all_labels(self, images: torch.Tensor, seeds: int, neutral: bool = False) -> AllLabelInputs:
        """As LabelEncoding.all_labels, built in full: the learned channel differs per seed."""
        n, c = images.shape[0], self.num_classes
        expanded = images.unsqueeze(1).expand(n, c, *images.shape[1:]).reshape(n * c, *images.shape[1:])
        labels = torch.arange(c, device=images.device).repeat(n)
        full = self.embed(expanded.unsqueeze(0).expand(seeds, *expanded.shape), labels.unsqueeze(0).expand(seeds, -1))
        neutral_full = self.embed_neutral(images.unsqueeze(0).expand(seeds, *images.shape)) if neutral else None
        return AllLabelInputs(full=full, neutral_full=neutral_full)

    def label_sets(self, images: torch.Tensor, labels: torch.Tensor, neutral: bool) -> LabelSetInputs:
        """As LabelEncoding.label_sets, built in full; the learned channel keeps its gradient from layer 0's loss."""
        full = torch.cat([self.embed(images, labels[:, k]) for k in range(labels.shape[1])], dim=1)
        return LabelSetInputs(full=full, frozen_full=self.embed_neutral(images) if neutral else None)

    def input_density(self, images: torch.Tensor, seed: int = 0) -> float:
        """Share of non-zero values in block 0's inputs for images [N, C, H, W] with label 0 (cost model)."""
        channel = self.weight[seed, 0].detach().expand(len(images), -1)
        return (self._with_channel(images, channel) != 0).float().mean().item()

    def export_front(self, seed: int) -> nn.Module:
        return ChannelLabelFront(self.weight[seed], self.image_shape)


def random_negatives(labels: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """A uniformly random wrong label for each sample: (y + U{1..C-1}) mod C, never the true label."""
    shift = torch.randint(1, num_classes, labels.shape, generator=generator, device=labels.device)
    return (labels + shift) % num_classes


def hard_negatives(goodness: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A wrong label drawn with the network's own probability for it: softmax over the wrong labels of the
    summed goodness, goodness [N, C], labels [N]. Each layer's log-odds of "positive" is goodness - threshold,
    so the sum over layers is the label's log-odds up to a constant; drawing in proportion to raw goodness
    instead was nearly uniform (every label's goodness sits near the threshold)."""
    logits = goodness.detach().float().scatter(-1, labels[..., None], -float("inf"))  # never the true label
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator).squeeze(-1)
