"""The app's page in real headless Chromium (Debian's /usr/bin/chromium driven by Playwright),
against `python -m fer_lightning.serve` on loopback: photos, the webcam (Chromium's fake camera
playing a generated .y4m of a moving face), bad uploads, the model picker, and the screenshot
in docs/app.png."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from skimage import data as skimage_data

from tests.conftest import ROOT

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DEFAULT_MODEL, OTHER_MODEL = "pretrained:baseline", "pretrained:vgg"
MAX_UPLOAD = 2_000_000
FRAME_SIZE = (640, 480)
FACE_SIDE = 200
FACE_TOP = 140
FACE_LEFTS = np.linspace(20, 420, 48).round().astype(int)  # the face's path over the clip

if not CHROMIUM.exists():
    pytest.skip("needs Debian's chromium at /usr/bin/chromium", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    """`python -m fer_lightning.serve` on a free loopback port; its base URL."""
    port = free_port()
    run_dir = tmp_path_factory.mktemp("serve")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fer_lightning.serve",
            f"ckpt_path={DEFAULT_MODEL}",
            f"port={port}",
            "threads=1",
            f"max_upload_bytes={MAX_UPLOAD}",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the server did not start: {process.communicate()[1][-3000:]}")
        time.sleep(0.5)
    yield base
    process.terminate()
    process.wait(timeout=30)


def face_photo() -> np.ndarray:
    """BGR: scikit-image's astronaut, one real face."""
    return cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2BGR)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("photos")
    astronaut = face_photo()
    camera = cv2.cvtColor(skimage_data.camera(), cv2.COLOR_GRAY2BGR)
    paths = {
        "face": folder / "astronaut.png",
        "pair": folder / "astronaut and cameraman.jpg",
        "text": folder / "notes.txt",
        "broken": folder / "broken.png",
        "huge": folder / "huge.bmp",
    }
    cv2.imwrite(str(paths["face"]), astronaut)
    cv2.imwrite(str(paths["pair"]), np.hstack([astronaut, camera]))
    paths["text"].write_text("not a photo")
    paths["broken"].write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    paths["huge"].write_bytes(cv2.imencode(".bmp", np.zeros((1000, 1000, 3), np.uint8))[1])
    return paths


@pytest.fixture(scope="module")
def webcam_clip(tmp_path_factory) -> Path:
    """A .y4m clip (never committed): the astronaut's face moving left to right over gray."""
    face = cv2.resize(face_photo()[40:240, 130:330], (FACE_SIDE, FACE_SIDE), cv2.INTER_AREA)
    path = tmp_path_factory.mktemp("webcam") / "moving_face.y4m"
    width, height = FRAME_SIZE
    with path.open("wb") as file:
        file.write(f"YUV4MPEG2 W{width} H{height} F15:1 Ip A1:1 C420jpeg\n".encode())
        for left in FACE_LEFTS:
            frame = np.full((height, width, 3), 120, np.uint8)
            frame[FACE_TOP : FACE_TOP + FACE_SIDE, left : left + FACE_SIDE] = face
            file.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())
    return path


@pytest.fixture(scope="module")
def browser(webcam_clip):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                *CHROMIUM_ARGS,
                "--use-fake-device-for-media-stream",
                "--use-fake-ui-for-media-stream",
                f"--use-file-for-fake-video-capture={webcam_clip}",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    """The app's page, every request outside the server recorded and refused."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    outside: list[str] = []

    def only_local(route) -> None:
        if route.request.url.startswith(server + "/"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_local)
    page.goto(server)
    page.wait_for_selector("body[data-ready=true]")
    yield page
    assert outside == []
    context.close()


def upload(page, path: Path) -> None:
    page.set_input_files("#file", str(path))
    page.wait_for_function("document.body.dataset.busy === 'false'")


def shown_faces(page) -> list[dict]:
    """The faces the page shows: each panel's box and bars, and its drawn box's place."""
    return page.evaluate(
        """() => [...document.querySelectorAll('#faces .face')].map((panel) => ({
            box: panel.dataset.box.split(',').map(Number),
            probabilities: Object.fromEntries([...panel.querySelectorAll('.bar')].map(
                (bar) => [bar.dataset.label, Number(bar.dataset.probability)])),
            top: panel.querySelector('.bar.top').dataset.label,
        }))"""
    )


def drawn_boxes(page) -> list[list[float]]:
    """The drawn boxes in the image's pixels, measured from their place on the screen."""
    return page.evaluate(
        """() => {
            const media = document.querySelector(
                '#stage img:not([hidden]), #stage video:not([hidden])');
            const frame = media.getBoundingClientRect();
            const scale = (media.naturalWidth || media.videoWidth) / frame.width;
            return [...document.querySelectorAll('#boxes .box')].map((box) => {
                const r = box.getBoundingClientRect();
                return [(r.left - frame.left) * scale, (r.top - frame.top) * scale,
                        r.width * scale, r.height * scale];
            });
        }"""
    )


