"""Benchmark: the app's speed end to end over loopback: photo latency per model, live-webcam
frames/s in Chromium, and a bounded load test.

    python benchmarks/bench_serve.py [--requests 20] [--webcam-seconds 5] [-- serve overrides]

Starts `python -m fer_lightning.serve` as a subprocess on a free 127.0.0.1 port (--default-model
as its ckpt_path, every shipped model on offer unless only that one is asked for; Hydra overrides
after ``--`` go to it, e.g. ``-- threads=1 detector=haar``), then measures:
- photo: ``POST /api/predict`` of a real photo (scikit-image's astronaut, a 512x512 PNG with one
  face) for every model of --models (default: every one on offer) with its own TTA and with
  none; every round posts once per (model, TTA) pair, interleaved, so a drift of the machine's
  speed affects every pair alike; p50 and p95 of --requests rounds after --warmup;
- webcam: the page in headless Chromium (Debian's /usr/bin/chromium driven by Playwright), whose
  fake camera plays a generated .y4m of the astronaut's face moving over a gray 640x480 frame;
  for every model of --webcam-models with its own TTA and with none, the frames the page answers
  over --webcam-seconds, in --webcam-rounds blocks with the (model, TTA) pairs interleaved, each
  block after --webcam-warmup frames: frames/s, and p50/p95 of the time from one answered frame
  to the next (the page keeps one frame in flight, so this is a frame's whole round trip: grab,
  JPEG, POST, detect, classify, draw);
- load: --clients threads posting the photo back to back for --load-seconds (the default model,
  its own TTA): requests/s, p50/p95, the errors (any answer but 200, or no answer) and the
  server's resident memory (VmRSS of /proc/<pid>/status) before and after.
Prints markdown tables and this command line.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import numpy as np
from skimage import data as skimage_data

ROOT = Path(__file__).resolve().parents[1]
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
FRAME_SIZE = (640, 480)
FACE_SIDE = 200
FACE_TOP = 140
FACE_LEFTS = np.linspace(20, 420, 48).round().astype(int)  # the face's path over the clip
OWN_TTA = "model"  # the `tta` option that keeps each model's own mode


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serve(overrides: list[str], run_dir: Path, timeout: float = 180) -> Iterator[tuple[str, int]]:
    """`python -m fer_lightning.serve` with ``overrides`` on a free loopback port, until its
    /healthz answers; its base URL and process id."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fer_lightning.serve",
            f"port={port}",
            f"hydra.run.dir={run_dir}",
            *overrides,
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"the server did not start: {process.communicate()[1][-3000:]}")
            time.sleep(0.5)
        yield base, process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)


def face_photo() -> np.ndarray:
    """BGR: scikit-image's astronaut, one real face."""
    return cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2BGR)


def write_webcam_clip(path: Path) -> Path:
    """A .y4m clip for Chromium's fake camera: the astronaut's face moving left to right over
    gray, FRAME_SIZE, 15 frames/s."""
    face = cv2.resize(face_photo()[40:240, 130:330], (FACE_SIDE, FACE_SIDE), cv2.INTER_AREA)
    width, height = FRAME_SIZE
    with path.open("wb") as file:
        file.write(f"YUV4MPEG2 W{width} H{height} F15:1 Ip A1:1 C420jpeg\n".encode())
        for left in FACE_LEFTS:
            frame = np.full((height, width, 3), 120, np.uint8)
            frame[FACE_TOP : FACE_TOP + FACE_SIDE, left : left + FACE_SIDE] = face
            file.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())
    return path


def chromium_with_webcam(playwright, clip: Path):
    """Headless Chromium whose fake camera plays ``clip``."""
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM),
        args=[
            *CHROMIUM_ARGS,
            "--use-fake-device-for-media-stream",
            "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-video-capture={clip}",
        ],
    )


