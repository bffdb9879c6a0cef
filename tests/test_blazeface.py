"""The default face detector, BlazeFace, on real photos shipped by installed packages."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import matplotlib
import numpy as np
import pytest
from skimage import data as skimage_data

from fer_lightning.blazeface import WEIGHTS, WEIGHTS_SHA256, BlazeFaceDetector, weighted_suppression
from fer_lightning.errors import FERUserError
from fer_lightning.faces import DEFAULT_DETECTOR, DETECTORS, HaarFaceDetector, make_detector


@pytest.fixture(scope="module")
def detector() -> BlazeFaceDetector:
    return BlazeFaceDetector()


def grace_hopper() -> np.ndarray:
    """matplotlib's sample photo of Grace Hopper (BGR, one face)."""
    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return cv2.imread(str(path))


def centre(box) -> tuple[float, float]:
    return box[0] + box[2] / 2, box[1] + box[3] / 2


def test_it_is_the_default_and_haar_stays_selectable():
    assert DEFAULT_DETECTOR == "blazeface" and isinstance(make_detector(), BlazeFaceDetector)
    assert isinstance(make_detector("haar"), HaarFaceDetector) and "haar" in DETECTORS


def test_the_shipped_weights_are_the_registry_file():
    assert hashlib.sha256(WEIGHTS.read_bytes()).hexdigest() == WEIGHTS_SHA256
    assert "Apache License" in WEIGHTS.with_name("LICENSE").read_text()


def test_one_face_in_each_real_photo_where_it_is(detector):
    astronaut = cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2BGR)
    # the astronaut's face spans about x 175-275, y 75-175; Grace Hopper's x 170-365, y 140-335
    for image, (x, y) in ((astronaut, (225, 125)), (grace_hopper(), (267, 237))):
        [box] = detector(image)
        assert np.hypot(*np.subtract(centre(box), (x, y))) < 25
        assert 0.6 < box[2] / (100 if image is astronaut else 195) < 1.4


def test_a_mirrored_photo_gives_the_mirrored_box(detector):
    photo = grace_hopper()
    [box] = detector(photo)
    [mirrored] = detector(cv2.flip(photo, 1))
    assert abs(centre(mirrored)[0] - (photo.shape[1] - centre(box)[0])) < 6
    assert abs(centre(mirrored)[1] - centre(box)[1]) < 6


def test_boxes_stay_inside_the_image_and_are_ordered_left_to_right(detector):
    photo = grace_hopper()
    pair = np.hstack([photo, cv2.flip(photo, 1)])
    boxes = detector(pair)
    assert len(boxes) == 2 and boxes == sorted(boxes)
    corner = photo[100:400, 150:400]  # the face cut by the image edge
    for x, y, width, height in detector(corner) + boxes:
        assert x >= 0 and y >= 0 and width > 0 and height > 0
    for x, y, width, height in detector(corner):
        assert x + width <= corner.shape[1] and y + height <= corner.shape[0]


def test_no_face_in_plain_or_faceless_images(detector):
    assert detector(np.full((480, 640, 3), 128, np.uint8)) == []
    assert detector(np.zeros((10, 300), np.uint8)) == []  # gray and very wide
    assert detector(cv2.cvtColor(skimage_data.rocket(), cv2.COLOR_RGB2BGR)) == []


def test_weighted_suppression_merges_overlapping_boxes_by_score():
    boxes = np.array([[0, 0, 10, 10], [2, 0, 10, 10], [50, 50, 10, 10]], np.float32)
    merged = weighted_suppression(boxes, np.array([0.9, 0.3, 0.8]), 0.3)
    assert [score for _, score in merged] == [0.9, 0.8]
    np.testing.assert_allclose(merged[0][0], [0.5, 0, 10, 10])  # (0*0.9 + 2*0.3) / 1.2
    np.testing.assert_allclose(merged[1][0], [50, 50, 10, 10])


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"min_score": 1.5}, "detector.min_score must be a number between 0 and 1, got 1.5"),
        ({"min_suppression_iou": True}, "detector.min_suppression_iou must be a number"),
        ({"threads": 0}, "detector.threads (or null) must be a whole number >= 1, got 0"),
    ],
)
def test_bad_settings_are_one_line_errors(settings, message):
    with pytest.raises(FERUserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        BlazeFaceDetector(**settings)
