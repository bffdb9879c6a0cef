"""The predict task: every face of a photo, folder, video or webcam, classified through the Python
API (``EmotionRecognizer``), one JSON line per face, with progress on long sources."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import hydra
import numpy as np
from omegaconf import DictConfig

from fer_lightning.cli import exit_on_user_error, hydra_quoted, settings_in_one_line
from fer_lightning.config import CONF_DIR
from fer_lightning.errors import FERUserError, check_whole_number
from fer_lightning.faces import Box
from fer_lightning.files import write_output
from fer_lightning.predict.sinks import (
    AnnotatedWriter,
    FpsMeter,
    LiveWindow,
    draw_predictions,
    prediction_line,
)
from fer_lightning.predict.sources import (
    SCANNED_SUFFIXES,
    Frame,
    input_frames,
    parse_source,
    source_files,
)
from fer_lightning.recognizer import EmotionRecognizer, Face

log = logging.getLogger(__name__)

PREDICTIONS_SUFFIX = ".jsonl"
NO_FACE_HINT = (
    " (for images that are already face crops use detect=false; a smaller "
    "detector.min_neighbors or detector.min_size finds more, and less certain, faces)"
)


class FacePredictor:
    """Find faces in frames and classify them with a recognizer, batching faces across
    frames."""

    def __init__(
        self, recognizer: EmotionRecognizer, detect: bool = True, batch_size: int = 64
    ) -> None:
        """``detect=False`` takes every frame as one face crop (box = the whole image)."""
        check_whole_number("batch_size", batch_size, 1)
        self.recognizer = recognizer
        self.detect = detect
        self.batch_size = batch_size

    def predict_frames(
        self, frames: Iterable[Frame], flush_every_frame: bool = False
    ) -> Iterator[tuple[Frame, list[Face]]]:
        """Each frame (in order) with its faces. Frames are held back until ``batch_size``
        faces or frames are pending, unless ``flush_every_frame`` (live use)."""
        pending: list[tuple[Frame, list[Box], np.ndarray]] = []
        for frame in frames:
            boxes, crops = self.recognizer.locate(frame.image, self.detect)
            pending.append((frame, boxes, crops))
            pending_faces = sum(len(boxes) for _, boxes, _ in pending)
            if flush_every_frame or max(pending_faces, len(pending)) >= self.batch_size:
                yield from self._classify(pending)
                pending = []
        yield from self._classify(pending)

    def _classify(
        self, pending: list[tuple[Frame, list[Box], np.ndarray]]
    ) -> Iterator[tuple[Frame, list[Face]]]:
        if not pending:
            return
        crops = np.concatenate([frame_crops for _, _, frame_crops in pending])
        probabilities = self.recognizer.classify(crops, self.batch_size)
        offset = 0
        for frame, boxes, _ in pending:
            rows = probabilities[offset : offset + len(boxes)]
            offset += len(boxes)
            yield frame, self.recognizer.faces(boxes, rows)


@dataclass
class Tally:
    """Frames and faces seen so far, and the photos already reported faceless one by one."""

    frames: int = 0
    faces: int = 0
    faceless_photos: int = 0


class Progress:
    """Logs how far a folder or stream has come, at most once every ``every`` seconds, so a long
    run is never silent."""

    def __init__(self, every: float) -> None:
        if isinstance(every, bool) or not isinstance(every, int | float) or every < 0:
            raise FERUserError(f"progress_seconds must be a number >= 0, got {every!r}")
        self.every = every
        self._last = time.perf_counter()

    def update(self, frame: Frame, tally: Tally) -> None:
        """Log where ``frame`` stands, if the last message is ``every`` seconds old."""
        if frame.file_count == 1 and frame.fps is None:  # a single photo: nothing to follow
            return
        now = time.perf_counter()
        if now - self._last < self.every:
            return
        self._last = now
        where = [f"file {frame.file_number}/{frame.file_count}"] if frame.file_count > 1 else []
        if frame.fps is not None:
            total = f"/{frame.frame_count}" if frame.frame_count else ""
            where.append(f"{frame.source} frame {frame.index + 1}{total}")
        log.info("Progress: %s; %d face(s) so far", ", ".join(where), tally.faces)


def write_predictions(
    file: BinaryIO,
    results: Iterator[tuple[Frame, list[Face]]],
    tally: Tally,
    annotated: AnnotatedWriter | None = None,
    window: LiveWindow | None = None,
    live: bool = False,
    no_face_hint: str = "",
    progress: Progress | None = None,
) -> None:
    """Write one JSON line per face to ``file``, log it, and pass each frame to the annotated
    files and the live window. A live source ends normally on Ctrl+C or q in the window."""
    meter = FpsMeter()
    try:
        for frame, faces in results:
            tally.frames += 1
            tally.faces += len(faces)
            for face in faces:
                file.write((prediction_line(frame, face) + "\n").encode())
                log.info(
                    "%s frame %d box %s: %s (%.2f)",
                    frame.source,
                    frame.index,
                    list(face.box),
                    face.label,
                    face.probabilities[face.label],
                )
            if not faces and frame.fps is None:
                log.warning("%s: no face found%s", frame.source, no_face_hint)
                tally.faceless_photos += 1
            if progress is not None:
                progress.update(frame, tally)
            fps = meter.tick()
            if annotated is not None:
                annotated.write(frame, draw_predictions(frame.image, faces))
            if window is not None and not window.show(draw_predictions(frame.image, faces, fps)):
                break
    except KeyboardInterrupt:
        if not live:
            raise
        log.info("Stopped by the user")
    finally:
        results.close()


def check_output_suffix(output: Path) -> None:
    """The predictions file is named as what it holds: JSON lines."""
    if output.suffix.lower() != PREDICTIONS_SUFFIX:
        raise FERUserError(
            f"output={output}: predictions are written as JSON lines; name a "
            f"{PREDICTIONS_SUFFIX} file (e.g. output={output.with_suffix(PREDICTIONS_SUFFIX)})"
        )


def check_inputs_kept(
    output: Path, annotated_dir: Path | None, source: Path, files: list[Path]
) -> None:
    """Refuse outputs that would replace an input or be read as one: the predictions file as
    one of the source files or, with a scanned suffix, inside the source folder; annotated files
    inside the source folder, or a source file inside the annotated folder."""
    inputs = {os.path.realpath(file) for file in files}
    output_path = Path(os.path.realpath(output))
    if str(output_path) in inputs:
        raise FERUserError(
            f"output={output} is one of the sources; predictions never replace an input, name "
            "another file"
        )
    folder = Path(os.path.realpath(source)) if source.is_dir() else None
    if (
        folder is not None
        and output_path.is_relative_to(folder)
        and output_path.suffix.lower() in SCANNED_SUFFIXES
    ):
        raise FERUserError(
            f"output={output} lies in the source folder {source} with a suffix its scan reads; "
            "name a file elsewhere"
        )
    if annotated_dir is None:
        return
    annotated = Path(os.path.realpath(annotated_dir))
    if (folder is not None and annotated.is_relative_to(folder)) or any(
        Path(file).is_relative_to(annotated) for file in inputs
    ):
        raise FERUserError(
            f"annotate=true writes into {annotated_dir}, which overlaps the source {source}: "
            "annotated files would replace or join the inputs; run with hydra.run.dir=<a folder "
            "outside the source>"
        )


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
    annotated_dir = output_dir / "annotated" if cfg.annotate else None
    files = None if live else source_files(source)
    if files is not None:
        check_inputs_kept(output, annotated_dir, source, files)
    check_output_suffix(output)
    progress = Progress(cfg.progress_seconds)
    recognizer = EmotionRecognizer(
        cfg.ckpt_path,
        tta=cfg.tta,
        detector=hydra.utils.instantiate(cfg.detector) if cfg.detect else "default",
        device=cfg.device,
        threads=cfg.threads,
        margin=cfg.margin,
        max_pixels=cfg.max_pixels,
    )
    log.info("Classifying with %s, %s", cfg.ckpt_path, recognizer.model.classifier.describe())
    predictor = FacePredictor(recognizer, cfg.detect, cfg.batch_size)
    folder = source if not live and source.is_dir() else None
    annotated = AnnotatedWriter(annotated_dir, folder) if annotated_dir is not None else None
    window = LiveWindow() if cfg.show else None
    frames = input_frames(source if live else files, cfg.max_frames, recognizer.max_pixels)
    results = predictor.predict_frames(frames, flush_every_frame=live or window is not None)
    hint = NO_FACE_HINT if cfg.detect else ""
    tally = Tally()
    started = time.perf_counter()
    try:
        with annotated or nullcontext():
            write_output(
                output,
                lambda file: write_predictions(
                    file, results, tally, annotated, window, live, hint, progress
                ),
                "output",
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


@settings_in_one_line
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="predict")
def main(cfg: DictConfig) -> None:
    """Predict expressions on a photo, folder, video or webcam."""
    exit_on_user_error(predict, cfg)
