"""The Python API: EmotionRecognizer on every model form and every input kind, its README example
in a folder with a real photo, faces found in large images, and one-line errors."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skimage_data

from fer_lightning import EMOTIONS, EmotionRecognizer, Face
from fer_lightning.config import compose_config
from fer_lightning.data import load_fer2013_csv
from fer_lightning.errors import FERUserError, ImageError
from fer_lightning.export import export
from fer_lightning.faces import DETECTORS, detect_faces, make_detector
from fer_lightning.images import MAX_PIXELS, read_image
from tests.conftest import png_header_claiming, run_module

FAST_MODEL = "pretrained:baseline"  # shipped, loads in a blink; shipped with tta=flip


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    """A real photo of one face (scikit-image ships it): RGB (512, 512, 3)."""
    return skimage_data.astronaut()


@pytest.fixture(scope="module")
def photo_bgr(astronaut) -> np.ndarray:
    return cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR)


@pytest.fixture(scope="module")
def recognizer() -> EmotionRecognizer:
    return EmotionRecognizer(FAST_MODEL)


@pytest.fixture(scope="module")
def exported_baseline(tmp_path_factory) -> dict[str, Path]:
    """pretrained:baseline exported to ONNX and TorchScript."""
    folder = tmp_path_factory.mktemp("exported")
    files = {}
    for model_format, suffix in (("onnx", ".onnx"), ("torchscript", ".pt")):
        output = folder / f"baseline{suffix}"
        overrides = [f"ckpt_path={FAST_MODEL}", f"format={model_format}", f"output={output}"]
        files[model_format] = export(compose_config("export", folder, overrides))
    return files


def crops_of(tiny_csv: Path, count: int = 6) -> np.ndarray:
    return load_fer2013_csv(tiny_csv)["test"].images[:count]


def assert_valid_face(face: Face, class_names: list[str]) -> None:
    assert list(face.probabilities) == class_names
    assert sum(face.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert face.label == max(face.probabilities, key=face.probabilities.get)
    assert len(face.box) == 4 and all(isinstance(value, int) for value in face.box)


def test_a_real_photo_gives_one_face_with_a_label(recognizer, photo_bgr):
    [face] = recognizer.analyze(photo_bgr)
    assert_valid_face(face, list(EMOTIONS))
    x, y, width, height = face.box
    # the astronaut's face: around x 180-270, y 70-160 of the 512x512 photo
    assert 150 < x + width / 2 < 300 and 50 < y + height / 2 < 200 and 60 < width < 200
    assert recognizer.class_names == list(EMOTIONS) and recognizer.tta == "flip"


def test_every_input_kind_gives_the_same_faces(recognizer, astronaut, photo_bgr, tmp_path):
    png = tmp_path / "astronaut.png"
    cv2.imwrite(str(png), photo_bgr)
    expected = recognizer.analyze(photo_bgr)
    assert len(expected) == 1
    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 255, np.uint8)])
    inputs = {
        "str path": str(png),
        "Path": png,
        "bytes": png.read_bytes(),
        "bytearray": bytearray(png.read_bytes()),
        "RGB array with rgb=True": (astronaut, True),
        "BGRA array": cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA),
        "RGBA array with rgb=True": (rgba, True),
        "PIL RGB": Image.fromarray(astronaut),
        "PIL opened lazily": Image.open(png),
    }
    for kind, image in inputs.items():
        image, rgb = image if isinstance(image, tuple) else (image, False)
        assert recognizer.analyze(image, rgb=rgb) == expected, kind
    gray = cv2.cvtColor(photo_bgr, cv2.COLOR_BGR2GRAY)
    from_gray = recognizer.analyze(gray)
    assert from_gray == recognizer.analyze(Image.fromarray(gray))  # PIL "L" stays gray
    # the same face; the default detector sees colour, so a gray copy moves its box a little
    [gray_face], [colour_face] = from_gray, expected
    np.testing.assert_allclose(gray_face.box, colour_face.box, atol=4)
    # without rgb=True an array is BGR, as OpenCV's are
    np.testing.assert_array_equal(read_image(astronaut, rgb=True), photo_bgr)
    np.testing.assert_array_equal(read_image(photo_bgr), photo_bgr)


def test_a_photo_without_a_face_gives_an_empty_list(recognizer, tmp_path):
    wall = np.full((300, 400, 3), 128, np.uint8)
    assert recognizer.analyze(wall) == []
    assert len(recognizer.analyze(wall, detect=False)) == 1  # the whole image as one face


def test_detect_false_and_classify_agree_on_face_crops(recognizer, tiny_csv):
    crops = crops_of(tiny_csv)
    probabilities = recognizer.classify(crops)
    assert probabilities.shape == (len(crops), len(EMOTIONS))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    for crop, row in zip(crops, probabilities, strict=True):
        [face] = recognizer.analyze(crop, detect=False)
        assert face.box == (0, 0, 48, 48)
        np.testing.assert_allclose(list(face.probabilities.values()), row, atol=1e-6)


def test_to_dict_is_the_json_of_the_face(recognizer, photo_bgr):
    [face] = recognizer.analyze(photo_bgr)
    as_dict = face.to_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert as_dict == {
        "box": list(face.box),
        "label": face.label,
        "probabilities": face.probabilities,
    }


def test_every_model_form_classifies_alike(trained_checkpoint, exported_baseline, tiny_csv):
    crops = crops_of(tiny_csv)
    reference = EmotionRecognizer(FAST_MODEL).classify(crops)
    for model_file in exported_baseline.values():
        np.testing.assert_allclose(
            EmotionRecognizer(model_file).classify(crops), reference, atol=1e-5
        )
    from_checkpoint = EmotionRecognizer(trained_checkpoint)
    assert from_checkpoint.class_names == list(EMOTIONS)
    ensemble = EmotionRecognizer([str(trained_checkpoint), FAST_MODEL], tta="flip")
    expected = np.mean(
        [EmotionRecognizer(member, tta="flip").classify(crops) for member in ensemble.model.names],
        axis=0,
    )
    np.testing.assert_allclose(ensemble.classify(crops), expected, atol=1e-6)
    assert ensemble.tta == "flip"
    assert EmotionRecognizer([str(trained_checkpoint), "pretrained:deep"]).tta == "none+tencrop"


def test_threads_sets_the_libraries_threads(tiny_csv):
    before = torch.get_num_threads(), cv2.getNumThreads()
    try:
        recognizer = EmotionRecognizer(FAST_MODEL, threads=1)
        assert (torch.get_num_threads(), cv2.getNumThreads()) == (1, 1)
        assert recognizer.classify(crops_of(tiny_csv)).shape == (6, len(EMOTIONS))
    finally:
        torch.set_num_threads(before[0])
        cv2.setNumThreads(before[1])


def test_detectors_are_named_in_a_registry(photo_bgr):
    assert "haar" in DETECTORS
    assert EmotionRecognizer(FAST_MODEL, detector="haar").analyze(photo_bgr)
    with pytest.raises(
        FERUserError, match=r"detector='dnn9' is not one of default, blazeface, haar"
    ):
        make_detector("dnn9")


def test_large_photos_are_detected_on_a_bounded_copy_and_boxes_map_back(photo_bgr):
    gray = cv2.cvtColor(photo_bgr, cv2.COLOR_BGR2GRAY)
    detector = make_detector()
    [small_box] = detect_faces(detector, gray)
    big = cv2.resize(gray, (2048, 2048), interpolation=cv2.INTER_CUBIC)
    seen = []

    def recording(image: np.ndarray) -> list[tuple[int, int, int, int]]:
        seen.append(image.shape)
        return detector(image)

    [big_box] = detect_faces(recording, big, max_side=512)
    assert seen == [(512, 512)]
    np.testing.assert_allclose(big_box, np.array(small_box) * 4, atol=8)


def test_images_over_the_pixel_limit_are_refused_from_their_header(recognizer, photo_bgr):
    bomb = png_header_claiming(20_000, 20_000)
    assert len(bomb) < 100_000
    with pytest.raises(ImageError, match=r"400,000,000 pixels, over the limit of 100,000,000"):
        read_image(bomb)
    assert MAX_PIXELS == 100_000_000
    _, encoded = cv2.imencode(".png", photo_bgr)
    with pytest.raises(ImageError, match=r"512x512 = 262,144 pixels, over the limit of 100,000"):
        EmotionRecognizer(FAST_MODEL, max_pixels=100_000).analyze(encoded.tobytes())
    with pytest.raises(ImageError, match=r"over the limit of 100,000"):
        read_image(photo_bgr, max_pixels=100_000)
    with pytest.raises(ImageError, match=r"over the limit of 100,000"):
        read_image(Image.fromarray(photo_bgr), max_pixels=100_000)
    assert recognizer.analyze(encoded.tobytes())  # under the default limit


def test_mistakes_are_user_errors(recognizer, tmp_path):
    cases = [
        (lambda: EmotionRecognizer(tmp_path / "absent.ckpt"), "does not exist"),
        (lambda: EmotionRecognizer("pretrained:nope"), "no pretrained weights named 'nope'"),
        (lambda: EmotionRecognizer(FAST_MODEL, tta="mirror"), "tta='mirror' is not one of"),
        (lambda: EmotionRecognizer(FAST_MODEL, device="tpu"), "device='tpu'"),
        (lambda: EmotionRecognizer(FAST_MODEL, threads=0), "threads must be a whole number"),
        (lambda: EmotionRecognizer(FAST_MODEL, margin=-1), "margin must be >= 0"),
        (lambda: EmotionRecognizer([]), r"must be a checkpoint or a list"),
        (lambda: recognizer.analyze(tmp_path / "absent.jpg"), "absent.jpg: no such image file"),
        (lambda: recognizer.analyze(b""), "an empty file"),
        (lambda: recognizer.analyze(b"not an image"), "not a readable image"),
        (lambda: recognizer.analyze(np.zeros((10, 10), np.float32)), "must be uint8"),
        (lambda: recognizer.analyze(12), "cannot read an image from a int"),
        (lambda: recognizer.classify(np.zeros((2, 32, 32), np.uint8)), r"\(N, 48, 48\)"),
        (lambda: recognizer.classify(np.zeros((2, 48, 48), np.uint8), 0), "batch_size"),
    ]
    for make, message in cases:
        with pytest.raises(FERUserError, match=message):
            make()
    if not torch.cuda.is_available():
        with pytest.raises(FERUserError, match="device=cuda: torch sees 0 CUDA GPU"):
            EmotionRecognizer(FAST_MODEL, device="cuda")


def test_predict_lines_are_the_faces_to_dict(recognizer, photo_bgr, tmp_path):
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), photo_bgr)
    result = run_module(
        "fer_lightning.predict",
        str(photo),
        f"ckpt_path={FAST_MODEL}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in (tmp_path / "run" / "predictions.jsonl").open()]
    expected = [face.to_dict() for face in recognizer.analyze(photo)]
    # the same faces and labels; probabilities to float rounding (the subprocess may run its
    # matrix products on another number of threads)
    assert [
        {**line, "probabilities": pytest.approx(line["probabilities"], abs=1e-6)} for line in lines
    ] == [{"source": str(photo), "frame": 0, **face} for face in expected]


def test_the_readme_example_runs_in_a_folder_with_a_photo(photo_bgr, tmp_path):
    """In a folder holding photo.jpg of a real face, the README's two lines print its label."""
    cv2.imwrite(str(tmp_path / "photo.jpg"), photo_bgr)
    example = (
        "from fer_lightning import EmotionRecognizer\n"
        'print(EmotionRecognizer("pretrained:vgg").analyze("photo.jpg")[0].label)\n'
    )
    completed = subprocess.run(
        [sys.executable, "-c", example],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() in EMOTIONS


def test_pil_image_bytes_in_memory(recognizer, astronaut):
    buffer = io.BytesIO()
    Image.fromarray(astronaut).save(buffer, format="JPEG")
    [face] = recognizer.analyze(buffer.getvalue())
    assert_valid_face(face, list(EMOTIONS))
