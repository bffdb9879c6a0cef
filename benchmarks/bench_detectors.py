"""Benchmark: recall, false positives and time of the face detectors on real photos.

    python benchmarks/bench_detectors.py --photos /tmp/detector-photos

The photos come from registry packages, fetched with their ordinary clients into --photos on the
first run (about 100 MB, kept for later runs; nothing of them enters the repository):
- faces: scikit-image 0.26.0's astronaut.png and camera.png (wheel, PyPI), insightface 2.1's t1.jpg
  (six people round a table) and Tom_Hanks_54745.png (sdist, PyPI), OpenCV 4.6's messi5.jpg
  (Debian's opencv-doc) and matplotlib's grace_hopper.jpg (installed with this project): 11
  faces, boxed by hand below;
- 100 face crops of Labeled Faces in the Wild (scikit-image's lfw_subset.npy: 25x25 gray, each
  scaled to 100x100 on a 200x200 gray canvas) and the 100 non-face patches of the same file;
- no face: every other image of scikit-image's data folder and of opencv-doc's examples/data,
  less the ones showing people or drawn faces (animals are kept: a cat is no face to classify).

A found box is a hit when it overlaps a face's box by IoU >= 0.3 (each face matched once, greedy by
overlap); every other box is a false positive. Time: the median of --repeats calls on a 640x480
frame (the live-webcam size; astronaut.png scaled), each detector with --threads threads, the
calls interleaved. Prints a markdown table and this command line.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import matplotlib
import numpy as np

from fer_lightning.blazeface import DEFAULT_MIN_SCORE, BlazeFaceDetector
from fer_lightning.faces import HaarFaceDetector

Box = tuple[int, int, int, int]

# the faces of the photos, (x, y, w, h), boxed by hand (chin to brows, ear to ear)
FACES: dict[str, list[Box]] = {
    "astronaut.png": [(174, 74, 102, 102)],
    "camera.png": [(178, 122, 78, 80)],
    "t1.jpg": [
        (55, 282, 112, 112),
        (268, 165, 109, 109),
        (462, 291, 110, 110),
        (747, 369, 97, 97),
        (907, 87, 113, 113),
        (1124, 298, 103, 103),
    ],
    "Tom_Hanks_54745.png": [(9, 20, 85, 85)],
    "messi5.jpg": [(222, 95, 37, 37)],
    "grace_hopper.jpg": [(168, 139, 196, 196)],
}
# images of the two folders that show people or drawn faces, so are no negatives
NOT_NEGATIVES = ("left", "right", "basketball", "ml.png", "graf", "astronaut", "camera", "messi5")
SKIMAGE = "scikit-image==0.26.0"
INSIGHTFACE = "insightface==2.1"
LFW_SIZE, LFW_CANVAS = 100, 200
IOU_HIT = 0.3


def run(command: list[str], cwd: Path) -> None:
    print("$", shlex.join(command), file=sys.stderr)
    subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL)


def fetch_photos(folder: Path) -> None:
    """Download the three packages into ``folder`` and unpack their images (once)."""
    done = folder / ".complete"
    if done.exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(folder)]
    run([*pip, "--only-binary", ":all:", SKIMAGE], folder)
    run([*pip, "--no-binary", ":all:", "--no-build-isolation", INSIGHTFACE], folder)
    run(["apt-get", "download", "opencv-doc"], folder)
    for name in ("faces", "negatives"):
        (folder / name).mkdir(exist_ok=True)
    with zipfile.ZipFile(next(folder.glob("scikit_image-*.whl"))) as wheel:
        for member in wheel.namelist():
            if member.startswith("skimage/data/") and member.endswith((".png", ".jpg", ".npy")):
                (folder / "negatives" / Path(member).name).write_bytes(wheel.read(member))
    with tarfile.open(next(folder.glob("insightface-*.tar.gz"))) as sdist:
        for member in sdist.getmembers():
            if Path(member.name).name in FACES:
                (folder / "faces" / Path(member.name).name).write_bytes(
                    sdist.extractfile(member).read()
                )
    unpacked = folder / "opencv-doc"
    run(["dpkg-deb", "-x", next(folder.glob("opencv-doc_*.deb")).name, unpacked.name], folder)
    for image in (unpacked / "usr/share/doc/opencv-doc/examples/data").iterdir():
        if image.suffix in (".png", ".jpg"):
            (folder / "negatives" / image.name).write_bytes(image.read_bytes())
    grace = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    (folder / "faces" / grace.name).write_bytes(grace.read_bytes())
    for name in FACES:
        if (folder / "negatives" / name).exists():
            (folder / "negatives" / name).replace(folder / "faces" / name)
    done.touch()


def lfw_canvases(folder: Path) -> tuple[list[np.ndarray], list[np.ndarray], Box]:
    """The LFW face crops and non-face patches, each scaled up and centred on a gray canvas,
    and the face's box on its canvas."""
    crops = np.load(folder / "negatives" / "lfw_subset.npy")
    offset = (LFW_CANVAS - LFW_SIZE) // 2
    canvases = []
    for crop in crops:
        canvas = np.full((LFW_CANVAS, LFW_CANVAS), 128, np.uint8)
        scaled = cv2.resize(
            (crop * 255).round().astype(np.uint8), (LFW_SIZE, LFW_SIZE), cv2.INTER_CUBIC
        )
        canvas[offset : offset + LFW_SIZE, offset : offset + LFW_SIZE] = scaled
        canvases.append(cv2.cvtColor(canvas, cv2.COLOR_GRAY2BGR))
    return canvases[:100], canvases[100:], (offset, offset, LFW_SIZE, LFW_SIZE)


