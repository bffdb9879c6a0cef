"""Preprocessing and training augmentation, both on whole batches.

Loaders only index and normalise (`normalize`): uint8 (B, 1, 48, 48) -> float32 (B, C, 48, 48) in
[-1, 1]. Random augmentation (`BatchAugment`) runs once per batch on the training device, after
the batch is transferred: one ``grid_sample`` does every geometric knob at once. On 2 CPU cores
per-image transforms in loader workers took a third of the training throughput; on a GPU they
would starve it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2

from fer_lightning.errors import FERUserError, check_whole_number

AUGMENT_KNOBS: tuple[str, ...] = (
    "random_resized_crop_scale",  # [min, max] area share of a crop resized back to 48
    "pad_crop",  # shift by up to this many whole pixels (reflected border), like pad + crop
    "hflip",  # probability of a horizontal flip
    "affine_degrees",  # rotation range +-degrees
    "affine_translate",  # shift range, as a fraction of the size
    "affine_scale",  # [min, max] zoom
    "random_erasing",  # probability of erasing a rectangle (set to 0, the mid-gray)
    "mixup_alpha",  # Beta(alpha, alpha) mixing of image pairs and their labels
    "cutmix_alpha",  # CutMix with Beta(alpha, alpha) box areas (with mixup: one of the two)
)
MEAN = 0.5
STD = 0.5
# RandomResizedCrop's aspect-ratio range and RandomErasing's area and aspect ranges (torchvision's)
CROP_RATIO = (3 / 4, 4 / 3)
ERASE_AREA = (0.02, 0.33)
ERASE_RATIO = (0.3, 3.3)


def check_in_channels(in_channels: int) -> int:
    """`in_channels` if the nets' inputs can have it (gray, or gray replicated to 3)."""
    if in_channels not in (1, 3):
        raise FERUserError(
            f"in_channels must be 1 (gray) or 3 (gray replicated), got {in_channels}"
        )
    return in_channels


def normalize(images: torch.Tensor, in_channels: int = 1) -> torch.Tensor:
    """uint8 (B, 1, H, W) -> float32 (B, in_channels, H, W): scaled to [0, 1], then normalised
    with mean 0.5 and std 0.5, gray replicated when ``in_channels == 3``."""
    check_in_channels(in_channels)
    scaled = (images.to(torch.float32) / 255 - MEAN) / STD
    return scaled.expand(-1, in_channels, -1, -1).contiguous()