def rss_mb(pid: int) -> float:
    """The resident memory of process ``pid`` in MB (VmRSS of /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def percentile_ms(seconds: list[float], q: float) -> float:
    return 1000 * float(np.percentile(seconds, q))


def post_photo(client: httpx.Client, base: str, photo: bytes, model: str, tta: str) -> float:
    """Seconds of one ``POST /api/predict`` of ``photo``; raises unless it found one face."""
    start = time.perf_counter()
    response = client.post(
        f"{base}/api/predict",
        params={"model": model, "tta": tta},
        content=photo,
        headers={"Content-Type": "image/png"},
    )
    elapsed = time.perf_counter() - start
    if response.status_code != 200 or len(response.json()["faces"]) != 1:
        raise RuntimeError(f"{model} tta={tta}: {response.status_code} {response.text[:300]}")
    return elapsed


def photo_latencies(
    base: str, photo: bytes, pairs: list[tuple[str, str]], warmup: int, requests: int
) -> dict[tuple[str, str], list[float]]:
    """Seconds per request of every (model, tta) pair, the pairs interleaved in every round."""
    seconds: dict[tuple[str, str], list[float]] = {pair: [] for pair in pairs}
    with httpx.Client(timeout=120) as client:
        for round_index in range(warmup + requests):
            for model, tta in pairs:
                elapsed = post_photo(client, base, photo, model, tta)
                if round_index >= warmup:
                    seconds[model, tta].append(elapsed)
    return seconds


# the moments the page answers a webcam frame (it counts them in body[data-frames]) and the boxes
# it drew for that frame
RECORD_FRAMES = """() => {
    window.answered = [];
    new MutationObserver(() => window.answered.push(
        [performance.now(), document.querySelectorAll('#boxes .box').length]
    )).observe(document.body, {attributes: true, attributeFilter: ['data-frames']});
}"""


def webcam_frames(page, model: str, tta: str, warmup: int, seconds: float) -> list[list[float]]:
    """[time ms, boxes drawn] of every frame the page answered over ``seconds`` of its webcam
    mode with ``model`` and ``tta``, after ``warmup`` frames."""
    page.click("#webcam-mode")  # it sets the TTA picker to the server's live_tta
    page.select_option("#model", model)
    page.select_option("#tta", tta)
    page.evaluate("() => { window.answered = []; }")
    page.wait_for_function(f"window.answered.length >= {warmup}", timeout=120_000)
    start = page.evaluate("() => performance.now()")
    page.wait_for_timeout(1000 * seconds)
    frames = page.evaluate("() => window.answered")
    page.click("#photo-mode")
    return [frame for frame in frames if frame[0] >= start]


def webcam_rates(
    base: str, pairs: list[tuple[str, str]], warmup: int, seconds: float, rounds: int, clip: Path
) -> dict[tuple[str, str], list[list[list[float]]]]:
    """The answered frames of every (model, tta) pair in the page's webcam mode: ``rounds``
    blocks of ``seconds / rounds`` each, the pairs interleaved in every round."""
    from playwright.sync_api import sync_playwright

    frames: dict[tuple[str, str], list[list[list[float]]]] = {pair: [] for pair in pairs}
    with sync_playwright() as playwright:
        browser = chromium_with_webcam(playwright, clip)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(base)
        page.wait_for_selector("body[data-ready=true]")
        page.evaluate(RECORD_FRAMES)
        for _ in range(rounds):
            for model, tta in pairs:
                block = webcam_frames(page, model, tta, warmup, seconds / rounds)
                frames[model, tta].append(block)
        browser.close()
    return frames


def load_test(
    base: str, photo: bytes, model: str, clients: int, seconds: float
) -> tuple[list[float], int, float]:
    """``clients`` threads posting ``photo`` back to back for ``seconds``: the seconds of every
    answered request, the count of errors (an answer but 200 with one face, or none), and the
    wall time until the last answer."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client_loop() -> None:
        nonlocal errors
        with httpx.Client(timeout=120) as client:
            while time.monotonic() < deadline:
                try:
                    elapsed = post_photo(client, base, photo, model, OWN_TTA)
                except (RuntimeError, httpx.HTTPError):
                    with lock:
                        errors += 1
                    continue
                with lock:
                    latencies.append(elapsed)

    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors, time.monotonic() - start


def tta_pairs(own: dict[str, str], models: list[str]) -> list[tuple[str, str]]:
    """(model, tta) of every model with its own TTA (``own[model]``), then with none where its
    own is another."""
    pairs = []
    for model in models:
        pairs.append((model, OWN_TTA))
        if own[model] != "none":
            pairs.append((model, "none"))
    return pairs


