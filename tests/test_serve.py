"""The app's HTTP API through FastAPI's TestClient: answers equal to predict's JSON lines, the
model and TTA options, and a one-line JSON error for every kind of bad request, after which the
server goes on serving."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from skimage import data as skimage_data

from fer_lightning import EmotionRecognizer
from fer_lightning.config import compose_config
from fer_lightning.errors import FERUserError
from fer_lightning.predict.task import predict
from fer_lightning.serve import Recognizers, ServeSettings, create_app, settings_from_config
from tests.conftest import png_header_claiming

MODELS = ["pretrained:baseline", "pretrained:vgg"]
MAX_UPLOAD = 1_500_000
MAX_PIXELS = 3_000_000


@pytest.fixture(scope="module")
def client():
    settings = ServeSettings(
        models=MODELS, threads=1, max_upload_bytes=MAX_UPLOAD, max_pixels=MAX_PIXELS
    )
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture(scope="module")
def photo_png(tmp_path_factory) -> Path:
    """A real photo of one face (scikit-image's astronaut) as a PNG file."""
    path = tmp_path_factory.mktemp("photo") / "astronaut.png"
    cv2.imwrite(str(path), cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2BGR))
    return path


def assert_error(response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert "\n" not in error and all(word in error for word in words), error


def assert_healthy(client: TestClient, photo_png: Path) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    answer = client.post("/api/predict", files={"file": ("a.png", photo_png.read_bytes())})
    assert answer.status_code == 200 and len(answer.json()["faces"]) == 1


def test_predict_answers_predicts_json_lines(client, photo_png, tmp_path):
    output = predict(
        compose_config(
            "predict", tmp_path, [f"source={photo_png}", f"ckpt_path={MODELS[0]}", "threads=1"]
        )
    )
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    expected = [{key: line[key] for key in ("box", "label", "probabilities")} for line in lines]
    assert len(expected) == 1

    multipart = client.post(
        "/api/predict", files={"file": ("astronaut.png", photo_png.read_bytes(), "image/png")}
    )
    raw = client.post(
        "/api/predict", content=photo_png.read_bytes(), headers={"Content-Type": "image/png"}
    )
    for response in (multipart, raw):
        assert response.status_code == 200
        assert response.json() == {"model": MODELS[0], "faces": expected}


def test_models_are_listed_with_classes_and_tta_and_change_the_answers(client, photo_png):
    listing = client.get("/api/models").json()
    assert listing["default"] == MODELS[0]
    assert listing["live_tta"] == "none"  # the page's webcam starts without TTA: fast frames
    assert [model["name"] for model in listing["models"]] == MODELS
    for model in listing["models"]:
        recognizer = EmotionRecognizer(model["name"])
        assert model["classes"] == recognizer.class_names and model["tta"] == recognizer.tta
        assert model["tta_options"] == ["model", "none", "flip", "tencrop"]

    def probabilities(**params: str) -> dict[str, float]:
        response = client.post(
            "/api/predict", params=params, files={"file": ("a.png", photo_png.read_bytes())}
        )
        assert response.status_code == 200, response.text
        [face] = response.json()["faces"]
        return face["probabilities"]

    baseline, vgg = probabilities(model=MODELS[0]), probabilities(model=MODELS[1])
    assert baseline != vgg
    assert vgg == pytest.approx(
        EmotionRecognizer(MODELS[1]).analyze(photo_png)[0].probabilities, abs=1e-6
    )
    tencrop = probabilities(model=MODELS[0], tta="tencrop")
    assert tencrop != baseline
    assert tencrop == pytest.approx(
        EmotionRecognizer(MODELS[0], tta="tencrop").analyze(photo_png)[0].probabilities, abs=1e-6
    )


def test_detect_false_takes_the_whole_image_as_one_face(client, photo_png):
    response = client.post(
        "/api/predict", params={"detect": "false"}, files={"file": ("a", photo_png.read_bytes())}
    )
    [face] = response.json()["faces"]
    assert face["box"] == [0, 0, 512, 512]


def test_a_photo_without_faces_gives_none(client):
    blank = cv2.imencode(".png", np.full((240, 320, 3), 200, np.uint8))[1].tobytes()
    response = client.post("/api/predict", content=blank, headers={"Content-Type": "image/png"})
    assert response.json() == {"model": MODELS[0], "faces": []}


def test_bad_requests_get_one_line_errors_and_the_server_goes_on(client, photo_png):
    png = photo_png.read_bytes()
    assert_error(
        client.post("/api/predict", content=b"hello", headers={"Content-Type": "text/plain"}),
        415,
        "text/plain is not an image",
    )
    assert_error(
        client.post("/api/predict", files={"file": ("notes.txt", b"hello", "text/plain")}),
        415,
        "text/plain, not an image",
    )
    assert_error(client.post("/api/predict", content=png), 415, "(none) is not an image")
    assert_error(
        client.post(
            "/api/predict", content=b"\x89PNG broken", headers={"Content-Type": "image/png"}
        ),
        400,
        "not a readable image",
    )
    assert_error(
        client.post("/api/predict", content=b"", headers={"Content-Type": "image/jpeg"}),
        400,
        "empty",
    )
    assert_error(
        client.post("/api/predict", files={"upload": ("a.png", png)}),
        400,
        "no file field named 'file'",
    )
    too_big = b"\xff" * (MAX_UPLOAD + 1)
    assert_error(
        client.post("/api/predict", content=too_big, headers={"Content-Type": "image/jpeg"}),
        413,
        "over the limit of 1,500,000 bytes",
    )

    def chunks():  # no Content-Length: the limit is counted while reading
        for _ in range(4):
            yield b"\xff" * (MAX_UPLOAD // 3)

    assert_error(
        client.post("/api/predict", content=chunks(), headers={"Content-Type": "image/jpeg"}),
        413,
        "over the limit",
    )
    bomb = png_header_claiming(20_000, 20_000)
    assert_error(
        client.post("/api/predict", content=bomb, headers={"Content-Type": "image/png"}),
        400,
        "400,000,000 pixels, over the limit of 3,000,000",
    )
    for params, words in (
        ({"model": "/etc/passwd"}, ("'/etc/passwd' is not one on offer", MODELS[1])),
        ({"model": "pretrained:deep"}, ("is not one on offer",)),
        ({"tta": "sideways"}, ("tta='sideways' is not one of model, none, flip, tencrop",)),
        ({"detect": "perhaps"}, ("detect",)),
    ):
        response = client.post(
            "/api/predict", params=params, content=png, headers={"Content-Type": "image/png"}
        )
        assert_error(response, 400, *words)
    assert_healthy(client, photo_png)


def test_inference_runs_on_the_inference_threads_not_the_event_loop(client, photo_png, monkeypatch):
    threads = []
    analyze = Recognizers.analyze

    def recording(self, *args, **kwargs):
        threads.append(threading.current_thread().name)
        return analyze(self, *args, **kwargs)

    monkeypatch.setattr(Recognizers, "analyze", recording)
    for _ in range(3):
        client.post("/api/predict", files={"file": ("a.png", photo_png.read_bytes())})
    assert len(threads) == 3 and all(name.startswith("inference") for name in threads)


def test_openapi_documents_both_upload_forms(client):
    assert client.get("/docs").status_code == 200
    body = client.get("/openapi.json").json()["paths"]["/api/predict"]["post"]["requestBody"]
    assert set(body["content"]) == {"multipart/form-data", "image/*"}


def test_the_page_and_its_files_are_served_from_the_package(client):
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    for name in ("app.js", "app.css"):
        assert client.get(f"/static/{name}").status_code == 200
    assert client.get("/static/../serve.py").status_code == 404


def test_the_config_offers_the_command_line_model_first_then_the_shipped_ones(tmp_path):
    cfg = compose_config("serve", tmp_path, ["ckpt_path=pretrained:vgg"])
    settings = settings_from_config(cfg)
    assert settings.names[0] == "pretrained:vgg"
    assert "pretrained:baseline" in settings.names and settings.names.count("pretrained:vgg") == 1
    assert cfg.host == "127.0.0.1"
    only = settings_from_config(
        compose_config("serve", tmp_path, ["ckpt_path=pretrained:deep", "offer_pretrained=false"])
    )
    assert only.names == ["pretrained:deep"]
    assert settings.live_tta == "none"
    with pytest.raises(FERUserError, match="live_tta='fast' is not one of none, flip, tencrop"):
        settings_from_config(compose_config("serve", tmp_path, ["live_tta=fast"]))


def test_jpeg_frames_as_the_page_sends_them(client, photo_png):
    buffer = io.BytesIO()
    Image.open(photo_png).convert("RGB").save(buffer, "JPEG", quality=85)
    response = client.post(
        "/api/predict", content=buffer.getvalue(), headers={"Content-Type": "image/jpeg"}
    )
    assert response.status_code == 200 and len(response.json()["faces"]) == 1
