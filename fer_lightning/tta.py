"""Test-time augmentation: average the class probabilities of several views of each image."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from fer_lightning.errors import FERUserError

TTA_MODES = ("none", "flip", "tencrop")
TEN_CROP_SIZE = 44  # of 48: the four corners and the centre, each also mirrored


def check_tta_mode(mode: str) -> str:
    """`mode` if it is a known TTA mode, else a one-line user error."""
    if mode not in TTA_MODES:
        raise FERUserError(f"tta={mode!r} is not one of {', '.join(TTA_MODES)}")
    return mode


def views(images: torch.Tensor, mode: str) -> list[torch.Tensor]:
    """The augmented copies of a (B, C, H, W) batch that `mode` averages over, same shape each."""
    check_tta_mode(mode)
    if mode == "none":
        return [images]
    if mode == "flip":
        return [images, images.flip(-1)]
    height, width = images.shape[-2:]
    size = TEN_CROP_SIZE
    offsets = [(0, 0), (0, width - size), (height - size, 0), (height - size, width - size)]
    offsets.append(((height - size) // 2, (width - size) // 2))
    crops = [
        F.interpolate(
            images[..., top : top + size, left : left + size],
            size=(height, width),
            mode="bilinear",
            align_corners=False,
        )
        for top, left in offsets
    ]
    return crops + [crop.flip(-1) for crop in crops]


def tta_probabilities(
    forward: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, mode: str
) -> torch.Tensor:
    """Mean softmax over the views of ``images``, all views in one ``forward`` call: the one
    averaging of evaluate.py, predict and exported models."""
    batch_views = views(images, mode)
    logits = forward(torch.cat(batch_views))
    return logits.softmax(dim=1).view(len(batch_views), images.shape[0], -1).mean(dim=0)


def tta_log_probabilities(
    forward: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, mode: str
) -> torch.Tensor:
    """Log of the mean softmax over the views: usable as logits for argmax and cross-entropy."""
    return probabilities_as_logits(tta_probabilities(forward, images, mode))


def probabilities_as_logits(probabilities: torch.Tensor) -> torch.Tensor:
    """The log of class probabilities, zeros clamped to the smallest positive float: their
    argmax, softmax and cross-entropy are the probabilities' own."""
    return probabilities.clamp_min(torch.finfo(probabilities.dtype).tiny).log()
