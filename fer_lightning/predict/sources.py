"""Where predict's frames come from: a photo, a folder of photos and videos, a video file or a
webcam, each as a stream of ``Frame``s in order."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from fer_lightning.errors import FERUserError
from fer_lightning.images import opencv_log_silenced, read_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
# what a folder scan reads
SCANNED_SUFFIXES = IMAGE_SUFFIXES + VIDEO_SUFFIXES
DEFAULT_STREAM_FPS = 30.0  # for webcams that do not report a frame rate


@dataclass(frozen=True)
class Frame:
    """One image to look for faces in: a photo or a frame of a video or webcam stream."""

    source: str  # the file as given, or "webcam:<index>"
    index: int  # frame number within its stream; 0 for a photo
    image: np.ndarray  # BGR uint8 (H, W, 3)
    fps: float | None = None  # frame rate of the stream; None for a photo
    frame_count: int | None = None  # frames of its video file, as the file says; else None
    file_number: int = 1  # its file's place among the source's files, from 1
    file_count: int = 1  # files of the source


def parse_source(source: object) -> int | Path:
    """A webcam index (a whole number) or a path to an image, folder or video file; a whole
    number that names an existing file or folder (e.g. a folder ``2024``) is that path."""
    text = str(source)
    path = Path(text).expanduser()
    if text.isdigit() and not isinstance(source, bool) and not path.exists():
        return int(text)
    return path


def open_capture(source: int | Path) -> cv2.VideoCapture:
    """An opened ``cv2.VideoCapture`` of a webcam index or a video file."""
    with opencv_log_silenced():  # its failure reasons are native log lines; ours is one line
        capture = cv2.VideoCapture(source if isinstance(source, int) else str(source))
    if not capture.isOpened():
        capture.release()
        if isinstance(source, int):
            raise FERUserError(f"cannot open webcam {source} (no camera with that index?)")
        raise FERUserError(f"{source}: not a readable video (OpenCV cannot open it)")
    return capture


def capture_frames(
    capture: cv2.VideoCapture,
    name: str,
    max_frames: int | None = None,
    file_number: int = 1,
    file_count: int = 1,
) -> Iterator[Frame]:
    """The frames of an opened capture, a video file or a webcam alike; released at the end."""
    fps = capture.get(cv2.CAP_PROP_FPS)
    fps = fps if fps > 0 else DEFAULT_STREAM_FPS
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    if max_frames is not None and count > 0:
        count = min(count, max_frames)
    index = 0
    try:
        while max_frames is None or index < max_frames:
            ok, image = capture.read()
            if not ok:
                break
            yield Frame(name, index, image, fps, count or None, file_number, file_count)
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
        if file.is_file() and file.suffix.lower() in SCANNED_SUFFIXES
    )
    if not files:
        raise FERUserError(
            f"{path}: the folder holds no images ({', '.join(IMAGE_SUFFIXES)}) or videos "
            f"({', '.join(VIDEO_SUFFIXES)})"
        )
    return files


def input_frames(
    source: int | Path | Sequence[Path],
    max_frames: int | None = None,
    max_pixels: int | None = None,
) -> Iterator[Frame]:
    """The frames of a webcam, or of every photo and video of a file or folder (or of the
    ``source_files`` already listed), in order; photos over ``max_pixels`` are refused."""
    if isinstance(source, int):
        yield from capture_frames(open_capture(source), f"webcam:{source}", max_frames)
        return
    files = source_files(source) if isinstance(source, Path) else list(source)
    for number, file in enumerate(files, start=1):
        if file.suffix.lower() in VIDEO_SUFFIXES:
            capture = open_capture(file)
            yield from capture_frames(capture, str(file), max_frames, number, len(files))
        else:
            image = read_image(file, max_pixels=max_pixels)  # a file decodes to BGR
            yield Frame(str(file), 0, image, file_number=number, file_count=len(files))
