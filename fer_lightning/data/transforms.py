"""Image transforms (torchvision v2): uint8 (1, 48, 48) in, normalised float32 (C, 48, 48) out."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torchvision.transforms import v2

from fer_lightning.classes import IMAGE_SIZE
from fer_lightning.errors import FERUserError

AUGMENT_KNOBS: tuple[str, ...] = (
    "random_resized_crop_scale",  # [min, max] area share for RandomResizedCrop back to 48
    "pad_crop",  # reflect-pad by this many pixels, then RandomCrop 48 (alternative to the above)
    "hflip",  # probability of a horizontal flip
    "affine_degrees",  # RandomAffine rotation range +-degrees
    "affine_translate",  # RandomAffine shift, as a fraction of the size
    "affine_scale",  # RandomAffine [min, max] zoom
    "random_erasing",  # probability of RandomErasing (after normalisation)
)
MEAN = 0.5
STD = 0.5


def build_transform(
    train: bool, in_channels: int = 1, augment: Mapping[str, Any] | None = None
) -> v2.Compose:
    """Scale to [0, 1], normalise with mean 0.5 and std 0.5, and replicate gray to 3 channels
    when ``in_channels == 3``. With ``train``, first apply the augmentations enabled in
    ``augment`` (knobs in AUGMENT_KNOBS; a falsy value disables one). Knobs are validated even
    for the eval transform, which never augments.
    """
    if in_channels not in (1, 3):
        raise FERUserError(
            f"in_channels must be 1 (gray) or 3 (gray replicated), got {in_channels}"
        )
    augment = dict(augment or {})
    unknown = sorted(set(augment) - set(AUGMENT_KNOBS))
    if unknown:
        raise FERUserError(
            f"unknown augment option(s) {', '.join(unknown)}; valid: {', '.join(AUGMENT_KNOBS)}"
        )
    geometric, erasing = _augmentations(augment)
    steps = geometric if train else []
    if in_channels == 3:
        steps.append(v2.Grayscale(num_output_channels=3))
    steps += [
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize([MEAN] * in_channels, [STD] * in_channels),
    ]
    if train:
        steps += erasing
    return v2.Compose(steps)


def _augmentations(augment: dict[str, Any]) -> tuple[list[v2.Transform], list[v2.Transform]]:
    """(uint8 geometric transforms, transforms on the normalised float image) for ``augment``."""
    if augment.get("random_resized_crop_scale") and augment.get("pad_crop"):
        raise FERUserError("augment: use either random_resized_crop_scale or pad_crop, not both")
    geometric: list[v2.Transform] = []
    if scale := augment.get("random_resized_crop_scale"):
        geometric.append(
            _build(
                "random_resized_crop_scale",
                lambda: v2.RandomResizedCrop(IMAGE_SIZE, scale=tuple(scale), antialias=True),
            )
        )
    if padding := augment.get("pad_crop"):
        geometric.append(
            _build(
                "pad_crop",
                lambda: v2.RandomCrop(IMAGE_SIZE, padding=int(padding), padding_mode="reflect"),
            )
        )
    if probability := augment.get("hflip"):
        geometric.append(_build("hflip", lambda: v2.RandomHorizontalFlip(p=float(probability))))
    degrees = augment.get("affine_degrees") or 0
    translate = augment.get("affine_translate")
    zoom = augment.get("affine_scale")
    if degrees or translate or zoom:
        geometric.append(
            _build(
                "affine_degrees/affine_translate/affine_scale",
                lambda: v2.RandomAffine(
                    degrees=float(degrees),
                    translate=(float(translate), float(translate)) if translate else None,
                    scale=tuple(zoom) if zoom else None,
                ),
            )
        )
    erasing = []
    if probability := augment.get("random_erasing"):
        erasing.append(_build("random_erasing", lambda: v2.RandomErasing(p=float(probability))))
    return geometric, erasing


def _build(knob: str, make: Callable[[], v2.Transform]) -> v2.Transform:
    """Construct a transform, turning torchvision's complaint about a value into a user error."""
    try:
        return make()
    except (TypeError, ValueError) as exc:
        raise FERUserError(f"augment {knob}: invalid value ({exc})") from exc
