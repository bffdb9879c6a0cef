"""FER2013 in Kaggle's image-folder layout: ``root/{train,test}/<class>/*.png|jpg``.

The test folder is the test split; the validation split is a seeded stratified share of train.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from fer_lightning.classes import EMOTIONS, IMAGE_SIZE, NUM_CLASSES
from fer_lightning.data.fer2013_csv import SplitArrays
from fer_lightning.errors import DataFormatError, FERUserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_LABELS = {name.lower(): label for label, name in enumerate(EMOTIONS)}


def stratified_val_counts(class_counts: list[int], val_fraction: float) -> list[int]:
    """Validation rows per class: ``n_c * val_fraction`` rounded half up, per class.

    For the FER2013 Training counts and 0.2 this gives 5,741 validation and 22,968 training rows,
    the sizes of the deep reference's split of the 28,709 training images.
    """
    if not 0.0 < val_fraction < 1.0:
        raise FERUserError(
            f"data.val_fraction must be in (0, 1), got {val_fraction!r}: the validation split "
            "selects the checkpoints"
        )
    return [int(np.floor(count * val_fraction + 0.5)) for count in class_counts]


def stratified_split_indices(
    labels: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split row indices into (train, val), each class shuffled with ``seed`` and cut by
    :func:`stratified_val_counts`; both index arrays are sorted."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    class_counts = np.bincount(labels, minlength=NUM_CLASSES).tolist()
    val_parts = []
    for label, val_count in enumerate(stratified_val_counts(class_counts, val_fraction)):
        rows = rng.permutation(np.flatnonzero(labels == label))
        val_parts.append(rows[:val_count])
    val = np.sort(np.concatenate(val_parts))
    train = np.setdiff1d(np.arange(len(labels)), val, assume_unique=True)
    return train, val


def load_fer2013_folders(
    root: str | os.PathLike, val_fraction: float = 0.2, seed: int = 42
) -> dict[str, SplitArrays]:
    """Read ``root/train`` and ``root/test`` into ``{"train", "val", "test"}`` arrays."""
    root = Path(os.path.expanduser(os.fspath(root)))
    train_images, train_labels = _read_split_folder(root / "train")
    test_images, test_labels = _read_split_folder(root / "test")
    train_rows, val_rows = stratified_split_indices(train_labels, val_fraction, seed)
    for split, rows in (("training", train_rows), ("validation", val_rows)):
        if len(rows) == 0:
            raise FERUserError(
                f"{root / 'train'}: data.val_fraction={val_fraction} of its {len(train_labels)} "
                f"images leaves no {split} rows"
            )
    return {
        "train": SplitArrays(train_images[train_rows], train_labels[train_rows]),
        "val": SplitArrays(train_images[val_rows], train_labels[val_rows]),
        "test": SplitArrays(test_images, test_labels),
    }


def _read_split_folder(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 48, 48) uint8 and labels (N,) int64 of one split folder, by label then name."""
    if not folder.is_dir():
        raise FERUserError(
            f"{folder} is not a directory; the image-folder layout needs root/train/<class>/*.png "
            f"and root/test/<class>/*.png with classes {', '.join(_LABELS)}"
        )
    class_dirs = {}
    for class_dir in sorted(path for path in folder.iterdir() if path.is_dir()):
        label = _LABELS.get(class_dir.name.lower())
        if label is None:
            raise FERUserError(
                f"{class_dir}: unknown class folder {class_dir.name!r}; expected one of "
                f"{', '.join(_LABELS)} (any case)"
            )
        class_dirs[class_dir] = label
    images: list[np.ndarray] = []
    labels: list[int] = []
    for class_dir, label in sorted(class_dirs.items(), key=lambda item: item[1]):
        for file in sorted(class_dir.iterdir()):
            if file.suffix.lower() in IMAGE_SUFFIXES:
                images.append(_read_image(file))
                labels.append(label)
    if not images:
        raise FERUserError(f"{folder}: no {'/'.join(IMAGE_SUFFIXES)} images in its class folders")
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def _read_image(file: Path) -> np.ndarray:
    """One 48x48 grayscale image; FER images are never resized, so another size is an error."""
    try:
        with Image.open(file) as image:
            pixels = np.asarray(image.convert("L"))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataFormatError(f"{file}: unreadable image ({exc})") from exc
    if pixels.shape != (IMAGE_SIZE, IMAGE_SIZE):
        width_height = f"{pixels.shape[1]}x{pixels.shape[0]}"
        raise DataFormatError(
            f"{file}: image is {width_height}, expected {IMAGE_SIZE}x{IMAGE_SIZE} (FER2013 size)"
        )
    return pixels
