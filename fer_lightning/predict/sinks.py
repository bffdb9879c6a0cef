"""Where predict's results go: JSON lines (one per face), annotated photos and videos, and the
live window with labels and fps."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import cv2
import numpy as np

from fer_lightning.errors import FERUserError
from fer_lightning.files import write_output
from fer_lightning.predict.sources import Frame
from fer_lightning.recognizer import Face

ANNOTATED_VIDEO_SUFFIX = ".avi"  # MJPG in AVI: written by every OpenCV build, no codec licences
WINDOW_NAME = "fer-lightning (q or Esc quits)"
QUIT_KEYS = (ord("q"), 27)
FPS_SMOOTHING = 0.9  # weight of the previous estimate in the displayed fps


def prediction_line(frame: Frame, face: Face) -> str:
    """One line of predictions.jsonl: the frame's source and number, then ``face.to_dict()``."""
    return json.dumps({"source": frame.source, "frame": frame.index, **face.to_dict()})


def draw_predictions(
    image: np.ndarray, faces: Sequence[Face], fps: float | None = None
) -> np.ndarray:
    """A copy of ``image`` with each face's box and "Label 0.93", and the fps when given."""
    canvas = image.copy()
    thickness = max(1, round(min(canvas.shape[:2]) / 240))
    scale = max(0.35, min(canvas.shape[:2]) / 640)
    for face in faces:
        x, y, width, height = face.box
        text = f"{face.label} {face.probabilities[face.label]:.2f}"
        cv2.rectangle(canvas, (x, y), (x + width, y + height), (0, 255, 0), thickness)
        cv2.putText(
            canvas,
            text,
            (x, max(y - 4, 12)),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            (0, 255, 0),
            thickness,
            cv2.LINE_AA,
        )
    if fps is not None:
        cv2.putText(
            canvas,
            f"{fps:.1f} fps",
            (8, canvas.shape[0] - 8),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            (0, 255, 255),
            thickness,
            cv2.LINE_AA,
        )
    return canvas


class AnnotatedWriter:
    """Writes annotated photos as images and annotated streams as MJPG ``.avi`` videos into
    ``directory``, keeping the path below ``root`` (a source folder). Each file appears only when
    complete; a failed run leaves no partial video."""

    def __init__(self, directory: Path, root: Path | None = None) -> None:
        self.directory = directory
        self.root = root
        self._video: cv2.VideoWriter | None = None
        self._video_source: str | None = None
        self._video_paths: tuple[Path, Path] | None = None  # (temp file, final file)

    def target(self, frame: Frame) -> Path:
        """Where the annotated version of ``frame``'s source goes."""
        source = Path(frame.source)
        if frame.source.startswith("webcam:"):
            relative = Path(frame.source.replace(":", ""))
        elif self.root is not None and source.is_relative_to(self.root):
            relative = source.relative_to(self.root)
        else:
            relative = Path(source.name)
        if frame.fps is not None and relative.suffix.lower() != ANNOTATED_VIDEO_SUFFIX:
            # appended, not swapped: clip.mp4 and clip.mov must not both become clip.avi
            relative = relative.with_name(relative.name + ANNOTATED_VIDEO_SUFFIX)
        return self.directory / relative

    def write(self, frame: Frame, image: np.ndarray) -> None:
        """Save an annotated photo, or append an annotated frame to its source's video."""
        target = self.target(frame)
        if frame.fps is None:
            try:
                encoded = cv2.imencode(target.suffix, image)[1]
            except cv2.error as err:
                raise FERUserError(f"{target}: OpenCV cannot write this image type") from err
            write_output(target, lambda file: file.write(encoded.tobytes()))
            return
        if frame.source != self._video_source:
            self.finish()
            self._start_video(frame, target, image)
        self._video.write(image)

    def _start_video(self, frame: Frame, target: Path, image: np.ndarray) -> None:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise FERUserError(f"{target}: cannot write it ({err.strerror or err})") from err
        temp_path = target.with_name(f".tmp-{uuid.uuid4().hex}{ANNOTATED_VIDEO_SUFFIX}")
        size = (image.shape[1], image.shape[0])
        fourcc = cv2.VideoWriter_fourcc(*"MJPG")
        self._video = cv2.VideoWriter(str(temp_path), fourcc, frame.fps, size)
        self._video_source = frame.source
        self._video_paths = (temp_path, target)
        if not self._video.isOpened():
            self.discard()
            raise FERUserError(f"{target}: OpenCV cannot write an MJPG video here")

    def finish(self) -> None:
        """Close the current video and move it into place."""
        if self._video is not None:
            self._video.release()
            try:
                os.replace(*self._video_paths)
            except OSError as err:
                self._video_paths[0].unlink(missing_ok=True)
                target = self._video_paths[1]
                raise FERUserError(f"{target}: cannot write it ({err.strerror or err})") from err
        self._reset()

    def discard(self) -> None:
        """Close the current video and delete it."""
        if self._video is not None:
            self._video.release()
            self._video_paths[0].unlink(missing_ok=True)
        self._reset()

    def _reset(self) -> None:
        self._video, self._video_source, self._video_paths = None, None, None

    def __enter__(self) -> AnnotatedWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.finish()
        else:
            self.discard()


class LiveWindow:
    """The ``show=true`` window: annotated frames with the fps; q or Esc asks to stop."""

    def __init__(self) -> None:
        try:
            cv2.namedWindow(WINDOW_NAME, cv2.WINDOW_NORMAL)
        except cv2.error as err:
            raise FERUserError(
                "show=true needs OpenCV with GUI support, but this OpenCV has none "
                "(opencv-python-headless cannot open windows); install opencv-python of the same "
                "version instead, or use annotate=true to write annotated files"
            ) from err

    def show(self, image: np.ndarray) -> bool:
        """Display ``image``; False once the user asked to quit."""
        cv2.imshow(WINDOW_NAME, image)
        return cv2.waitKey(1) & 0xFF not in QUIT_KEYS

    def close(self) -> None:
        cv2.destroyWindow(WINDOW_NAME)


class FpsMeter:
    """Smoothed frames per second of the processing loop."""

    def __init__(self) -> None:
        self.fps: float | None = None
        self._last: float | None = None

    def tick(self) -> float | None:
        now = time.perf_counter()
        if self._last is not None and now > self._last:
            current = 1.0 / (now - self._last)
            self.fps = (
                current
                if self.fps is None
                else FPS_SMOOTHING * self.fps + (1 - FPS_SMOOTHING) * current
            )
        self._last = now
        return self.fps