def iou(a: Box, b: Box) -> float:
    width = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    height = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    inner = max(width, 0) * max(height, 0)
    return inner / (a[2] * a[3] + b[2] * b[3] - inner)


def hits(found: list[Box], faces: list[Box]) -> int:
    """How many faces a found box matches (IoU >= 0.3, one box per face, greedy by overlap)."""
    pairs = sorted(
        ((iou(box, face), i, j) for i, box in enumerate(found) for j, face in enumerate(faces)),
        reverse=True,
    )
    used_boxes, used_faces = set(), set()
    for overlap, i, j in pairs:
        if overlap >= IOU_HIT and i not in used_boxes and j not in used_faces:
            used_boxes.add(i)
            used_faces.add(j)
    return len(used_faces)


def on_gray(detector: Callable[[np.ndarray], list[Box]]) -> Callable[[np.ndarray], list[Box]]:
    """The detector run on the gray version of a BGR image."""
    return lambda image: detector(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))


def negatives(folder: Path) -> Iterator[np.ndarray]:
    for path in sorted((folder / "negatives").iterdir()):
        if path.suffix in (".png", ".jpg") and not path.name.startswith(NOT_NEGATIVES):
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is not None:
                yield image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, required=True, help="where the photos are kept")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument(
        "--min-scores",
        type=float,
        nargs="+",
        default=[0.5, 0.6, 0.7],
        help="BlazeFace's, in colour",
    )
    args = parser.parse_args()

    fetch_photos(args.photos)
    cv2.setNumThreads(args.threads)
    blaze_default = BlazeFaceDetector(threads=args.threads)
    detectors: dict[str, Callable[[np.ndarray], list[Box]]] = {
        "haar (OpenCV, gray)": on_gray(HaarFaceDetector()),
        f"blazeface (gray, min_score {DEFAULT_MIN_SCORE})": on_gray(blaze_default),
    }
    for min_score in args.min_scores:
        detectors[f"blazeface (colour, min_score {min_score})"] = BlazeFaceDetector(
            min_score=min_score, threads=args.threads
        )
    photos = {name: cv2.imread(str(args.photos / "faces" / name)) for name in FACES}
    lfw_faces, lfw_patches, lfw_box = lfw_canvases(args.photos)
    others = list(negatives(args.photos))
    frame = cv2.resize(photos["astronaut.png"], (640, 480), interpolation=cv2.INTER_AREA)

    seconds: dict[str, list[float]] = {name: [] for name in detectors}
    for _ in range(args.repeats + 1):  # the first round warms up
        for name, detect in detectors.items():
            start = time.perf_counter()
            detect(frame)
            seconds[name].append(time.perf_counter() - start)

    faces_total = sum(len(boxes) for boxes in FACES.values())
    print(
        f"{faces_total} faces in {len(FACES)} photos, {len(lfw_faces)} LFW face crops; false "
        f"positives on those, on {len(lfw_patches)} LFW non-face patches and on {len(others)} "
        f"photos without faces; ms per 640x480 frame with {args.threads} thread(s)\n"
    )
    print(
        "| detector | photo faces found | LFW crops found | false positives (photos / LFW "
        "patches / no-face photos) | ms per 640x480 frame (median) |"
    )
    print("|---|---|---|---|---|")
    for name, detect in detectors.items():
        found_photos = false_photos = 0
        for photo, faces in FACES.items():
            boxes = detect(photos[photo])
            found = hits(boxes, faces)
            found_photos += found
            false_photos += len(boxes) - found
        found_lfw = false_lfw = 0
        for canvas in lfw_faces:
            boxes = detect(canvas)
            found = hits(boxes, [lfw_box])
            found_lfw += found
            false_lfw += len(boxes) - found
        false_patches = sum(len(detect(patch)) for patch in lfw_patches)
        false_others = sum(len(detect(image)) for image in others)
        print(
            f"| {name} | {found_photos}/{faces_total} | {found_lfw}/{len(lfw_faces)} | "
            f"{false_photos + false_lfw} / {false_patches} / {false_others} | "
            f"{statistics.median(seconds[name][1:]) * 1000:.1f} |"
        )
    print(f"\n`python {shlex.join(sys.argv)}`  ")


if __name__ == "__main__":
    main()
