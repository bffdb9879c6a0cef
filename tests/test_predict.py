"""predict: faces found by the real Haar cascade and by an injected detector, photos, folders,
videos (the frame loop webcams use too), detect=false crops equal to evaluate's path, and
one-line errors."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser

from fer_lightning.checkpoint import (
    datamodule_from_checkpoint,
    read_checkpoint,
    system_from_checkpoint,
)
from fer_lightning.classes import EMOTIONS
from fer_lightning.config import compose_config
from fer_lightning.data import load_fer2013_csv
from fer_lightning.errors import FERUserError
from fer_lightning.faces import HaarFaceDetector, crop_face
from fer_lightning.inference import TorchClassifier
from fer_lightning.loader import load_model
from fer_lightning.predict import predict
from fer_lightning.predict.sinks import AnnotatedWriter, LiveWindow, prediction_line
from fer_lightning.predict.sources import Frame, open_capture, parse_source, source_files
from fer_lightning.predict.task import FacePredictor, Tally, source_argv, write_predictions
from fer_lightning.recognizer import EmotionRecognizer
from tests.conftest import png_header_claiming, run_module

FACE_SIDE = 160  # synthetic 48x48 faces are upscaled to this in generated scenes
FACE_TOP = 40
FACE_LEFTS = (40, 280)
SCENE_SHAPE = (240, 480)


@pytest.fixture(scope="module")
def big_faces(tiny_csv) -> list[np.ndarray]:
    """Two synthetic faces that OpenCV's real Haar cascade finds when each is alone in a scene
    (most synthetic faces are found; the cascade was trained on photos, so not every one is)."""
    detector = HaarFaceDetector()
    found = [
        face
        for face in load_fer2013_csv(tiny_csv)["train"].images[:20]
        if len(detector(scene([face]))) == 1
    ]
    assert len(found) >= 2
    return found[:2]


def scene(faces: list[np.ndarray], shift: int = 0) -> np.ndarray:
    """A gray 240x480 picture with the faces upscaled side by side, moved right by `shift`."""
    canvas = np.full(SCENE_SHAPE, 110, np.uint8)
    for face, left in zip(faces, FACE_LEFTS, strict=False):
        big = cv2.resize(face, (FACE_SIDE, FACE_SIDE), interpolation=cv2.INTER_CUBIC)
        canvas[FACE_TOP : FACE_TOP + FACE_SIDE, left + shift : left + shift + FACE_SIDE] = big
    return canvas


def overlap(box: list[int], other: tuple[int, int, int, int]) -> float:
    """Intersection over union of two (x, y, width, height) boxes."""
    (x, y, w, h), (u, v, p, q) = box, other
    width = max(0, min(x + w, u + p) - max(x, u))
    height = max(0, min(y + h, v + q) - max(y, v))
    intersection = width * height
    return intersection / (w * h + p * q - intersection)


def predict_cfg(run_dir: Path, source: Path | str, trained_checkpoint: Path, *overrides: str):
    """The predict config; the scenes here are of synthetic faces picked as ones the Haar cascade
    finds, so it detects with that (the default detector's photos are in test_blazeface.py)."""
    overrides = ("detector=haar", *overrides)
    return compose_config(
        "predict", run_dir, [f"source={source}", f"ckpt_path={trained_checkpoint}", *overrides]
    )


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_valid_prediction(line: dict) -> None:
    assert set(line) == {"source", "frame", "box", "label", "probabilities"}
    assert list(line["probabilities"]) == list(EMOTIONS)
    assert sum(line["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert line["label"] == max(line["probabilities"], key=line["probabilities"].get)


def test_real_cascade_finds_both_faces_in_a_photo(trained_checkpoint, big_faces, tmp_path):
    photo = tmp_path / "two faces.png"
    cv2.imwrite(str(photo), scene(big_faces))
    output = predict(predict_cfg(tmp_path / "run", photo, trained_checkpoint, "annotate=true"))

    lines = read_lines(output)
    assert len(lines) == 2
    regions = [(left, FACE_TOP, FACE_SIDE, FACE_SIDE) for left in FACE_LEFTS]
    for line in sorted(lines, key=lambda line: line["box"][0]):
        assert_valid_prediction(line)
        assert line["source"] == str(photo) and line["frame"] == 0
    boxes = sorted(line["box"] for line in lines)
    assert [max(overlap(box, region) for box in boxes) > 0.5 for region in regions] == [True] * 2
    annotated = cv2.imread(str(tmp_path / "run" / "annotated" / photo.name))
    assert annotated.shape == (*SCENE_SHAPE, 3)
    assert not np.array_equal(annotated, cv2.imread(str(photo)))  # boxes and labels drawn


def test_injected_detector_boxes_are_cropped_and_classified(trained_checkpoint, tiny_csv):
    faces = load_fer2013_csv(tiny_csv)["test"].images[:2]
    image = np.zeros((100, 200), np.uint8)
    boxes = [(10, 20, 48, 48), (120, 40, 48, 48)]
    for face, (x, y, width, height) in zip(faces, boxes, strict=True):
        image[y : y + height, x : x + width] = face
    seen_shapes = []

    def two_faces(image: np.ndarray) -> list[tuple[int, int, int, int]]:
        seen_shapes.append(image.shape)
        return boxes

    recognizer = EmotionRecognizer(trained_checkpoint, detector=two_faces, margin=0.0)
    predictor = FacePredictor(recognizer)
    frame = Frame("scene.png", 0, cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))
    [(returned_frame, predictions)] = list(predictor.predict_frames([frame]))

    assert returned_frame is frame and seen_shapes == [(100, 200, 3)]  # detectors see colour
    lines = [json.loads(prediction_line(frame, face)) for face in predictions]
    assert [line["box"] for line in lines] == [list(box) for box in boxes]
    expected = recognizer.classify(faces)  # margin 0: the crops are the faces exactly
    for line, row in zip(lines, expected, strict=True):
        assert_valid_prediction(line)
        np.testing.assert_allclose(list(line["probabilities"].values()), row, atol=1e-6)


def test_out_of_range_predict_options_are_user_errors(tmp_path):
    """batch_size < 1 or fractional, a negative margin, max_frames < 0 and detector settings
    OpenCV would reject on the first frame are refused with the value named; max_frames before
    the checkpoint is even read."""
    recognizer = EmotionRecognizer("pretrained:baseline")
    for batch_size in (0, 2.5):
        expected = f"batch_size must be a whole number >= 1, got {batch_size}"
        with pytest.raises(FERUserError, match=expected):
            FacePredictor(recognizer, detect=False, batch_size=batch_size)
    with pytest.raises(FERUserError, match=r"margin must be >= 0, got -0\.1"):
        EmotionRecognizer("pretrained:baseline", margin=-0.1)
    cfg = predict_cfg(tmp_path / "run", tmp_path, tmp_path / "absent.ckpt", "max_frames=-1")
    expected = r"max_frames \(or null\) must be a whole number >= 0, got -1"
    with pytest.raises(FERUserError, match=expected):
        predict(cfg)
    for setting, value, expected in [
        ("scale_factor", 1.0, "a number > 1"),
        ("min_neighbors", -1, "a whole number >= 0"),
        ("min_size", 2.5, "a whole number >= 1"),
    ]:
        message = f"detector.{setting} must be {expected}, got {value}"
        with pytest.raises(FERUserError, match=message):
            HaarFaceDetector(**{setting: value})


def test_classifier_takes_only_uint8_48x48_faces():
    """Classifier.preprocess refuses faces that are not uint8 (N, 48, 48), naming what it got,
    rather than normalising them as if they were 0..255 gray levels."""
    classifier = TorchClassifier(torch.nn.Flatten(), EMOTIONS, in_channels=1)
    with pytest.raises(ValueError, match=r"faces must be uint8 \(N, 48, 48\), got float32"):
        classifier.preprocess(np.zeros((2, 48, 48), np.float32))
    with pytest.raises(ValueError, match=r"got uint8 \(48, 48\)"):
        classifier.preprocess(np.zeros((48, 48), np.uint8))
    faces = np.full((2, 48, 48), 255, np.uint8)
    np.testing.assert_array_equal(classifier.preprocess(faces), np.ones((2, 1, 48, 48)))


def test_margin_grows_the_box_and_stays_inside_the_image():
    gray = np.arange(100 * 120, dtype=np.uint32).reshape(100, 120).astype(np.uint8)
    crop = crop_face(gray, (0, 10, 40, 40), margin=0.25)  # 10 px each side, clipped at x=0
    expected = cv2.resize(gray[0:60, 0:50], (48, 48), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(crop, expected)
    assert crop_face(gray, (200, 200, 10, 10), margin=0.1) is None


def test_blank_photo_gives_an_empty_result_and_a_message(trained_checkpoint, tmp_path, caplog):
    photo = tmp_path / "wall.jpg"
    cv2.imwrite(str(photo), np.full((200, 300, 3), 128, np.uint8))
    with caplog.at_level(logging.INFO, logger="fer_lightning.predict"):
        output = predict(predict_cfg(tmp_path / "run", photo, trained_checkpoint))
    assert output.read_text() == ""
    assert f"{photo}: no face found" in caplog.text and "detect=false" in caplog.text
    assert "the result is empty" not in caplog.text  # one photo: said once, not twice
    caplog.clear()
    shutil.copy(photo, tmp_path / "wall2.jpg")
    folder = tmp_path / "walls"
    folder.mkdir()
    for name in ("wall.jpg", "wall2.jpg"):
        shutil.move(tmp_path / name, folder / name)
    with caplog.at_level(logging.INFO, logger="fer_lightning.predict"):
        predict(predict_cfg(tmp_path / "run2", folder, trained_checkpoint))
    assert caplog.text.count("no face found") == 2
    assert f"No face found in {folder}: the result is empty" in caplog.text


def test_unreadable_photo_is_a_one_line_error(trained_checkpoint, tmp_path):
    photo = tmp_path / "broken.jpg"
    photo.write_bytes(b"this is not a jpeg")
    result = run_module(
        "fer_lightning.predict",
        str(photo),  # the positional form
        f"ckpt_path={trained_checkpoint}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: {photo}: not a readable image (OpenCV cannot decode it)"
    ]
    assert not (tmp_path / "run" / "predictions.jsonl").exists()


def test_video_frames_are_predicted_in_order_and_annotated(trained_checkpoint, big_faces, tmp_path):
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, SCENE_SHAPE[::-1])
    for shift in range(0, 20, 4):
        writer.write(cv2.cvtColor(scene(big_faces, shift), cv2.COLOR_GRAY2BGR))
    writer.release()

    output = predict(predict_cfg(tmp_path / "run", video, trained_checkpoint, "annotate=true"))
    lines = read_lines(output)
    frames = [line["frame"] for line in lines]
    # JPEG compression moves pixels a little, so the cascade may miss a face in some frame
    assert frames == sorted(frames) and set(frames) == set(range(5)) and len(frames) <= 10
    for line in lines:
        assert_valid_prediction(line)
        assert line["source"] == str(video)
        shift = 4 * line["frame"]
        regions = [(left + shift, FACE_TOP, FACE_SIDE, FACE_SIDE) for left in FACE_LEFTS]
        assert max(overlap(line["box"], region) for region in regions) > 0.5
    annotated = cv2.VideoCapture(str(tmp_path / "run" / "annotated" / "clip.avi"))
    assert int(annotated.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    assert (annotated.get(cv2.CAP_PROP_FRAME_HEIGHT), annotated.get(cv2.CAP_PROP_FRAME_WIDTH)) == (
        SCENE_SHAPE
    )
    annotated.release()

    first_two = predict(predict_cfg(tmp_path / "short", video, trained_checkpoint, "max_frames=2"))
    expected = [line for line in lines if line["frame"] < 2]
    for line, reference in zip(read_lines(first_two), expected, strict=True):
        # batches of another size may round the last digits differently
        assert line["probabilities"] == pytest.approx(reference.pop("probabilities"), abs=1e-6)
        assert {key: line[key] for key in reference} == reference


@pytest.mark.parametrize("tta", ["none", "tencrop"])
def test_folder_of_crops_with_detect_false_equals_the_evaluate_path(
    trained_checkpoint, tiny_csv, tmp_path, tta
):
    test_split = load_fer2013_csv(tiny_csv)["test"]
    folder = tmp_path / "crops"
    for index, (image, label) in enumerate(zip(test_split.images, test_split.labels, strict=True)):
        (folder / EMOTIONS[label]).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / EMOTIONS[label] / f"{index:04d}.png"), image)
    cfg = predict_cfg(
        tmp_path / "run", folder, trained_checkpoint, "detect=false", "batch_size=16", f"tta={tta}"
    )
    by_index = {int(Path(line["source"]).stem): line for line in read_lines(predict(cfg))}

    stored = read_checkpoint(trained_checkpoint)
    system = system_from_checkpoint(stored, trained_checkpoint)
    system.tta = tta  # as evaluate.py tta=... sets it
    datamodule = datamodule_from_checkpoint(stored, {"csv_path": str(tiny_csv)})
    with torch.no_grad():
        reference = torch.cat(
            [
                system.predict_step(batch, index)
                for index, batch in enumerate(datamodule.dataloader("test"))
            ]
        ).numpy()

    assert sorted(by_index) == list(range(len(test_split.labels)))
    for index, expected in enumerate(reference):
        line = by_index[index]
        assert line["box"] == [0, 0, 48, 48] and line["frame"] == 0
        assert line["label"] == EMOTIONS[int(expected.argmax())]
        np.testing.assert_allclose(list(line["probabilities"].values()), expected, atol=1e-5)


def test_ctrl_c_ends_a_live_stream_normally_but_not_a_file(trained_checkpoint):
    predictor = FacePredictor(EmotionRecognizer(trained_checkpoint), detect=False)
    camera_frame = Frame("webcam:0", 0, np.full((48, 48, 3), 90, np.uint8), fps=30.0)

    def frames_until_ctrl_c():
        yield camera_frame
        raise KeyboardInterrupt

    file, tally = io.BytesIO(), Tally()
    live_results = predictor.predict_frames(frames_until_ctrl_c(), flush_every_frame=True)
    write_predictions(file, live_results, tally, live=True)
    assert tally == Tally(frames=1, faces=1)
    assert json.loads(file.getvalue())["source"] == "webcam:0"
    with pytest.raises(KeyboardInterrupt):
        write_predictions(io.BytesIO(), predictor.predict_frames(frames_until_ctrl_c()), Tally())


def test_a_bare_first_argument_becomes_the_source():
    parser = OverridesParser.create()
    for path in ("photo.jpg", "my photo, 2.jpg", "it's[1].png", "C:\\faces\\", "~/a b/c.mp4"):
        argv = source_argv(["predict", path, "ckpt_path=m.onnx"])
        assert argv[2] == "ckpt_path=m.onnx"
        assert parser.parse_override(argv[1]).value() == path
    for argv in (["predict", "source=x=1.jpg"], ["predict", "-m", "source=a,b"], ["predict"]):
        assert source_argv(argv) == argv


def test_sources_are_webcam_indices_or_paths(tmp_path, monkeypatch):
    assert parse_source(0) == 0 and parse_source("1") == 1
    assert parse_source("clip.mp4") == Path("clip.mp4")
    # a whole number naming an existing folder is that folder (Hydra passes `2024` as an int)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "2024").mkdir()
    assert parse_source(2024) == parse_source("2024") == Path("2024")
    assert parse_source(2025) == 2025
    with pytest.raises(FERUserError, match="does not exist"):
        source_files(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FERUserError, match="holds no images"):
        source_files(tmp_path / "empty")
    with pytest.raises(FERUserError, match="cannot open webcam 99"):
        open_capture(99)


@pytest.mark.skipif(
    not re.search(r"GUI:\s+NONE", cv2.getBuildInformation()), reason="this OpenCV can open windows"
)
def test_show_without_gui_support_says_what_to_install():
    with pytest.raises(FERUserError, match="needs OpenCV with GUI support"):
        LiveWindow()


def test_shipped_weights_load_by_name(trained_checkpoint, tiny_csv, tmp_path, monkeypatch):
    monkeypatch.setattr("fer_lightning.checkpoint.PRETRAINED_DIR", tmp_path)
    with pytest.raises(FERUserError, match="no pretrained weights named 'tiny' are shipped"):
        load_model("pretrained:tiny")
    shutil.copy(trained_checkpoint, tmp_path / "tiny.pt")
    faces = load_fer2013_csv(tiny_csv)["test"].images[:8]
    expected = load_model(trained_checkpoint).classifier.predict_proba(faces)
    # by name, and by path: a .pt that is no TorchScript archive is loaded as a checkpoint
    for shipped in ("pretrained:tiny", tmp_path / "tiny.pt"):
        np.testing.assert_array_equal(load_model(shipped).classifier.predict_proba(faces), expected)


def test_a_bad_cascade_is_a_user_error(tmp_path):
    with pytest.raises(FERUserError, match="not a readable Haar cascade"):
        HaarFaceDetector(cascade=str(tmp_path / "none.xml"))


def test_annotated_videos_keep_their_source_suffix_so_none_overwrites_another(tmp_path):
    writer = AnnotatedWriter(tmp_path / "annotated", tmp_path / "in")
    image = np.zeros((4, 4, 3), np.uint8)

    def target(source: str, fps: float | None = 25.0) -> str:
        return writer.target(Frame(source, 0, image, fps)).relative_to(writer.directory).as_posix()

    names = [target(str(tmp_path / "in" / name)) for name in ("a.mp4", "a.mov", "a.avi")]
    assert names == ["a.mp4.avi", "a.mov.avi", "a.avi"]
    assert target(str(tmp_path / "in" / "sub" / "b.MKV")) == "sub/b.MKV.avi"
    assert target("webcam:0") == "webcam0.avi"
    assert target(str(tmp_path / "in" / "a.png"), fps=None) == "a.png"


def test_output_that_is_a_folder_is_one_line_before_anything_runs(tmp_path, trained_checkpoint):
    folder = tmp_path / "out"
    folder.mkdir()
    cfg = predict_cfg(
        tmp_path / "run", tmp_path / "photo.png", trained_checkpoint, f"output={folder}"
    )
    with pytest.raises(FERUserError, match=r"output=.*out is a folder; give the predictions file"):
        predict(cfg)
    assert list(folder.iterdir()) == []


# ----------------------------------------------------- outputs, images and progress (hardening)

SHIPPED = "pretrained:baseline"  # loads fast and needs no training run


def one_line_error(result) -> str:
    """The single stderr line of a command that failed as a user mistake (exit 2)."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ")
    return line


def test_an_output_that_is_a_source_is_refused_and_the_input_kept(tmp_path):
    victim = tmp_path / "victim.png"
    cv2.imwrite(str(victim), np.full((60, 60, 3), 90, np.uint8))
    before = victim.read_bytes()
    result = run_module(
        "fer_lightning.predict",
        str(victim),
        f"ckpt_path={SHIPPED}",
        f"output={victim}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert "is one of the sources; predictions never replace an input" in one_line_error(result)
    assert victim.read_bytes() == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run", "victim.png"]


def test_outputs_read_back_as_inputs_or_named_for_another_format_are_refused(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.full((60, 60, 3), 90, np.uint8))
    for output, message in [
        (folder / "out.png", r"lies in the source folder .* with a suffix its scan reads"),
        (tmp_path / "out.json", r"predictions are written as JSON lines; name a \.jsonl file"),
    ]:
        cfg = predict_cfg(tmp_path / "run", folder, SHIPPED, f"output={output}")
        with pytest.raises(FERUserError, match=message):
            predict(cfg)
    # annotated files written into the scanned folder would join the inputs
    cfg = predict_cfg(folder / "run", folder, SHIPPED, "annotate=true")
    with pytest.raises(FERUserError, match=r"annotate=true writes into .*overlaps the source"):
        predict(cfg)
    assert sorted(path.name for path in folder.iterdir()) == ["a.png"]


def test_an_output_under_a_file_is_one_line_naming_it(tmp_path):
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), np.full((60, 60, 3), 90, np.uint8))
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    output = blocker / "predictions.jsonl"
    result = run_module(
        "fer_lightning.predict",
        str(photo),
        f"ckpt_path={SHIPPED}",
        f"output={output}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert one_line_error(result) == (
        f"error: output={output}: cannot write it ({blocker} is a file, not a folder)"
    )


@pytest.fixture
def full_disk(tmp_path) -> Iterator[Path]:
    """A 64 KiB tmpfs filled to the last byte (the tests run as root); skipped where mounting
    is not allowed."""
    mount_point = tmp_path / "full"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)],
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        # unbuffered, so that the write that finds the disk full is the last one
        with (
            open(mount_point / "filler", "wb", buffering=0) as filler,
            contextlib.suppress(OSError),
        ):
            while True:
                filler.write(b"\0" * 4096)
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def test_a_full_disk_is_one_line_naming_the_output_and_leaves_nothing(full_disk, tmp_path):
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), np.full((60, 60, 3), 90, np.uint8))
    output = full_disk / "predictions.jsonl"
    cfg = predict_cfg(tmp_path / "run", photo, SHIPPED, f"output={output}", "detect=false")
    with pytest.raises(FERUserError, match=rf"^output={re.escape(str(output))}: cannot write it"):
        predict(cfg)
    assert [path.name for path in full_disk.iterdir()] == ["filler"]


def test_an_empty_image_file_is_one_line(tmp_path):
    empty = tmp_path / "cut download.jpg"
    empty.write_bytes(b"")
    result = run_module(
        "fer_lightning.predict",
        str(empty),
        f"ckpt_path={SHIPPED}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert one_line_error(result) == f"error: {empty}: an empty file (0 bytes), not an image"
    assert not (tmp_path / "run" / "predictions.jsonl").exists()


def test_images_over_the_pixel_limit_are_refused_before_decoding(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_claiming(20_000, 20_000))
    result = run_module(
        "fer_lightning.predict",
        str(bomb),
        f"ckpt_path={SHIPPED}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    line = one_line_error(result)
    assert line == (
        f"error: {bomb}: 400,000,000 pixels, over the limit of 100,000,000 (max_pixels); a "
        "decompression bomb, or a photo to shrink first"
    )
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), np.full((100, 100, 3), 90, np.uint8))
    cfg = predict_cfg(tmp_path / "run2", photo, SHIPPED, "max_pixels=9999")
    with pytest.raises(FERUserError, match=r"100x100 = 10,000 pixels, over the limit of 9,999"):
        predict(cfg)


def test_folders_and_videos_report_progress(tmp_path, caplog):
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(3):
        cv2.imwrite(str(folder / f"{index}.png"), np.full((48, 48, 3), 40 * index, np.uint8))
    video = folder / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (48, 48))
    for _ in range(4):
        writer.write(np.full((48, 48, 3), 90, np.uint8))
    writer.release()
    cfg = predict_cfg(tmp_path / "run", folder, SHIPPED, "detect=false", "progress_seconds=0")
    with caplog.at_level(logging.INFO, logger="fer_lightning.predict"):
        predict(cfg)
    progress = [line for line in caplog.messages if line.startswith("Progress: ")]
    assert progress[:3] == [f"Progress: file {n}/4; {n} face(s) so far" for n in (1, 2, 3)]
    assert progress[3:] == [
        f"Progress: file 4/4, {video} frame {n}/4; {3 + n} face(s) so far" for n in range(1, 5)
    ]
    caplog.clear()
    quiet = predict_cfg(tmp_path / "run2", folder, SHIPPED, "detect=false")  # every 10 s
    with caplog.at_level(logging.INFO, logger="fer_lightning.predict"):
        predict(quiet)
    assert not [line for line in caplog.messages if line.startswith("Progress: ")]