def api_faces(server: str, path: Path, model: str) -> list[dict]:
    response = httpx.post(
        f"{server}/api/predict",
        params={"model": model},
        files={"file": (path.name, path.read_bytes())},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return response.json()["faces"]


def assert_page_shows(page, faces: list[dict]) -> None:
    shown = shown_faces(page)
    assert [face["box"] for face in shown] == [face["box"] for face in faces]
    for face, expected in zip(shown, faces, strict=True):
        assert face["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-6)
        assert face["top"] == expected["label"]
    for drawn, face in zip(drawn_boxes(page), faces, strict=True):
        np.testing.assert_allclose(drawn, face["box"], atol=2)


def test_a_photo_shows_the_boxes_and_bars_the_api_returns(page, server, photos):
    upload(page, photos["face"])
    faces = api_faces(server, photos["face"], DEFAULT_MODEL)
    assert len(faces) == 1
    assert_page_shows(page, faces)
    assert page.text_content("#status").startswith("1 face")


def test_the_model_picker_changes_the_answers(page, server, photos):
    upload(page, photos["face"])
    before = shown_faces(page)
    page.select_option("#model", OTHER_MODEL)
    page.wait_for_function("document.body.dataset.busy === 'false'")
    after = api_faces(server, photos["face"], OTHER_MODEL)
    assert_page_shows(page, after)
    assert before[0]["probabilities"] != pytest.approx(after[0]["probabilities"], abs=1e-6)


def test_bad_uploads_each_get_their_error_and_the_server_stays_healthy(page, server, photos):
    for name, words in (
        ("text", "text/plain, not an image"),
        ("broken", "not a readable image"),
        ("huge", f"over the limit of {MAX_UPLOAD:,} bytes"),
    ):
        upload(page, photos[name])
        status = page.locator("#status")
        assert "error" in status.get_attribute("class") and words in status.text_content(), name
        assert shown_faces(page) == []
    assert httpx.get(f"{server}/healthz").json() == {"status": "ok"}
    upload(page, photos["face"])
    assert len(shown_faces(page)) == 1


def test_the_webcam_boxes_follow_the_moving_face(page):
    page.click("#webcam-mode")
    assert page.input_value("#tta") == "none"  # the server's live_tta, for fast frames
    page.wait_for_function("Number(document.body.dataset.frames || 0) >= 3", timeout=60_000)
    lefts = []
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        for x, y, width, height in drawn_boxes(page):
            lefts.append(x + width / 2)
            # on the face's row, the size of the face
            assert FACE_TOP - 40 < y + height / 2 - FACE_SIDE / 2 < FACE_TOP + 40
            assert FACE_SIDE * 0.4 < width < FACE_SIDE * 1.3
        page.wait_for_timeout(150)
    centres = np.array(lefts)
    path = FACE_LEFTS + FACE_SIDE / 2
    assert len(centres) >= 5
    assert ((centres > path.min() - 40) & (centres < path.max() + 40)).all()
    assert centres.max() - centres.min() > 100  # the boxes moved with the face
    assert "frames/s" in page.text_content("#status")
    page.click("#photo-mode")
    assert page.input_value("#tta") == "model"  # photos go back to the model's own TTA


def test_screenshot_of_a_photo_with_two_faces(page, server, photos):
    upload(page, photos["pair"])
    faces = api_faces(server, photos["pair"], DEFAULT_MODEL)
    assert len(faces) == 2
    assert_page_shows(page, faces)
    target = ROOT / "docs" / "app.png"
    page.screenshot(path=str(target), full_page=True)
    assert cv2.imread(str(target)).shape[1] == 1280
