"""Predict facial expressions on photos, folders, video files and webcams:

    python -m fer_lightning.predict <image | folder | video | webcam index> ckpt_path=<model>

Faces are found with OpenCV's Haar cascade (``detect=false`` takes each image as one face crop),
cropped with a margin, turned gray, resized to 48x48 and classified in batches with the same
preprocessing as training's evaluation. Every face becomes one JSON line (source, frame, box,
label, probabilities) in ``predictions.jsonl``; ``annotate=true`` also writes annotated images and
videos, ``show=true`` a live window with labels and fps. Video files and webcams run through the
same frame loop.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import cv2
import hydra
import numpy as np
from omegaconf import DictConfig

from fer_lightning.classes import IMAGE_SIZE
from fer_lightning.cli import exit_on_user_error, hydra_quoted
from fer_lightning.config import CONF_DIR
from fer_lightning.errors import FERUserError, check_whole_number
from fer_lightning.files import write_atomically
from fer_lightning.inference import Classifier, load_classifier

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
ANNOTATED_VIDEO_SUFFIX = ".avi"  # MJPG in AVI: written by every OpenCV build, no codec licences
DEFAULT_STREAM_FPS = 30.0  # for webcams that do not report a frame rate
WINDOW_NAME = "fer-lightning (q or Esc quits)"
QUIT_KEYS = (ord("q"), 27)
FPS_SMOOTHING = 0.9  # weight of the previous estimate in the displayed fps
NO_FACE_HINT = (
    " (for images that are already face crops use detect=false; a smaller "
    "detector.min_neighbors or detector.min_size finds more, and less certain, faces)"
)

Box = tuple[int, int, int, int]  # x, y, width, height in pixels
FaceDetector = Callable[[np.ndarray], Sequence[Box]]  # gray uint8 image (H, W) -> face boxes


@contextmanager
def _opencv_log_silenced() -> Iterator[None]:
    """Mute OpenCV's native log (it prints on stderr) for the duration."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)


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
        with _opencv_log_silenced():
            self.cascade = cv2.CascadeClassifier(str(path))
        if self.cascade.empty():
            raise FERUserError(
                f"detector.cascade={cascade!r}: not a readable Haar cascade file (neither a path "
                f"nor a file in {cv2.data.haarcascades})"
            )
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_size = min_size

    def __call__(self, gray: np.ndarray) -> list[Box]:
        boxes = self.cascade.detectMultiScale(
            gray,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size),
        )
        # detectMultiScale runs in parallel and returns faces in no fixed order; left to right
        # makes the output reproducible
        return sorted(tuple(int(value) for value in box) for box in boxes)


@dataclass(frozen=True)
class Frame:
    """One image to look for faces in: a photo or a frame of a video or webcam stream."""

    source: str  # the file as given, or "webcam:<index>"
    index: int  # frame number within its stream; 0 for a photo
    image: np.ndarray  # BGR uint8 (H, W, 3)
    fps: float | None = None  # frame rate of the stream; None for a photo


@dataclass(frozen=True)
class FacePrediction:
    """The classification of one face; ``to_json`` is one line of predictions.jsonl."""

    source: str
    frame: int
    box: Box
    label: str
    probabilities: dict[str, float]

    def to_json(self) -> str:
        return json.dumps(asdict(self))


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


class FacePredictor:
    """Find faces in frames and classify them, batching faces across frames."""

    def __init__(
        self,
        classifier: Classifier,
        detector: FaceDetector | None,
        margin: float = 0.1,
        batch_size: int = 64,
    ) -> None:
        """``detector=None`` takes every frame as one face crop (box = the whole image)."""
        check_whole_number("batch_size", batch_size, 1)
        if margin < 0:
            raise FERUserError(f"margin must be >= 0, got {margin}")
        self.classifier = classifier
        self.detector = detector
        self.margin = margin
        self.batch_size = batch_size

    def faces(self, frame: Frame) -> tuple[list[Box], np.ndarray]:
        """The face boxes of a frame and their 48x48 gray crops (F, 48, 48)."""
        gray = cv2.cvtColor(frame.image, cv2.COLOR_BGR2GRAY)
        if self.detector is None:
            boxes = [(0, 0, gray.shape[1], gray.shape[0])]
        else:
            boxes = [tuple(int(value) for value in box) for box in self.detector(gray)]
        kept, crops = [], []
        for box in boxes:
            crop = crop_face(gray, box, self.margin)
            if crop is not None:
                kept.append(box)
                crops.append(crop)
        return kept, np.array(crops, dtype=np.uint8).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)

    def predict_frames(
        self, frames: Iterable[Frame], flush_every_frame: bool = False
    ) -> Iterator[tuple[Frame, list[FacePrediction]]]:
        """Each frame (in order) with the predictions for its faces. Frames are held back until
        ``batch_size`` faces or frames are pending, unless ``flush_every_frame`` (live use)."""
        pending: list[tuple[Frame, list[Box], np.ndarray]] = []
        for frame in frames:
            boxes, crops = self.faces(frame)
            pending.append((frame, boxes, crops))
            pending_faces = sum(len(boxes) for _, boxes, _ in pending)
            if flush_every_frame or max(pending_faces, len(pending)) >= self.batch_size:
                yield from self._classify(pending)
                pending = []
        yield from self._classify(pending)

    def _classify(
        self, pending: list[tuple[Frame, list[Box], np.ndarray]]
    ) -> Iterator[tuple[Frame, list[FacePrediction]]]:
        if not pending:
            return
        crops = np.concatenate([frame_crops for _, _, frame_crops in pending])
        probabilities = self.classifier.predict_proba(crops, self.batch_size)
        names = self.classifier.class_names
        offset = 0
        for frame, boxes, _ in pending:
            predictions = []
            for box, row in zip(boxes, probabilities[offset : offset + len(boxes)], strict=True):
                predictions.append(
                    FacePrediction(
                        source=frame.source,
                        frame=frame.index,
                        box=box,
                        label=names[int(row.argmax())],
                        probabilities={name: float(p) for name, p in zip(names, row, strict=True)},
                    )
                )
            offset += len(boxes)
            yield frame, predictions


