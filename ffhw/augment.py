"""On-device data augmentation: random crop with zero padding and random rotation, as one batched affine
resampling (torchvision's RandomCrop(pad) then RandomRotation(deg), nearest-neighbour, zero fill).

Randomness comes from a per-(seed, epoch) generator on the data's device, so every seed of a seed-batched
run sees its own augmentation and a resumed run replays the same one.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class Augment:
    def __init__(self, crop_padding: int, max_rotation: float, image_shape: tuple[int, ...]):
        self.pad, self.degrees = int(crop_padding), float(max_rotation)
        self.image_shape = tuple(image_shape)
        if self.pad < 0 or self.degrees < 0:
            raise ValueError("crop padding and rotation must be >= 0")

    @property
    def active(self) -> bool:
        return self.pad > 0 or self.degrees > 0

    def __call__(self, images: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
        """images [S, B, *image_shape] in [0, 1] -> the same shape; seed s draws its moves from generators[s]."""
        if not self.active:
            return images
        h, w = self.image_shape[-2:]
        lead = images.shape[:images.dim() - len(self.image_shape)]
        x = images.reshape(-1, *((1,) if len(self.image_shape) == 2 else self.image_shape[:-2]), h, w)
        per_seed = x.shape[0] // len(generators)
        dev = x.device
        # Crop with padding p = a shift of the image by an integer in [-p, p] with zeros coming in.
        shift = torch.cat([torch.randint(-self.pad, self.pad + 1, (per_seed, 2), generator=g, device=dev)
                           for g in generators]).to(x.dtype)
        angle = torch.cat([torch.rand(per_seed, generator=g, device=dev) for g in generators])
        angle = (angle * 2 - 1) * math.radians(self.degrees)
        cos, sin = angle.cos(), angle.sin()
        # affine_grid maps output to input coordinates (normalised to [-1, 1]): undo the rotation, then the shift.
        theta = torch.stack([torch.stack([cos, -sin * h / w, -2 * shift[:, 0] / w], -1),
                             torch.stack([sin * w / h, cos, -2 * shift[:, 1] / h], -1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out = F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)
        return out.reshape(*lead, *self.image_shape)