class BatchAugment(nn.Module):
    """Random training augmentation of a normalised batch, each image drawn independently.

    ``augment`` holds knobs from AUGMENT_KNOBS; a falsy value disables one. Geometric knobs
    compose into one affine map per image (crop, then rotation/zoom/shift, then mirror),
    sampled bilinearly with reflected borders; whole-pixel shifts (``pad_crop``) stay exact.
    With mixup or cutmix the targets become class probabilities (B, num_classes).
    Randomness comes from torch's global generator on the batch's device, so
    ``seed_everything`` makes a run repeatable.
    """

    def __init__(self, augment: Mapping[str, Any] | None = None, num_classes: int = 7) -> None:
        super().__init__()
        knobs = dict(augment or {})
        unknown = sorted(set(knobs) - set(AUGMENT_KNOBS))
        if unknown:
            raise FERUserError(
                f"unknown augment option(s) {', '.join(unknown)}; valid: {', '.join(AUGMENT_KNOBS)}"
            )
        if knobs.get("random_resized_crop_scale") and knobs.get("pad_crop"):
            raise FERUserError(
                "augment: use either random_resized_crop_scale or pad_crop, not both"
            )
        self.crop_scale = _range(knobs, "random_resized_crop_scale", 0.0, 1.0)
        self.pad_crop = check_whole_number("augment pad_crop", knobs.get("pad_crop") or 0, 0)
        self.hflip = _number(knobs, "hflip", 0.0, 1.0)
        self.degrees = _number(knobs, "affine_degrees", 0.0, 180.0)
        self.translate = _number(knobs, "affine_translate", 0.0, 1.0)
        self.zoom = _range(knobs, "affine_scale", 0.0, math.inf)
        self.erasing = _number(knobs, "random_erasing", 0.0, 1.0)
        self.mix = _mixing(
            _number(knobs, "mixup_alpha", 0.0, math.inf),
            _number(knobs, "cutmix_alpha", 0.0, math.inf),
            num_classes,
        )

    @property
    def geometric(self) -> bool:
        """Whether any knob moves pixels (and so needs a resampling pass)."""
        return bool(
            self.crop_scale or self.pad_crop or self.hflip or self.degrees or self.translate
        ) or bool(self.zoom)

    def forward(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Augmented (B, C, H, W) images and their targets: labels (B,), or (B, K) probabilities
        when mixup/cutmix is on."""
        if self.geometric:
            grid = F.affine_grid(self._affine(images), list(images.shape), align_corners=False)
            images = F.grid_sample(
                images, grid, mode="bilinear", padding_mode="reflection", align_corners=False
            )
        if self.erasing:
            images = images.masked_fill(self._erase_mask(images), 0.0)
        if self.mix is not None:
            images, labels = self.mix(images, labels)
        return images, labels

    def _affine(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 2, 3) maps from output to input coordinates (both in [-1, 1])."""
        batch, height, width = images.shape[0], images.shape[-2], images.shape[-1]
        options = {"device": images.device, "dtype": images.dtype}
        matrix = torch.eye(3, **options).repeat(batch, 1, 1)
        if self.crop_scale:
            area = _uniform(batch, *self.crop_scale, **options)
            ratio = _uniform(batch, *map(math.log, CROP_RATIO), **options).exp()
            crop_w = (area * ratio).sqrt().clamp(max=1.0)
            crop_h = (area / ratio).sqrt().clamp(max=1.0)
            matrix[:, 0, 0], matrix[:, 1, 1] = crop_w, crop_h
            matrix[:, 0, 2] = _uniform(batch, -1.0, 1.0, **options) * (1 - crop_w)
            matrix[:, 1, 2] = _uniform(batch, -1.0, 1.0, **options) * (1 - crop_h)
        if self.pad_crop:
            shifts = torch.randint(
                -self.pad_crop, self.pad_crop + 1, (batch, 2), device=images.device
            )
            matrix[:, 0, 2] += shifts[:, 0] * 2 / width
            matrix[:, 1, 2] += shifts[:, 1] * 2 / height
        if self.degrees or self.translate or self.zoom:
            angle = _uniform(batch, -self.degrees, self.degrees, **options).deg2rad()
            zoom = _uniform(batch, *self.zoom, **options) if self.zoom else 1.0
            cos, sin = angle.cos() / zoom, angle.sin() / zoom
            affine = torch.eye(3, **options).repeat(batch, 1, 1)
            affine[:, 0, 0], affine[:, 0, 1], affine[:, 1, 0], affine[:, 1, 1] = cos, -sin, sin, cos
            affine[:, :2, 2] = _uniform(
                (batch, 2), -2 * self.translate, 2 * self.translate, **options
            )
            matrix = matrix @ affine
        if self.hflip:
            mirror = torch.rand(batch, device=images.device) < self.hflip
            matrix[:, :, 0] *= torch.where(mirror, -1.0, 1.0).to(images.dtype)[:, None]
        return matrix[:, :2]

    def _erase_mask(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) True inside one random rectangle per image erased (probability
        ``random_erasing``; area 2-33 %, aspect 0.3-3.3, like torchvision's RandomErasing)."""
        batch, height, width = images.shape[0], images.shape[-2], images.shape[-1]
        device = images.device
        area = _uniform(batch, *ERASE_AREA, device=device) * height * width
        ratio = _uniform(batch, *map(math.log, ERASE_RATIO), device=device).exp()
        box_h = (area * ratio).sqrt().round().clamp(1, height)
        box_w = (area / ratio).sqrt().round().clamp(1, width)
        top = (torch.rand(batch, device=device) * (height - box_h + 1)).floor()
        left = (torch.rand(batch, device=device) * (width - box_w + 1)).floor()
        rows = torch.arange(height, device=device)[None, :, None]
        cols = torch.arange(width, device=device)[None, None, :]
        inside = (
            (rows >= top[:, None, None])
            & (rows < (top + box_h)[:, None, None])
            & (cols >= left[:, None, None])
            & (cols < (left + box_w)[:, None, None])
        )
        chosen = torch.rand(batch, device=device) < self.erasing
        return (inside & chosen[:, None, None]).unsqueeze(1)


def _uniform(shape: int | tuple[int, ...], low: float, high: float, **options: Any) -> torch.Tensor:
    """Uniform samples in [low, high)."""
    shape = (shape,) if isinstance(shape, int) else shape
    return torch.rand(shape, **options) * (high - low) + low


def _number(knobs: dict[str, Any], knob: str, low: float, high: float) -> float:
    """Knob ``knob`` as a float in [low, high] (0 when unset)."""
    value = knobs.get(knob) or 0
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise FERUserError(f"augment {knob}: invalid value {value!r}, expected {low}..{high}")
    return float(value)


def _range(knobs: dict[str, Any], knob: str, low: float, high: float) -> tuple[float, float] | None:
    """Knob ``knob`` as a [min, max] pair within (low, high] (None when unset)."""
    value = knobs.get(knob)
    if not value:
        return None
    try:
        first, last = (float(item) for item in value)
    except (TypeError, ValueError):
        raise FERUserError(
            f"augment {knob}: invalid value {value!r}, expected [min, max]"
        ) from None
    if not low < first <= last <= high:
        raise FERUserError(
            f"augment {knob}: invalid value {value!r}, expected {low} < min <= max <= {high}"
        )
    return first, last


def _mixing(mixup_alpha: float, cutmix_alpha: float, num_classes: int) -> v2.Transform | None:
    """torchvision's MixUp and/or CutMix (one of the two per batch when both are on)."""
    mixers = []
    if mixup_alpha:
        mixers.append(v2.MixUp(alpha=mixup_alpha, num_classes=num_classes))
    if cutmix_alpha:
        mixers.append(v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes))
    if not mixers:
        return None
    return mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)
