"""Finding faces in an image and cropping them as the classifiers take them (48x48 gray).

Detectors are callables from a BGR or gray uint8 image to face boxes (x, y, width, height),
registered by name in ``DETECTORS``; ``"default"`` names ``DEFAULT_DETECTOR``, MediaPipe's
BlazeFace (``fer_lightning.blazeface``), which finds more faces than OpenCV's Haar cascade with
fewer false ones, in a fraction of its time (docs/app.md). Detection runs on a copy whose
longer side is at most ``DETECTION_MAX_SIDE`` pixels (its boxes mapped back), so a large photo
costs no more than a screen-sized one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from fer_lightning.blazeface import BlazeFaceDetector
from fer_lightning.classes import IMAGE_SIZE
from fer_lightning.errors import FERUserError, check_whole_number
from fer_lightning.images import opencv_log_silenced

Box = tuple[int, int, int, int]  # x, y, width, height in pixels
# BGR (H, W, 3) or gray (H, W) uint8 image -> face boxes
FaceDetector = Callable[[np.ndarray], Sequence[Box]]
# the longer side of the image detectors see; larger images are scaled down to it
DETECTION_MAX_SIDE = 1280


class HaarFaceDetector:
    """OpenCV's Haar-cascade face detector (the cascade files ship with opencv-python 4.x)."""

    def __init__(
        self,
        cascade: str = "haarcascade_frontalface_default.xml",
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size: int = 30,
    ) -> None:
        """``cascade`` is a file path or the name of one of ``cv2.data.haarcascades``; the other
        settings are checked here, since OpenCV would reject them only on the first frame, with
        an assertion message."""
        if (
            isinstance(scale_factor, bool)
            or not isinstance(scale_factor, int | float)
            or not (scale_factor > 1)
        ):
            raise FERUserError(f"detector.scale_factor must be a number > 1, got {scale_factor!r}")
        check_whole_number("detector.min_neighbors", min_neighbors, 0)
        check_whole_number("detector.min_size", min_size, 1)
        path = Path(cascade).expanduser()
        if not path.is_file():
            path = Path(cv2.data.haarcascades) / cascade
        with opencv_log_silenced():
            self.cascade = cv2.CascadeClassifier(str(path))
        if self.cascade.empty():
            raise FERUserError(
                f"detector.cascade={cascade!r}: not a readable Haar cascade file (neither a path "
                f"nor a file in {cv2.data.haarcascades})"
            )
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_size = min_size

    def __call__(self, image: np.ndarray) -> list[Box]:
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
        boxes = self.cascade.detectMultiScale(
            gray,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size),
        )
        # detectMultiScale runs in parallel and returns faces in no fixed order; left to right
        # makes the output reproducible
        return sorted(tuple(int(value) for value in box) for box in boxes)


# detector name -> factory (its keyword arguments are the detector's settings)
DETECTORS: dict[str, Callable[..., FaceDetector]] = {
    "blazeface": BlazeFaceDetector,
    "haar": HaarFaceDetector,
}
DEFAULT_DETECTOR = "blazeface"


def make_detector(name: str = "default", **settings: object) -> FaceDetector:
    """The detector registered as ``name`` in ``DETECTORS`` (``"default"``: ``DEFAULT_DETECTOR``),
    made with ``settings``."""
    factory = DETECTORS.get(DEFAULT_DETECTOR if name == "default" else name)
    if factory is None:
        names = ", ".join(["default", *DETECTORS])
        raise FERUserError(f"detector={name!r} is not one of {names}")
    return factory(**settings)


def detect_faces(
    detector: FaceDetector, image: np.ndarray, max_side: int = DETECTION_MAX_SIDE
) -> list[Box]:
    """The boxes ``detector`` finds in ``image`` (BGR or gray), run on a copy scaled down to at
    most ``max_side`` pixels on its longer side; boxes are in ``image``'s pixels, inside it."""
    height, width = image.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    boxes = []
    for box in detector(image):
        x, y, box_width, box_height = (int(value) for value in box)
        if scale < 1.0:
            left, top = round(x / scale), round(y / scale)
            right = min(round((x + box_width) / scale), width)
            bottom = min(round((y + box_height) / scale), height)
            x, y, box_width, box_height = left, top, right - left, bottom - top
        boxes.append((x, y, box_width, box_height))
    return boxes


def crop_face(gray: np.ndarray, box: Box, margin: float) -> np.ndarray | None:
    """The box grown by ``margin`` (a fraction of its size, each side), clipped to the image and
    resized to 48x48; None when nothing of it lies inside the image."""
    x, y, width, height = box
    grow_x, grow_y = round(width * margin), round(height * margin)
    left, top = max(x - grow_x, 0), max(y - grow_y, 0)
    right = min(x + width + grow_x, gray.shape[1])
    bottom = min(y + height + grow_y, gray.shape[0])
    if right <= left or bottom <= top:
        return None
    crop = gray[top:bottom, left:right]
    if crop.shape != (IMAGE_SIZE, IMAGE_SIZE):
        crop = cv2.resize(crop, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_AREA)
    return crop


def crop_faces(
    gray: np.ndarray, boxes: Sequence[Box], margin: float
) -> tuple[list[Box], np.ndarray]:
    """The boxes that lie (partly) inside ``gray`` and their 48x48 crops (F, 48, 48)."""
    kept, crops = [], []
    for box in boxes:
        crop = crop_face(gray, box, margin)
        if crop is not None:
            kept.append(box)
            crops.append(crop)
    return kept, np.array(crops, dtype=np.uint8).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
