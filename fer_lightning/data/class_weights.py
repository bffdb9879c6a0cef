"""Per-class loss weights against class imbalance (FER2013 has 16x more Happy than Disgust)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from fer_lightning.errors import FERUserError

CLASS_WEIGHTING_MODES: tuple[str, ...] = ("none", "balanced", "sqrt")


def check_class_weighting(mode: str) -> None:
    """One line for a class weighting mode that does not exist (``data.class_weighting``)."""
    if mode not in CLASS_WEIGHTING_MODES:
        raise FERUserError(
            f"unknown data.class_weighting {mode!r}; choose one of "
            f"{', '.join(CLASS_WEIGHTING_MODES)}"
        )


def class_weights(counts: Sequence[int], mode: str) -> list[float] | None:
    """Loss weight per class from the training counts ``counts``, or None for ``mode="none"``.

    - ``balanced``: ``N / (K * n_c)`` (N rows, K classes), so every class weighs the same in total.
    - ``sqrt``: the square root of the balanced weight (a milder correction), rescaled so that the
      count-weighted mean weight ``sum(n_c * w_c) / N`` is 1, as it is for ``balanced``. With
      class-index targets PyTorch's weighted mean divides by the weights anyway; with mixup's
      and cutmix's soft targets it divides by the batch size, and the rescaling keeps that loss
      on the unweighted scale.

    Rare classes get large weights (the baseline reference weighted by frequency instead, which
    favours the majority). A class without rows has no defined weight and is an error.
    """
    check_class_weighting(mode)
    if mode == "none":
        return None
    for label, count in enumerate(counts):
        if count <= 0:
            raise FERUserError(
                f"class {label} has {count} training rows; class weighting {mode!r} needs every "
                "class to have at least one (use class_weighting=none)"
            )
    total = sum(counts)
    balanced = [total / (len(counts) * count) for count in counts]
    if mode == "balanced":
        return balanced
    roots = [math.sqrt(weight) for weight in balanced]
    mean = sum(count * root for count, root in zip(counts, roots, strict=True)) / total
    return [root / mean for root in roots]
