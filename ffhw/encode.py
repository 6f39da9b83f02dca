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
"""
from __future__ import annotations

import math

import torch
from torch import nn

ENCODINGS = ("onehot", "border", "concat")


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


def random_negatives(labels: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """A uniformly random wrong label for each sample: (y + U{1..C-1}) mod C, never the true label."""
    shift = torch.randint(1, num_classes, labels.shape, generator=generator, device=labels.device)
    return (labels + shift) % num_classes


def hard_negatives(goodness: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A wrong label drawn in proportion to its goodness: goodness [N, C] (non-negative), labels [N]."""
    weights = goodness.detach().float().clamp_min(0) + 1e-6  # the floor keeps all-zero rows drawable
    weights = weights.scatter(-1, labels[..., None], 0.0)  # never the true label
    return torch.multinomial(weights, 1, generator=generator).squeeze(-1)
