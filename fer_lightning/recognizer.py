"""The Python API: find the faces in an image and classify their expressions.

    from fer_lightning import EmotionRecognizer

    recognizer = EmotionRecognizer("pretrained:vgg")
    for face in recognizer.analyze("photo.jpg"):
        print(face.box, face.label, face.probabilities[face.label])

Any model form loads (a Lightning ``.ckpt``, ``pretrained:<name>``, an exported ``.onnx`` or
TorchScript ``.pt`` file, or a list of checkpoints: their ensemble), with the preprocessing and
test-time augmentation that evaluation uses. Mistakes (a missing model, an unreadable image, a bad
option) raise ``fer_lightning.errors.FERUserError`` subclasses with a one-line message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from fer_lightning.classes import IMAGE_SIZE
from fer_lightning.errors import FERUserError, ImageError, check_whole_number
from fer_lightning.faces import Box, FaceDetector, crop_faces, detect_faces, make_detector
from fer_lightning.images import ImageInput, read_image, to_gray
from fer_lightning.loader import LoadedModel, ModelSource, load_model

DEFAULT_MARGIN = 0.1  # each face box grows by this fraction of its size on every side
DEFAULT_BATCH_SIZE = 64  # faces per forward pass


@dataclass(frozen=True)
class Face:
    """One face: where it is and how it was classified."""

    box: Box  # x, y, width, height in pixels of the image
    label: str  # the most probable class
    probabilities: dict[str, float]  # class name -> probability, in the model's class order

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: ``{"box": [x, y, w, h], "label": ..., "probabilities": {...}}``."""
        return {
            "box": list(self.box),
            "label": self.label,
            "probabilities": dict(self.probabilities),
        }


class EmotionRecognizer:
    """A facial-expression classifier with a face detector in front of it."""

    def __init__(
        self,
        model: ModelSource,
        *,
        tta: str | None = None,
        detector: str | FaceDetector = "default",
        device: str = "cpu",
        threads: int | None = None,
        margin: float = DEFAULT_MARGIN,
        max_pixels: int | None = None,
    ) -> None:
        """Load ``model``: a path to a ``.ckpt``, ``.onnx`` or TorchScript ``.pt`` file,
        ``"pretrained:<name>"``, or a list of checkpoints (an ensemble).

        ``tta`` is the test-time augmentation (``"none"``, ``"flip"``, ``"tencrop"``; None: the
        one the model carries). ``detector`` names one of ``fer_lightning.faces.DETECTORS``
        (``"default"`` = ``"blazeface"``, ``"haar"``) or is a callable from a BGR or gray image to
        boxes. ``device`` runs
        the model (``"cpu"``, ``"cuda"``, ``"cuda:1"``). ``threads`` sets the CPU threads of
        torch, onnxruntime and OpenCV (torch's and OpenCV's for the whole process); None leaves
        their defaults. ``margin`` grows each face box before cropping; images over
        ``max_pixels`` pixels (None: ``fer_lightning.images.MAX_PIXELS``) are refused.
        """
        if threads is not None:
            check_whole_number("threads", threads, 1)
            torch.set_num_threads(threads)
            cv2.setNumThreads(threads)
        if isinstance(margin, bool) or not isinstance(margin, int | float) or margin < 0:
            raise FERUserError(f"margin must be >= 0, got {margin!r}")
        if max_pixels is not None:
            check_whole_number("max_pixels", max_pixels, 1)
        self.model: LoadedModel = load_model(model, tta=tta, device=device, threads=threads)
        self.detector: FaceDetector = (
            make_detector(detector) if isinstance(detector, str) else detector
        )
        self.margin = float(margin)
        self.max_pixels = max_pixels

    @property
    def class_names(self) -> list[str]:
        """The classes the model tells apart, in the order of its probabilities."""
        return list(self.model.class_names)

    @property
    def tta(self) -> str:
        """The test-time augmentation applied; for an ensemble whose members apply different
        ones, theirs joined by ``+`` in member order."""
        modes = self.model.tta_modes
        return modes[0] if len(set(modes)) == 1 else "+".join(modes)

    def analyze(self, image: ImageInput, detect: bool = True, *, rgb: bool = False) -> list[Face]:
        """The faces in ``image``, left to right, each classified; ``[]`` when it shows none.

        ``image`` is a file path, encoded bytes (PNG, JPEG, ...), a uint8 numpy array (gray, or
        BGR as OpenCV reads it; RGB with ``rgb=True``) or a PIL image. ``detect=False`` takes the
        whole image as one face crop.
        """
        boxes, crops = self.locate(read_image(image, rgb=rgb, max_pixels=self.max_pixels), detect)
        return self.faces(boxes, self.classify(crops))

    def locate(self, image: np.ndarray, detect: bool = True) -> tuple[list[Box], np.ndarray]:
        """The face boxes of a decoded gray or BGR uint8 image and their 48x48 gray crops
        (F, 48, 48); ``detect=False``: the whole image as one face."""
        gray = to_gray(image)
        if detect:
            boxes = detect_faces(self.detector, image)  # colour, where given, finds more faces
        else:
            boxes = [(0, 0, gray.shape[1], gray.shape[0])]
        return crop_faces(gray, boxes, self.margin)

    def classify(self, crops: np.ndarray, batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
        """Class probabilities (N, K) of uint8 gray face crops (N, 48, 48), ``batch_size`` per
        forward pass; no detection."""
        check_whole_number("batch_size", batch_size, 1)
        crops = np.asarray(crops)
        if crops.dtype != np.uint8 or crops.ndim != 3 or crops.shape[1:] != (IMAGE_SIZE,) * 2:
            raise ImageError(
                f"face crops must be uint8 (N, {IMAGE_SIZE}, {IMAGE_SIZE}), got "
                f"{crops.dtype} {crops.shape}"
            )
        return self.model.classifier.predict_proba(crops, batch_size)

    def faces(self, boxes: Sequence[Box], probabilities: np.ndarray) -> list[Face]:
        """``Face``s of boxes and their rows of class probabilities."""
        names = self.model.class_names
        return [
            Face(
                box=tuple(int(value) for value in box),
                label=names[int(row.argmax())],
                probabilities={name: float(p) for name, p in zip(names, row, strict=True)},
            )
            for box, row in zip(boxes, probabilities, strict=True)
        ]

    def __repr__(self) -> str:
        return f"EmotionRecognizer({self.model.classifier.describe()}, classes={self.class_names})"