# ---------------------------------------------------------------------------------- inputs


def parse_source(source: object) -> int | Path:
    """A webcam index (a whole number) or a path to an image, folder or video file; a whole
    number that names an existing file or folder (e.g. a folder ``2024``) is that path."""
    text = str(source)
    path = Path(text).expanduser()
    if text.isdigit() and not isinstance(source, bool) and not path.exists():
        return int(text)
    return path


def read_image(path: Path) -> np.ndarray:
    """A photo as BGR uint8; a file OpenCV cannot decode is a one-line error."""
    try:
        image = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_COLOR)
    except OSError as err:
        raise FERUserError(f"{path}: cannot read the file ({err.strerror})") from err
    if image is None:
        raise FERUserError(f"{path}: not a readable image (OpenCV cannot decode it)")
    return image


def open_capture(source: int | Path) -> cv2.VideoCapture:
    """An opened ``cv2.VideoCapture`` of a webcam index or a video file."""
    with _opencv_log_silenced():  # its failure reasons are native log lines; ours is one line
        capture = cv2.VideoCapture(source if isinstance(source, int) else str(source))
    if not capture.isOpened():
        capture.release()
        if isinstance(source, int):
            raise FERUserError(f"cannot open webcam {source} (no camera with that index?)")
        raise FERUserError(f"{source}: not a readable video (OpenCV cannot open it)")
    return capture


def capture_frames(
    capture: cv2.VideoCapture, name: str, max_frames: int | None = None
) -> Iterator[Frame]:
    """The frames of an opened capture, a video file or a webcam alike; released at the end."""
    fps = capture.get(cv2.CAP_PROP_FPS)
    fps = fps if fps > 0 else DEFAULT_STREAM_FPS
    index = 0
    try:
        while max_frames is None or index < max_frames:
            ok, image = capture.read()
            if not ok:
                break
            yield Frame(name, index, image, fps)
            index += 1
    finally:
        capture.release()
    if index == 0 and max_frames != 0:
        raise FERUserError(f"{name}: no frame could be read")


def source_files(path: Path) -> list[Path]:
    """The file itself, or the images and videos in a folder (recursively, sorted)."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FERUserError(f"source {path} does not exist")
    files = sorted(
        file
        for file in path.rglob("*")
        if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES
    )
    if not files:
        raise FERUserError(
            f"{path}: the folder holds no images ({', '.join(IMAGE_SUFFIXES)}) or videos "
            f"({', '.join(VIDEO_SUFFIXES)})"
        )
    return files


def input_frames(source: int | Path, max_frames: int | None = None) -> Iterator[Frame]:
    """The frames of a webcam, or of every photo and video of a file or folder, in order."""
    if isinstance(source, int):
        yield from capture_frames(open_capture(source), f"webcam:{source}", max_frames)
        return
    for file in source_files(source):
        if file.suffix.lower() in VIDEO_SUFFIXES:
            yield from capture_frames(open_capture(file), str(file), max_frames)
        else:
            yield Frame(str(file), 0, read_image(file))


# --------------------------------------------------------------------------------- outputs


def draw_predictions(
    image: np.ndarray, predictions: Sequence[FacePrediction], fps: float | None = None
) -> np.ndarray:
    """A copy of ``image`` with each face's box and "Label 0.93", and the fps when given."""
    canvas = image.copy()
    thickness = max(1, round(min(canvas.shape[:2]) / 240))
    scale = max(0.35, min(canvas.shape[:2]) / 640)
    for prediction in predictions:
        x, y, width, height = prediction.box
        text = f"{prediction.label} {prediction.probabilities[prediction.label]:.2f}"
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
            write_atomically(target, lambda file: file.write(encoded.tobytes()))
            return
        if frame.source != self._video_source:
            self.finish()
            self._start_video(frame, target, image)
        self._video.write(image)

    def _start_video(self, frame: Frame, target: Path, image: np.ndarray) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
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
            os.replace(*self._video_paths)
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


