"""Carry FER2013's Training and PublicTest rows to a remote GPU machine, and nothing of PrivateTest.

    python tools/remote_gpu/payload.py pack ../shared/fer2013/fer2013.csv.gz .gpu \\
        --ferplus ../shared/fer2013/fer2013new.csv
    python tools/remote_gpu/payload.py unpack .gpu /tmp/fer          # on the GPU machine

The remote run takes at most 64 MiB of working tree and the gzip csv alone is 90 MB. `pack` tiles
the images into one 8-bit PNG (lossless, ~52 MB for the 32,298 Training and PublicTest images)
and keeps each row's label and Usage, and the FER+ votes of those rows. `unpack` writes a
``fer2013.csv`` (and ``fer2013new.csv``) that parse to the same arrays, plus one mid-gray
placeholder PrivateTest row (the parser wants all three splits), so runs there use ``test=false``
and the protocol's PrivateTest stays on this machine.
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import numpy as np
from PIL import Image

from fer_lightning.classes import IMAGE_SIZE
from fer_lightning.data import load_fer2013_csv

CARRIED = {"train": "Training", "val": "PublicTest"}
PLACEHOLDER_ROW = f"6,{' '.join(['128'] * IMAGE_SIZE * IMAGE_SIZE)},PrivateTest\n"
# a FER+ row for the placeholder: ten votes for neutral, so that it keeps a majority label
PLACEHOLDER_VOTES = "PrivateTest,placeholder.png,10,0,0,0,0,0,0,0,0,0\n"
PIXEL_STRINGS = [str(value) for value in range(256)]


def pack(csv_path: Path, out_dir: Path, ferplus_csv: Path | None = None) -> None:
    """Write pixels.png, rows.csv.gz and (with ``ferplus_csv``) fer2013new.csv.gz to ``out_dir``."""
    splits = load_fer2013_csv(csv_path)
    images = np.concatenate([splits[split].images for split in CARRIED])
    labels = np.concatenate([splits[split].labels for split in CARRIED])
    usages = [usage for split, usage in CARRIED.items() for _ in splits[split].labels]
    side = int(np.ceil(np.sqrt(len(images))))  # a square grid of side x side faces
    grid = np.zeros((side * side, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    grid[: len(images)] = images
    grid = grid.reshape(side, side, IMAGE_SIZE, IMAGE_SIZE).transpose(0, 2, 1, 3)
    out_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid.reshape(side * IMAGE_SIZE, side * IMAGE_SIZE)).save(
        out_dir / "pixels.png", compress_level=9
    )
    with gzip.open(out_dir / "rows.csv.gz", "wt") as rows:
        rows.writelines(f"{label},{usage}\n" for label, usage in zip(labels, usages, strict=True))
    if ferplus_csv is not None:
        lines = ferplus_csv.read_text().splitlines(keepends=True)
        with gzip.open(out_dir / "fer2013new.csv.gz", "wt") as votes:
            votes.write(lines[0])
            votes.writelines(line for line in lines[1:] if line.split(",")[0] in CARRIED.values())


def unpack(payload_dir: Path, out_dir: Path) -> None:
    """Write fer2013.csv (and fer2013new.csv when packed) to ``out_dir``."""
    with gzip.open(payload_dir / "rows.csv.gz", "rt") as rows:
        labelled = [line.rstrip("\n").split(",") for line in rows]
    tiles = np.asarray(Image.open(payload_dir / "pixels.png"))
    side = tiles.shape[0] // IMAGE_SIZE
    faces = tiles.reshape(side, IMAGE_SIZE, side, IMAGE_SIZE).transpose(0, 2, 1, 3)
    faces = faces.reshape(side * side, IMAGE_SIZE * IMAGE_SIZE)[: len(labelled)]
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "fer2013.csv", "w") as csv:
        csv.write("emotion,pixels,Usage\n")
        for (label, usage), pixels in zip(labelled, faces, strict=True):
            csv.write(f"{label},{' '.join([PIXEL_STRINGS[v] for v in pixels.tolist()])},{usage}\n")
        csv.write(PLACEHOLDER_ROW)
    votes = payload_dir / "fer2013new.csv.gz"
    if votes.is_file():
        with gzip.open(votes, "rt") as packed:
            (out_dir / "fer2013new.csv").write_text(packed.read() + PLACEHOLDER_VOTES)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    pack_parser = commands.add_parser("pack", help="csv -> payload folder")
    pack_parser.add_argument("csv", type=Path)
    pack_parser.add_argument("out_dir", type=Path)
    pack_parser.add_argument("--ferplus", type=Path, help="fer2013new.csv, to carry FER+ too")
    unpack_parser = commands.add_parser("unpack", help="payload folder -> csv files")
    unpack_parser.add_argument("payload_dir", type=Path)
    unpack_parser.add_argument("out_dir", type=Path)
    args = parser.parse_args()
    if args.command == "pack":
        pack(args.csv, args.out_dir, args.ferplus)
    else:
        unpack(args.payload_dir, args.out_dir)


if __name__ == "__main__":
    main()
