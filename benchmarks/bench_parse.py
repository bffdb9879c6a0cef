"""Benchmark: FER2013 csv -> arrays, the reference pandas loop vs ours (cold, and from the cache).

    python benchmarks/bench_parse.py --csv ../shared/fer2013/fer2013.csv.gz --repeats 3

The reference (the baseline Keras implementation, seed 000) reads the csv with pandas and
converts every row with ``np.fromstring``; that loop is copied verbatim below and timed together
with its ``read_csv`` for all three splits. It is slow (several seconds), so it runs
``--reference-repeats`` times (default 1). "Ours cold" parses the same file without a cache;
"ours warm" loads from a cache filled beforehand (in a temp dir), found by the csv's path and
inode state (``stat``: inode, size, mtime and change time). The last row prices the alternative
key, a hash of the csv's content: the warm load plus a blake2b pass over the file. Each method's
arrays are checked against the reference's before anything is printed. Prints a markdown table
of medians and speed-ups, with the command line.
"""

from __future__ import annotations

import argparse
import hashlib
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from fer_lightning.data import load_fer2013_csv


def prepare_data(data):
    """The reference's conversion, verbatim."""
    image_array = np.zeros(shape=(len(data), 48, 48))
    image_label = np.array(list(map(int, data["emotion"])))

    for i, row in enumerate(data.index):
        image = np.fromstring(data.loc[row, "pixels"], dtype=int, sep=" ")
        image = np.reshape(image, (48, 48))
        image_array[i] = image

    return image_array, image_label


def reference_loading(csv: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The reference loading, split by split (it named PublicTest "test" and PrivateTest "val")."""
    data = pd.read_csv(csv)
    train_image_array, train_image_label = prepare_data(data[data["Usage"] == "Training"])
    test_image_array, test_image_label = prepare_data(data[data["Usage"] == "PublicTest"])
    val_image_array, val_image_label = prepare_data(data[data["Usage"] == "PrivateTest"])
    return {  # keyed by our split names for the comparison
        "train": (train_image_array, train_image_label),
        "val": (test_image_array, test_image_label),
        "test": (val_image_array, val_image_label),
    }


def content_digest(csv: str) -> str:
    """What a content-keyed cache would compute on every load: a hash of the whole file."""
    with open(csv, "rb") as file:
        return hashlib.file_digest(file, "blake2b").hexdigest()


def timed(run: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Median wall time of ``repeats`` calls, and the last result."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def check_same(ours: dict, reference: dict, label: str) -> None:
    for split, (images, labels) in reference.items():
        if not (
            np.array_equal(ours[split].images, images)
            and np.array_equal(ours[split].labels, labels)
        ):
            raise SystemExit(f"{label}: {split} arrays differ from the reference's")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--csv", required=True, help="fer2013.csv or fer2013.csv.gz")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each of ours (median)")
    parser.add_argument(
        "--reference-repeats", type=int, default=1, help="runs of the reference loop (median)"
    )
    args = parser.parse_args()

    reference_time, reference = timed(lambda: reference_loading(args.csv), args.reference_repeats)
    cold_time, cold = timed(lambda: load_fer2013_csv(args.csv), args.repeats)
    check_same(cold, reference, "ours cold")
    with tempfile.TemporaryDirectory() as cache_dir:
        load_fer2013_csv(args.csv, cache_dir=cache_dir)  # fill the cache
        warm_time, warm = timed(
            lambda: load_fer2013_csv(args.csv, cache_dir=cache_dir), args.repeats
        )
    check_same(warm, reference, "ours warm")
    hash_time, _ = timed(lambda: content_digest(args.csv), args.repeats)

    rows = sum(len(labels) for _, labels in reference.values())
    print(f"`python {shlex.join(sys.argv)}`  ")
    print(
        f"{rows:,} rows; python {sys.version.split()[0]}, numpy {np.__version__}, "
        f"pandas {pd.__version__}; medians of {args.reference_repeats} (reference) / "
        f"{args.repeats} (ours) runs\n"
    )
    print("| method | median s | speed-up vs reference |")
    print("|---|---:|---:|")
    for name, seconds in (
        ("reference: pandas read_csv + per-row np.fromstring", reference_time),
        ("ours, cold (no cache)", cold_time),
        ("ours, warm (from the .npz cache)", warm_time),
        ("ours, warm, if keyed by a content hash", warm_time + hash_time),
    ):
        print(f"| {name} | {seconds:.3f} | {reference_time / seconds:.1f}x |")


if __name__ == "__main__":
    main()
