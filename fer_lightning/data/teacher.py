"""Teacher targets for distillation: the class probabilities trained nets (often an ensemble) give
each training image, written by ``python -m fer_lightning.distill`` and blended with the labels
when ``data.teacher_targets`` is set."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from fer_lightning.data.fer2013_csv import SplitArrays
from fer_lightning.errors import FERUserError, first_line

TEACHER_FORMAT = "fer_lightning.teacher_targets/1"
RECORD_KEYS = ("format", "probabilities", "class_names", "train_fingerprint", "teachers", "tta")
ROW_SUM_TOLERANCE = 1e-3


def split_fingerprint(arrays: SplitArrays) -> str:
    """sha256 of a split's pixels and labels, in order: targets made for one training set are
    refused on another (another csv, a FER+ split, another row order)."""
    digest = hashlib.sha256(arrays.images.tobytes())
    digest.update(arrays.labels.astype("int64").tobytes())
    return digest.hexdigest()


def teacher_record(
    probabilities: torch.Tensor,
    arrays: SplitArrays,
    class_names: Sequence[str],
    teachers: Sequence[str],
    tta_modes: Sequence[str],
) -> dict[str, Any]:
    """What a teacher-targets file holds: one probability row per training image, and what
    they were made from and for."""
    return {
        "format": TEACHER_FORMAT,
        "probabilities": probabilities.detach().to("cpu", torch.float32).contiguous(),
        "class_names": [str(name) for name in class_names],
        "train_fingerprint": split_fingerprint(arrays),
        "teachers": [str(path) for path in teachers],
        "tta": [str(mode) for mode in tta_modes],
    }


def load_teacher_probabilities(
    path: str | os.PathLike, arrays: SplitArrays, class_names: Sequence[str]
) -> torch.Tensor:
    """The (N, K) teacher probabilities in ``path``, checked to belong to the training split
    ``arrays`` with classes ``class_names``; any mismatch fails in one line naming the file."""
    source = f"data.teacher_targets={path}"
    try:
        record = torch.load(Path(path).expanduser(), map_location="cpu", weights_only=True)
    except FileNotFoundError as err:
        raise FERUserError(f"{source}: no such file; write it with fer-lightning distill") from err
    except Exception as err:  # a truncated or foreign file: torch raises several kinds
        raise FERUserError(f"{source}: not a teacher-targets file ({first_line(err)})") from err
    complete = isinstance(record, dict) and all(key in record for key in RECORD_KEYS)
    if not complete or record["format"] != TEACHER_FORMAT:
        raise FERUserError(
            f"{source}: not a teacher-targets file (write one with fer-lightning distill)"
        )
    if record["class_names"] != list(class_names):
        raise FERUserError(
            f"{source}: made for the classes {record['class_names']}, but the data has "
            f"{list(class_names)}"
        )
    probabilities = record["probabilities"]
    if record["train_fingerprint"] != split_fingerprint(arrays):
        raise FERUserError(
            f"{source}: made for another training set ({len(probabilities)} images; this one "
            f"has {len(arrays.labels)}, or they differ); write it again for this data"
        )
    _check_probabilities(source, probabilities, (len(arrays.labels), len(class_names)))
    return probabilities


def _check_probabilities(source: str, probabilities: Any, shape: tuple[int, int]) -> None:
    """One line unless ``probabilities`` is a float tensor of ``shape`` whose rows are
    probabilities (finite, non-negative, summing to 1)."""
    if not torch.is_tensor(probabilities) or not probabilities.is_floating_point():
        raise FERUserError(f"{source}: its probabilities are not a float tensor")
    if tuple(probabilities.shape) != shape:
        raise FERUserError(
            f"{source}: its probabilities have shape {tuple(probabilities.shape)}, the training "
            f"set needs {shape} (one row per image, one column per class)"
        )
    valid_rows = probabilities.isfinite().all(1) & (probabilities >= 0).all(1)
    valid_rows &= (probabilities.sum(1) - 1).abs() < ROW_SUM_TOLERANCE
    if not valid_rows.all():
        row = int((~valid_rows).nonzero()[0])
        raise FERUserError(
            f"{source}: row {row} of its probabilities is not a probability distribution "
            f"({probabilities[row].tolist()})"
        )


def blend_targets(labels: torch.Tensor, probabilities: torch.Tensor, weight: float) -> torch.Tensor:
    """Training targets (N, K): ``weight`` of the teachers' probabilities plus the rest of the
    one-hot labels. Up to a weight of 0.5 a target's largest entry stays its label."""
    one_hot = F.one_hot(labels, probabilities.shape[1]).to(probabilities.dtype)
    return (1.0 - weight) * one_hot + weight * probabilities