def tta_label(own: dict[str, str], model: str, tta: str) -> str:
    return f"{own[model]} (own)" if tta == OWN_TTA else tta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--default-model", default="pretrained:vgg", help="the server's ckpt_path")
    parser.add_argument(
        "--models", nargs="+", help="models of the photo table (default: every one on offer)"
    )
    parser.add_argument("--warmup", type=int, default=2, help="photo rounds not timed")
    parser.add_argument("--requests", type=int, default=20, help="timed photo rounds")
    parser.add_argument(
        "--webcam-models",
        nargs="*",
        default=["pretrained:baseline", "pretrained:vgg"],
        help="models of the webcam table (none: no browser)",
    )
    parser.add_argument("--webcam-warmup", type=int, default=3, help="webcam frames not timed")
    parser.add_argument("--webcam-seconds", type=float, default=6.0, help="per row, in all")
    parser.add_argument("--webcam-rounds", type=int, default=2, help="interleaved blocks a row")
    parser.add_argument(
        "--clients", type=int, default=4, help="concurrent clients of the load test"
    )
    parser.add_argument("--load-seconds", type=float, default=5.0)
    args, overrides = parser.parse_known_args()
    overrides = [item for item in overrides if item != "--"]

    photo = cv2.imencode(".png", face_photo())[1].tobytes()
    offer = args.models is None or bool({*args.models, *args.webcam_models} - {args.default_model})
    server_overrides = [
        f"ckpt_path={args.default_model}",
        f"offer_pretrained={str(offer).lower()}",
        *overrides,
    ]
    with (
        tempfile.TemporaryDirectory() as tmp,
        serve(server_overrides, Path(tmp) / "run") as (
            base,
            pid,
        ),
    ):
        started_mb = rss_mb(pid)
        listing = httpx.get(f"{base}/api/models").json()
        own = {model["name"]: model["tta"] for model in listing["models"]}
        photo_pairs = tta_pairs(own, args.models or list(own))
        latencies = photo_latencies(base, photo, photo_pairs, args.warmup, args.requests)
        webcam_pairs = tta_pairs(own, args.webcam_models)
        frames = webcam_rates(
            base,
            webcam_pairs,
            args.webcam_warmup,
            args.webcam_seconds,
            args.webcam_rounds,
            write_webcam_clip(Path(tmp) / "moving_face.y4m"),
        )
        before_mb = rss_mb(pid)
        load, errors, wall = load_test(
            base, photo, args.default_model, args.clients, args.load_seconds
        )
        after_mb = rss_mb(pid)

    print(f"`python {shlex.join(sys.argv)}`  ")
    print(
        f"server overrides: {shlex.join(server_overrides)}; "
        f"{args.requests} photo rounds after {args.warmup} warm-up rounds, "
        f"the (model, TTA) pairs interleaved; photo: 512x512 PNG, one face\n"
    )
    print("| model | TTA | photo p50 ms | photo p95 ms |")
    print("|---|---|---:|---:|")
    for model, tta in photo_pairs:
        seconds = latencies[model, tta]
        p50, p95 = percentile_ms(seconds, 50), percentile_ms(seconds, 95)
        print(f"| {model} | {tta_label(own, model, tta)} | {p50:.1f} | {p95:.1f} |")

    if webcam_pairs:
        print(
            f"\nwebcam in headless Chromium: {FRAME_SIZE[0]}x{FRAME_SIZE[1]} fake camera, "
            f"{args.webcam_seconds:g} s per row in {args.webcam_rounds} blocks, the rows "
            f"interleaved, each block after {args.webcam_warmup} frames; "
            "frame time: from one answered frame to the next; the page's webcam starts with "
            f"{listing['default']}, tta {listing['live_tta']}\n"
        )
        print("| model | TTA | frames/s | frame p50 ms | frame p95 ms | frames with a face |")
        print("|---|---|---:|---:|---:|---:|")
        for model, tta in webcam_pairs:
            blocks = [np.array(block).reshape(-1, 2) for block in frames[model, tta]]
            answered = sum(len(block) for block in blocks)
            faced = sum(int((block[:, 1] > 0).sum()) for block in blocks)
            gaps = np.concatenate([np.diff(block[:, 0]) for block in blocks]) / 1000
            rate = len(gaps) / gaps.sum() if len(gaps) else 0.0
            p50, p95 = (percentile_ms(gaps, q) for q in (50, 95)) if len(gaps) else (0.0, 0.0)
            print(
                f"| {model} | {tta_label(own, model, tta)} | {rate:.1f} | {p50:.1f} | "
                f"{p95:.1f} | {faced}/{answered} |"
            )

    print(
        f"\nload: {args.clients} clients posting the photo back to back for "
        f"{args.load_seconds:g} s, {args.default_model} with its own TTA "
        f"({own[args.default_model]}); server memory (VmRSS) {started_mb:.0f} MB once started\n"
    )
    print(
        "| clients | requests | requests/s | p50 ms | p95 ms | errors "
        "| server MB before | server MB after |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    p50, p95 = (percentile_ms(load, q) for q in (50, 95)) if load else (0.0, 0.0)
    print(
        f"| {args.clients} | {len(load)} | {len(load) / wall:.1f} | {p50:.1f} | "
        f"{p95:.1f} | {errors} | {before_mb:.0f} | {after_mb:.0f} |"
    )


if __name__ == "__main__":
    main()