# ------------------------------------------------------------------------------- the task


@dataclass
class Tally:
    """Frames and faces seen so far, and the photos already reported faceless one by one."""

    frames: int = 0
    faces: int = 0
    faceless_photos: int = 0


def write_predictions(
    file: BinaryIO,
    results: Iterator[tuple[Frame, list[FacePrediction]]],
    tally: Tally,
    annotated: AnnotatedWriter | None = None,
    window: LiveWindow | None = None,
    live: bool = False,
    no_face_hint: str = "",
) -> None:
    """Write one JSON line per face to ``file``, log it, and pass each frame to the annotated
    files and the live window. A live source ends normally on Ctrl+C or q in the window."""
    meter = FpsMeter()
    try:
        for frame, predictions in results:
            tally.frames += 1
            tally.faces += len(predictions)
            for prediction in predictions:
                file.write((prediction.to_json() + "\n").encode())
                log.info(
                    "%s frame %d box %s: %s (%.2f)",
                    prediction.source,
                    prediction.frame,
                    list(prediction.box),
                    prediction.label,
                    prediction.probabilities[prediction.label],
                )
            if not predictions and frame.fps is None:
                log.warning("%s: no face found%s", frame.source, no_face_hint)
                tally.faceless_photos += 1
            fps = meter.tick()
            if annotated is not None:
                annotated.write(frame, draw_predictions(frame.image, predictions))
            if window is not None and not window.show(
                draw_predictions(frame.image, predictions, fps)
            ):
                break
    except KeyboardInterrupt:
        if not live:
            raise
        log.info("Stopped by the user")
    finally:
        results.close()


def predict(cfg: DictConfig) -> Path:
    """Classify every face of ``cfg.source``; write predictions.jsonl (and annotated files)."""
    source = parse_source(cfg.source)
    live = isinstance(source, int)
    if cfg.max_frames is not None:
        check_whole_number("max_frames (or null)", cfg.max_frames, 0)
    output_dir = Path(cfg.paths.output_dir)
    output = Path(cfg.output or output_dir / "predictions.jsonl").expanduser()
    if output.is_dir():
        raise FERUserError(
            f"output={output} is a folder; give the predictions file's path "
            f"(e.g. output={output / 'predictions.jsonl'})"
        )
    classifier = load_classifier(cfg.ckpt_path, cfg.tta)
    log.info("Classifying with %s, %s", cfg.ckpt_path, classifier.describe())
    detector = hydra.utils.instantiate(cfg.detector) if cfg.detect else None
    predictor = FacePredictor(classifier, detector, cfg.margin, cfg.batch_size)
    folder = source if isinstance(source, Path) and source.is_dir() else None
    annotated = AnnotatedWriter(output_dir / "annotated", folder) if cfg.annotate else None
    window = LiveWindow() if cfg.show else None
    results = predictor.predict_frames(
        input_frames(source, cfg.max_frames), flush_every_frame=live or window is not None
    )
    hint = NO_FACE_HINT if cfg.detect else ""
    tally = Tally()
    started = time.perf_counter()
    try:
        with annotated or nullcontext():
            write_atomically(
                output,
                lambda file: write_predictions(file, results, tally, annotated, window, live, hint),
            )
    finally:
        if window is not None:
            window.close()
    seconds = time.perf_counter() - started
    log.info(
        "%d face(s) in %d frame(s)/image(s) in %.1f s (%.1f frames/s); predictions: %s",
        tally.faces,
        tally.frames,
        seconds,
        tally.frames / seconds if seconds > 0 else 0.0,
        output,
    )
    if tally.faces == 0 and not tally.frames == tally.faceless_photos == 1:  # (said just above)
        log.warning("No face found in %s: the result is empty", cfg.source)
    return output


def source_argv(argv: list[str]) -> list[str]:
    """Let ``python -m fer_lightning.predict photo.jpg ckpt_path=...`` work.

    Hydra only takes ``key=value`` overrides, so a first argument with no ``=`` that is not an
    option (``-m``, ``--cfg``) becomes ``source=<it>``, quoted so that spaces, commas or brackets
    in a path stay literal. Paths containing ``=`` must be given as ``source=...``.
    """
    if len(argv) > 1 and "=" not in argv[1] and not argv[1].startswith("-"):
        return [argv[0], f"source={hydra_quoted(argv[1])}", *argv[2:]]
    return argv


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="predict")
def main(cfg: DictConfig) -> None:
    """Predict expressions on a photo, folder, video or webcam."""
    exit_on_user_error(predict, cfg)


if __name__ == "__main__":
    sys.argv = source_argv(sys.argv)
    main()
