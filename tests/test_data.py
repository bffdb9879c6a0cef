"""Data layer: csv parsing and validation, cache, synthetic set, image folders, class weights,
transforms and datamodules. Data is built in tmp_path; the real FER2013 only with FER2013_CSV."""

from __future__ import annotations

import gzip
import math
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from fer_lightning.classes import EMOTIONS, IMAGE_SIZE
from fer_lightning.data import (
    AUGMENT_KNOBS,
    BatchAugment,
    FER2013DataModule,
    FER2013FoldersDataModule,
    SyntheticFER2013DataModule,
    class_weights,
    fer2013_csv,
    load_fer2013_csv,
    load_fer2013_folders,
    normalize,
    stratified_split_indices,
    stratified_val_counts,
    write_synthetic_fer2013_csv,
)
from fer_lightning.data.synthetic import FER2013_TRAINING_COUNTS, class_counts_for
from fer_lightning.errors import DataFormatError, FERUserError
from tests.conftest import HEADER, PIXELS, VALID_ROWS, write_folders

SIZES = {"num_train": 70, "num_val": 14, "num_test": 14}


@pytest.fixture(scope="module")
def synthetic_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_fer2013_csv(tmp_path_factory.mktemp("syn") / "s.csv", seed=3, **SIZES)


def reference_parse(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Slow, obviously correct parse of a valid fer2013 csv, to compare the fast parser with."""
    lines = path.read_bytes().decode("utf-8-sig").splitlines()
    names = lines[0].split(",")
    rows = [dict(zip(names, line.split(","), strict=True)) for line in lines[1:] if line]
    splits = {}
    for usage, split in fer2013_csv.SPLITS.items():
        chosen = [row for row in rows if row["Usage"] == usage]
        images = np.array([[int(v) for v in row["pixels"].split(" ")] for row in chosen], np.uint8)
        labels = np.array([int(row["emotion"]) for row in chosen], np.int64)
        splits[split] = (images.reshape(-1, 48, 48), labels)
    return splits


def assert_same_splits(actual: dict, expected: dict) -> None:
    assert set(actual) == {"train", "val", "test"}
    for split, arrays in actual.items():
        other = expected[split]
        images, labels = (other.images, other.labels) if hasattr(other, "images") else other
        assert arrays.images.dtype == np.uint8 and arrays.labels.dtype == np.int64
        np.testing.assert_array_equal(arrays.images, images)
        np.testing.assert_array_equal(arrays.labels, labels)


def write_csv(path: Path, rows: list[str], header: str = HEADER, newline: str = "\n") -> Path:
    path.write_text(newline.join([header, *rows]) + newline, newline="")
    return path


# ------------------------------------------------------------------------------------ csv parsing


def test_synthetic_csv_parses_to_expected_splits(synthetic_csv: Path) -> None:
    splits = load_fer2013_csv(synthetic_csv)
    assert_same_splits(splits, reference_parse(synthetic_csv))
    for split, size in zip(("train", "val", "test"), SIZES.values(), strict=True):
        assert splits[split].images.shape == (size, IMAGE_SIZE, IMAGE_SIZE)
        assert np.bincount(splits[split].labels, minlength=7).tolist() == class_counts_for(size)


def test_gzip_is_detected_by_magic_bytes_not_suffix(synthetic_csv: Path, tmp_path: Path) -> None:
    expected = load_fer2013_csv(synthetic_csv)
    for name in ("data.csv.gz", "data_gzipped.csv"):
        (tmp_path / name).write_bytes(gzip.compress(synthetic_csv.read_bytes()))
        assert_same_splits(load_fer2013_csv(tmp_path / name), expected)


def test_bom_crlf_and_column_order_are_accepted(synthetic_csv: Path, tmp_path: Path) -> None:
    expected = load_fer2013_csv(synthetic_csv)
    lines = synthetic_csv.read_text().splitlines()
    bom_crlf = tmp_path / "bom_crlf.csv"
    bom_crlf.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n")
    assert_same_splits(load_fer2013_csv(bom_crlf), expected)
    reordered = [",".join(reversed(line.split(","))) for line in lines]  # Usage,pixels,emotion
    no_final_newline = tmp_path / "reordered.csv"
    no_final_newline.write_text("\n".join(reordered))
    assert_same_splits(load_fer2013_csv(no_final_newline), expected)


def test_many_small_blocks_give_same_arrays_and_line_numbers(
    synthetic_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = load_fer2013_csv(synthetic_csv)
    monkeypatch.setattr(fer2013_csv, "_BLOCK_SIZE", 20_000)  # ~2 rows per block
    monkeypatch.setattr(fer2013_csv, "_READ_SIZE", 3_000)
    gz = tmp_path / "s.csv.gz"
    gz.write_bytes(gzip.compress(synthetic_csv.read_bytes()))
    assert_same_splits(load_fer2013_csv(synthetic_csv), expected)
    assert_same_splits(load_fer2013_csv(gz), expected)
    lines = synthetic_csv.read_text().splitlines()
    lines[81] = lines[81].replace(" ", "  ", 1)  # file line 82, far past the first block
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=r"bad\.csv:82: field 'pixels': value #2 "):
        load_fer2013_csv(bad)


def test_multi_member_gzip_with_interleaved_splits(synthetic_csv: Path, tmp_path: Path) -> None:
    """The last member's size is a poor row bound (the buffer must grow); rows of a split that are
    not contiguous are gathered in file order."""
    header, *rows = synthetic_csv.read_text().splitlines(keepends=True)
    interleaved = rows[::2] + rows[1::2]
    path = tmp_path / "members.csv.gz"
    members = [header + "".join(interleaved[:-3]), "".join(interleaved[-3:])]
    gzipped = b"".join(gzip.compress(member.encode()) for member in members)
    path.write_bytes(gzipped + b"\0" * 64)  # zero padding after the last member is allowed
    reordered = tmp_path / "interleaved.csv"
    reordered.write_text(header + "".join(interleaved))
    splits = load_fer2013_csv(path)
    assert_same_splits(splits, reference_parse(reordered))
    assert len(splits["train"].labels) == SIZES["num_train"]


def test_reader_thread_stops_after_an_error(tmp_path: Path) -> None:
    rows = [f"3,{PIXELS},Training"] * 300 + [f"3,{PIXELS},Nope"] + VALID_ROWS
    path = tmp_path / "late_error.csv"
    path.write_bytes(gzip.compress(("\n".join([HEADER, *rows]) + "\n").encode()))
    with pytest.raises(DataFormatError, match=r"late_error\.csv:302: field 'Usage'"):
        load_fer2013_csv(path)
    assert not [t for t in threading.enumerate() if t.name == "fer2013-reader" and t.is_alive()]


def test_extreme_and_zero_padded_values(tmp_path: Path) -> None:
    values = ["0", "255", "007", "99", "5"] * 460 + ["1", "2", "250", "10"]
    path = write_csv(tmp_path / "edge.csv", [f"2,{' '.join(values)},Training", *VALID_ROWS])
    first = load_fer2013_csv(path)["train"].images[0].reshape(-1)
    assert first.tolist() == [int(value) for value in values]


BAD_PIXELS_2303 = PIXELS.rsplit(" ", 1)[0]
BAD_ROWS = [
    # (bad row, fragments the message must contain)
    (f"7,{PIXELS},Training", ["field 'emotion'", "(got '7')"]),
    (f"-1,{PIXELS},Training", ["field 'emotion'", "(got '-1')"]),
    (f"happy,{PIXELS},Training", ["field 'emotion'", "(got 'happy')"]),
    (f"3,{BAD_PIXELS_2303},Training", ["field 'pixels'", "expected 2304 values, got 2303"]),
    (f"3,{PIXELS} 1,Training", ["field 'pixels'", "expected 2304 values, got 2305"]),
    (f"3,{PIXELS.replace('4', '12a', 1)},Training", ["field 'pixels'", "#5", "(got '12a')"]),
    (f"3,{PIXELS.replace('255', '256')},Training", ["field 'pixels'", "#256", "(got '256')"]),
    (f"3,-1 {BAD_PIXELS_2303},Training", ["field 'pixels'", "#1", "(got '-1')"]),
    (f"3,{PIXELS.replace(' ', '  ', 1)},Training", ["field 'pixels'", "#2", "single spaces"]),
    (f"3,{PIXELS.replace('7', '1234', 1)},Training", ["field 'pixels'", "(got '1234')"]),
    (f"3,{PIXELS},Validation", ["field 'Usage'", "(got 'Validation')"]),
    (f"3,{PIXELS}", ["expected 3 comma-separated fields, got 2"]),
    (f"3,{PIXELS},Training,x", ["expected 3 comma-separated fields, got 4"]),
]


@pytest.mark.parametrize(("bad_row", "fragments"), BAD_ROWS)
def test_invalid_row_reports_file_line_field_and_value(
    tmp_path: Path, bad_row: str, fragments: list[str]
) -> None:
    path = write_csv(tmp_path / "broken.csv", [VALID_ROWS[0], bad_row, *VALID_ROWS])
    with pytest.raises(DataFormatError) as caught:
        load_fer2013_csv(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:3: ")
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_pixels_in_last_column_with_an_extra_comma(tmp_path: Path) -> None:
    rows = [f"{usage},{label},{PIXELS}" for label, _, usage in (r.split(",") for r in VALID_ROWS)]
    path = write_csv(
        tmp_path / "last.csv", [*rows, f"Training,3,{PIXELS},1"], "Usage,emotion,pixels"
    )
    with pytest.raises(DataFormatError, match=r"last\.csv:5: row: expected 3 .*, got 4"):
        load_fer2013_csv(path)


@pytest.mark.parametrize(
    ("header", "fragments"),
    [
        ("emotion,pixels", ["missing ['Usage']"]),
        ("emotion,pixels,Usage,extra", ["unexpected ['extra']"]),
        ("emotion,pixel,Usage", ["missing ['pixels']", "unexpected ['pixel']"]),
    ],
)
def test_bad_header_names_the_columns(tmp_path: Path, header: str, fragments: list[str]) -> None:
    path = write_csv(tmp_path / "header.csv", VALID_ROWS, header)
    with pytest.raises(DataFormatError) as caught:
        load_fer2013_csv(path)
    assert str(caught.value).startswith(f"{path}:1: header")
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_empty_split_names_split_and_file(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "no_test.csv", VALID_ROWS[:2])
    with pytest.raises(DataFormatError, match=r"no_test\.csv: split 'PrivateTest' \(test\) has no"):
        load_fer2013_csv(path)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"", "file is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe binary", "header is not UTF-8"),
        (b"\x1f\x8b\x08\x00junk that is not deflate", "corrupt or truncated gzip"),
    ],
)
def test_empty_and_binary_files(tmp_path: Path, content: bytes, fragment: str) -> None:
    path = tmp_path / "odd.csv"
    path.write_bytes(content)
    with pytest.raises(DataFormatError, match=fragment) as caught:
        load_fer2013_csv(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_binary_or_huge_headers_give_a_short_message(tmp_path: Path) -> None:
    nul = tmp_path / "nul.csv"
    nul.write_bytes(b"\0" * 100_000)
    with pytest.raises(DataFormatError, match=r"nul\.csv:1: header holds NUL bytes") as caught:
        load_fer2013_csv(nul)
    assert len(str(caught.value)) < 400
    wide = write_csv(tmp_path / "wide.csv", VALID_ROWS, ",".join(f"c{i}" for i in range(5000)))
    with pytest.raises(DataFormatError, match=r"unexpected \['c0', 'c1', 'c2', \.\.\. 4997 more\]"):
        load_fer2013_csv(wide)


def test_truncated_gzip(synthetic_csv: Path, tmp_path: Path) -> None:
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(gzip.compress(synthetic_csv.read_bytes())[:-5000])
    with pytest.raises(DataFormatError, match=r"cut\.csv\.gz: corrupt or truncated gzip") as caught:
        load_fer2013_csv(path)
    assert isinstance(caught.value.__cause__, EOFError)


def test_missing_file_explains_where_to_get_fer2013(tmp_path: Path) -> None:
    with pytest.raises(FERUserError) as caught:
        load_fer2013_csv(tmp_path / "nowhere.csv")
    message = str(caught.value)
    assert not isinstance(caught.value, DataFormatError)
    for fragment in (
        "nowhere.csv",
        "does not exist",
        "Kaggle",
        "data.csv_path=",
        "FER2013_CSV",
        "data=synthetic",
    ):
        assert fragment in message


def test_synthetic_data_points_a_csv_path_at_the_csv_data_config(tmp_path: Path) -> None:
    """train.py's default data is synthetic: a csv given to it is not read, and the user is
    told to add data=fer2013."""
    with pytest.raises(
        FERUserError,
        match=r"data\.csv_path='x\.csv' is not used by the synthetic.*"
        r"add data=fer2013",
    ):
        SyntheticFER2013DataModule(str(tmp_path), csv_path="x.csv")


def test_tilde_is_expanded(synthetic_csv: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(synthetic_csv.parent))
    assert len(load_fer2013_csv("~/s.csv")["train"].labels) == SIZES["num_train"]


# ------------------------------------------------------------------------------------------ cache


def test_cache_hit_returns_identical_arrays_without_parsing(
    synthetic_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    first = load_fer2013_csv(synthetic_csv, cache_dir=cache)
    assert len(list(cache.glob("*.npz"))) == 1 and not list(cache.glob(".tmp-*"))

    def fail(path: Path) -> None:
        raise AssertionError("parsed although cached")

    monkeypatch.setattr(fer2013_csv, "_parse_csv", fail)
    assert_same_splits(load_fer2013_csv(synthetic_csv, cache_dir=cache), first)


def test_changed_csv_invalidates_cache(synthetic_csv: Path, tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(synthetic_csv.read_bytes())
    cache = tmp_path / "cache"
    before = load_fer2013_csv(path, cache_dir=cache)
    lines = path.read_text().splitlines()
    lines[1] = "1" + lines[1][1:]  # same size, new label
    path.write_text("\n".join(lines) + "\n")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    after = load_fer2013_csv(path, cache_dir=cache)
    assert after["train"].labels[0] == 1 != before["train"].labels[0]
    assert len(list(cache.glob("*.npz"))) == 1  # the entry of the earlier csv is replaced


def test_a_csv_rewritten_with_its_old_size_and_mtime_is_parsed_again(
    synthetic_csv: Path, tmp_path: Path
) -> None:
    """What `cp -p` or `rsync -a` of a corrected csv does: same size, same mtime, new labels."""
    path = tmp_path / "data.csv"
    path.write_bytes(synthetic_csv.read_bytes())
    cache = tmp_path / "cache"
    before = load_fer2013_csv(path, cache_dir=cache)
    stat = path.stat()
    lines = path.read_text().splitlines()
    lines[1] = ("1" if lines[1][0] != "1" else "2") + lines[1][1:]
    path.write_text("\n".join(lines) + "\n")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    after = load_fer2013_csv(path, cache_dir=cache)
    assert after["train"].labels[0] == int(lines[1][0]) != before["train"].labels[0]


def test_temp_files_of_killed_cache_writes_are_removed(synthetic_csv: Path, tmp_path: Path) -> None:
    """A cache write killed mid-way leaves its temp file; the next write removes the temp files
    of writers that are gone, and leaves a live writer's alone."""
    cache = tmp_path / "cache"
    cache.mkdir()
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    host = socket.gethostname().replace("-", "_")
    killed = cache / f".tmp-{host}-{gone}-0123abcd.npz"
    live = cache / f".tmp-{host}-{os.getpid()}-4567cdef.npz"
    for temp in (killed, live):
        temp.write_bytes(b"PK\x03\x04 half an npz")
    load_fer2013_csv(synthetic_csv, cache_dir=cache)
    assert not killed.exists() and live.exists()
    assert len(list(cache.glob("fer2013-*.npz"))) == 1


def test_invalid_csv_writes_no_cache(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "bad.csv", [f"9,{PIXELS},Training", *VALID_ROWS])
    with pytest.raises(DataFormatError, match=r"bad\.csv:2: field 'emotion'.*'9'"):
        load_fer2013_csv(path, cache_dir=tmp_path / "cache")
    cache = tmp_path / "cache"
    assert not cache.exists() or not any(cache.iterdir())


def test_a_cache_dir_that_is_a_file_is_one_line(synthetic_csv: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "cache"
    blocker.write_text("a file")
    with pytest.raises(
        FERUserError, match=r"cache.* is a file, not a folder; point data.cache_dir"
    ):
        load_fer2013_csv(synthetic_csv, cache_dir=blocker)


def test_corrupt_cache_is_ignored_and_rewritten(synthetic_csv: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    expected = load_fer2013_csv(synthetic_csv, cache_dir=cache)
    (cache_file,) = cache.glob("*.npz")
    cache_file.write_bytes(b"PK\x03\x04 definitely not a zip archive")
    assert_same_splits(load_fer2013_csv(synthetic_csv, cache_dir=cache), expected)
    with np.load(cache_file) as stored:
        np.testing.assert_array_equal(stored["train_labels"], expected["train"].labels)


# -------------------------------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic_imbalanced_and_never_misses_a_class(tmp_path: Path) -> None:
    first = write_synthetic_fer2013_csv(tmp_path / "a.csv", 40, 7, 20, seed=1)
    again = write_synthetic_fer2013_csv(tmp_path / "b.csv", 40, 7, 20, seed=1)
    other = write_synthetic_fer2013_csv(tmp_path / "c.csv", 40, 7, 20, seed=2)
    assert first.read_bytes() == again.read_bytes() != other.read_bytes()
    assert first.read_text().startswith(HEADER + "\n") and not list(tmp_path.glob(".tmp-*"))
    counts = class_counts_for(3000)
    assert sum(counts) == 3000 and min(counts) == counts[1] > 0  # Disgust rarest, never empty
    assert counts.index(max(counts)) == 3  # Happy most common, as in FER2013
    ratios = np.array(counts) / 3000 - np.array(FER2013_TRAINING_COUNTS) / 28709
    assert np.abs(ratios).max() < 0.002
    with pytest.raises(FERUserError, match="at least 7 rows"):
        class_counts_for(6)


def test_synthetic_classes_differ_visibly(synthetic_csv: Path) -> None:
    """Class means differ more between classes than the noise of the mean within a class."""
    train = load_fer2013_csv(synthetic_csv)["train"]
    means = np.stack([train.images[train.labels == c].mean(0) for c in (0, 3, 5)])
    assert np.abs(means[1] - means[2]).mean() > 3 and np.abs(means[0] - means[1]).mean() > 3


# ---------------------------------------------------------------------------------- class weights


def test_class_weight_math() -> None:
    counts = [10, 30, 60]
    assert class_weights(counts, "none") is None
    balanced = class_weights(counts, "balanced")
    assert balanced == pytest.approx([100 / 30, 100 / 90, 100 / 180])
    sqrt = class_weights(counts, "sqrt")
    assert sum(c * w for c, w in zip(counts, sqrt, strict=True)) / 100 == pytest.approx(1.0)
    assert sqrt[0] / sqrt[2] == pytest.approx(math.sqrt(6))
    with pytest.raises(FERUserError, match=r"unknown data\.class_weighting 'frequency'"):
        class_weights(counts, "frequency")
    with pytest.raises(FERUserError, match="class 1 has 0 training rows"):
        class_weights([5, 0, 5], "balanced")


# ---------------------------------------------------------------------------- stratified split


def test_stratified_split_of_fer2013_training_counts() -> None:
    val_counts = stratified_val_counts(list(FER2013_TRAINING_COUNTS), 0.2)
    assert sum(val_counts) == 5741 and sum(FER2013_TRAINING_COUNTS) - sum(val_counts) == 22968
    labels = np.repeat(np.arange(7), FER2013_TRAINING_COUNTS)
    train, val = stratified_split_indices(labels, 0.2, seed=42)
    assert (len(train), len(val)) == (22968, 5741)
    assert np.intersect1d(train, val).size == 0 and len(np.union1d(train, val)) == 28709
    assert np.bincount(labels[val], minlength=7).tolist() == val_counts
    for count, val_count in zip(FER2013_TRAINING_COUNTS, val_counts, strict=True):
        assert abs(val_count / count - 0.2) <= 0.5 / count
    again, _ = stratified_split_indices(labels, 0.2, seed=42)
    other, _ = stratified_split_indices(labels, 0.2, seed=43)
    assert np.array_equal(train, again) and not np.array_equal(train, other)
    for fraction in (0.0, 1.0, -0.1):
        with pytest.raises(FERUserError, match=r"data\.val_fraction must be in \(0, 1\)"):
            stratified_val_counts([10], fraction)


@pytest.mark.parametrize(
    ("val_fraction", "empty"), [(0.01, "validation"), (0.9, "training")], ids=["no-val", "no-train"]
)
def test_folder_split_that_leaves_a_split_empty_is_one_line(tmp_path, val_fraction, empty):
    # 5 images per class: 0.01 rounds every class to 0 validation rows, 0.9 to all of them
    write_folders(tmp_path)
    with pytest.raises(
        FERUserError, match=f"val_fraction={val_fraction} of its 35 images leaves no {empty} rows"
    ):
        load_fer2013_folders(tmp_path, val_fraction=val_fraction)


# --------------------------------------------------------------------------------- image folders


def test_folders_round_trip(tmp_path: Path) -> None:
    written = write_folders(tmp_path)
    splits = load_fer2013_folders(tmp_path, val_fraction=0.2, seed=42)
    assert len(splits["train"].labels) == 28 and len(splits["val"].labels) == 7
    assert np.bincount(splits["val"].labels, minlength=7).tolist() == [1] * 7
    test = splits["test"]
    assert test.labels.tolist() == sorted([label for label in range(7) for _ in range(2)])
    np.testing.assert_array_equal(test.images[0], written["test"]["0/0"])
    seen = np.concatenate([splits["train"].images, splits["val"].images])
    expected = np.stack(list(written["train"].values()))
    assert sorted(map(bytes, seen)) == sorted(map(bytes, expected))


def test_folders_errors(tmp_path: Path) -> None:
    write_folders(tmp_path, per_class=1)
    (tmp_path / "train" / "contempt").mkdir()
    with pytest.raises(
        FERUserError, match="unknown class folder 'contempt'; expected one of angry"
    ):
        load_fer2013_folders(tmp_path)
    (tmp_path / "train" / "contempt").rmdir()
    junk = tmp_path / "test" / "happy" / "broken.png"
    junk.write_bytes(b"not a png")
    with pytest.raises(DataFormatError, match=r"broken\.png: unreadable image"):
        load_fer2013_folders(tmp_path)
    Image.fromarray(np.zeros((64, 48), np.uint8)).save(junk)
    with pytest.raises(DataFormatError, match=r"broken\.png: image is 48x64, expected 48x48"):
        load_fer2013_folders(tmp_path)


# ------------------------------------------------------------------------------------- transforms


@pytest.mark.parametrize("in_channels", [1, 3])
def test_normalize_scales_and_replicates(in_channels: int) -> None:
    images = torch.arange(2 * 2304).remainder(256).to(torch.uint8).reshape(2, 1, 48, 48)
    out = normalize(images, in_channels)
    assert out.shape == (2, in_channels, 48, 48) and out.dtype == torch.float32
    for channel in out.unbind(1):
        torch.testing.assert_close(channel, images[:, 0].float() / 255 * 2 - 1)
    assert out.min() == -1.0 and out.max() == 1.0
    with pytest.raises(FERUserError, match="in_channels must be 1"):
        normalize(images, 2)


def _batch(in_channels: int = 1, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (size, 1, 48, 48), dtype=torch.uint8, generator=generator)
    return normalize(images, in_channels), torch.arange(size) % 7


def test_batch_augment_flip_and_whole_pixel_shifts_are_exact() -> None:
    images, labels = _batch()
    flipped, same_labels = BatchAugment({"hflip": 1.0})(images, labels)
    torch.testing.assert_close(flipped, images.flip(-1))
    assert torch.equal(same_labels, labels)
    torch.manual_seed(0)
    shifted, _ = BatchAugment({"pad_crop": 3})(images, labels)
    interior = (slice(None), slice(3, -3), slice(3, -3))
    offsets = [(dy, dx) for dy in range(-3, 4) for dx in range(-3, 4)]
    for image, out in zip(images, shifted, strict=True):
        # each output is its input moved by whole pixels, one (dy, dx) per image
        matches = [
            (dy, dx)
            for dy, dx in offsets
            if torch.allclose(image.roll((-dy, -dx), (1, 2))[interior], out[interior], atol=1e-5)
        ]
        assert len(matches) == 1
    assert not torch.equal(shifted, images)


@pytest.mark.parametrize("in_channels", [1, 3])
def test_batch_augment_every_knob_is_random_per_image_and_seeded(in_channels: int) -> None:
    images, labels = _batch(in_channels)
    every_knob = OmegaConf.create(
        {
            "random_resized_crop_scale": [0.8, 1.0],
            "hflip": 0.5,
            "affine_degrees": 10,
            "affine_translate": 0.1,
            "affine_scale": [0.9, 1.1],
            "random_erasing": 0.5,
        }
    )
    augment = BatchAugment(every_knob)
    torch.manual_seed(1)
    first, first_labels = augment(images, labels)
    torch.manual_seed(1)
    again, _ = augment(images, labels)
    assert torch.equal(first, again)  # the global seed decides every draw
    assert first.shape == images.shape and torch.equal(first_labels, labels)
    assert first.min() >= -1.0 and first.max() <= 1.0
    changed = [not torch.allclose(out, image) for out, image in zip(first, images, strict=True)]
    assert all(changed)
    if in_channels == 3:  # replicated gray stays replicated
        assert torch.equal(first[:, 0], first[:, 2])
    erased = BatchAugment({"random_erasing": 1.0})(images, labels)[0]
    zero_share = (erased == 0).float().mean(dim=(1, 2, 3))
    assert ((zero_share >= 0.02 * 0.9) & (zero_share <= 0.34)).all()


def _coordinate_ramps(size: int = 16) -> torch.Tensor:
    """``size`` identical (2, 48, 48) images whose channels are the x and the y of each pixel's
    centre in grid_sample's [-1, 1] coordinates: an augmented image shows where it sampled."""
    centres = (torch.arange(IMAGE_SIZE, dtype=torch.float32) * 2 + 1) / IMAGE_SIZE - 1
    y, x = torch.meshgrid(centres, centres, indexing="ij")
    return torch.stack([x, y]).expand(size, -1, -1, -1).contiguous()


def _sampled_linear_maps(augmented: torch.Tensor) -> torch.Tensor:
    """(B, 2, 2) linear parts of the maps from output to input coordinates of augmented
    coordinate ramps, read off the central pixels (which sample inside the image, where
    bilinear sampling of a ramp is exact)."""
    low, high = 12, 35
    span = (high - low) * 2 / IMAGE_SIZE
    central = augmented[..., low : high + 1, low : high + 1]
    d_dx = (central[..., :, -1] - central[..., :, 0]).mean(-1) / span
    d_dy = (central[..., -1, :] - central[..., 0, :]).mean(-1) / span
    return torch.stack([d_dx, d_dy], dim=-1)


def test_batch_augment_random_crop_zooms_each_image_within_its_area_range() -> None:
    """random_resized_crop_scale alone: each image shows a crop of its own size, whose area
    share and aspect stay within the configured and torchvision's ranges."""
    torch.manual_seed(0)
    cropped, _ = BatchAugment({"random_resized_crop_scale": [0.5, 0.7]})(
        _coordinate_ramps(), torch.zeros(16, dtype=torch.int64)
    )
    maps = _sampled_linear_maps(cropped)
    widths, heights = maps[:, 0, 0], maps[:, 1, 1]
    torch.testing.assert_close(maps[:, 0, 1], torch.zeros(16), atol=1e-4, rtol=0)  # no turn
    areas = widths * heights
    assert ((areas > 0.5 - 1e-4) & (areas < 0.7 + 1e-4)).all(), areas
    aspects = widths / heights
    assert ((aspects > 3 / 4 - 1e-4) & (aspects < 4 / 3 + 1e-4)).all(), aspects
    assert len(set(areas.round(decimals=3).tolist())) == 16  # a crop per image


def test_batch_augment_hflip_flips_each_image_on_its_own_draw() -> None:
    """hflip=0.5 on 64 distinct images: some come out mirrored, exactly, and some untouched."""
    images, labels = _batch(size=64)
    torch.manual_seed(0)
    out, _ = BatchAugment({"hflip": 0.5})(images, labels)
    flipped = []
    for image, result in zip(images, out, strict=True):
        if torch.allclose(result, image.flip(-1), atol=1e-5):
            flipped.append(True)
        else:
            torch.testing.assert_close(result, image, atol=1e-5, rtol=0)
            flipped.append(False)
    assert 0 < sum(flipped) < 64, sum(flipped)


def test_batch_augment_rotation_turns_identical_images_by_different_angles() -> None:
    """affine_degrees alone: identical inputs come out turned by a different angle each, all
    within the configured range."""
    torch.manual_seed(0)
    turned, _ = BatchAugment({"affine_degrees": 10})(
        _coordinate_ramps(), torch.zeros(16, dtype=torch.int64)
    )
    maps = _sampled_linear_maps(turned)
    angles = torch.atan2(maps[:, 1, 0], maps[:, 0, 0]).rad2deg()
    torch.testing.assert_close(maps[:, 0, 0], maps[:, 1, 1], atol=1e-4, rtol=0)  # no zoom
    assert (angles.abs() <= 10 + 1e-3).all(), angles
    assert len(set(angles.round(decimals=2).tolist())) == 16, angles
    assert all(
        not torch.allclose(turned[i], turned[j]) for i in range(16) for j in range(i + 1, 16)
    )


@pytest.mark.parametrize("knob", ["mixup_alpha", "cutmix_alpha"])
def test_batch_augment_mixing_gives_probability_targets(knob: str) -> None:
    images, labels = _batch()
    torch.manual_seed(0)
    mixed, targets = BatchAugment({knob: 1.0}, num_classes=7)(images, labels)
    assert mixed.shape == images.shape and targets.shape == (16, 7)
    torch.testing.assert_close(targets.sum(dim=1), torch.ones(16))
    # every row mixes the image's own label with its partner's (torchvision rolls the batch by 1)
    own = targets.gather(1, labels[:, None]).squeeze(1)
    partner = targets.gather(1, labels.roll(1)[:, None]).squeeze(1)
    torch.testing.assert_close(own + partner, torch.ones(16))
    assert not torch.equal(mixed, images)


def test_batch_augment_rejects_bad_options() -> None:
    with pytest.raises(FERUserError, match=r"unknown augment option.*rotate") as caught:
        BatchAugment({"rotate": 5})
    assert all(knob in str(caught.value) for knob in AUGMENT_KNOBS)
    with pytest.raises(FERUserError, match="either random_resized_crop_scale or pad_crop"):
        BatchAugment({"random_resized_crop_scale": [0.8, 1.0], "pad_crop": 4})
    with pytest.raises(FERUserError, match=r"augment hflip: invalid value 2\.0"):
        BatchAugment({"hflip": 2.0})
    with pytest.raises(FERUserError, match=r"augment affine_scale: invalid value \[1.1, 0.9\]"):
        BatchAugment({"affine_scale": [1.1, 0.9]})
    with pytest.raises(FERUserError, match="augment random_resized_crop_scale: invalid value"):
        BatchAugment({"random_resized_crop_scale": 0.8})
    with pytest.raises(FERUserError, match="augment mixup_alpha: invalid value 'high'"):
        BatchAugment({"mixup_alpha": "high"})


# ------------------------------------------------------------------------------------ datamodules


@pytest.mark.parametrize(
    ("pin_memory", "device", "pinned"),
    [(None, None, False), (None, "cpu", False), (None, "cuda", True), (False, "cuda", False)],
)
def test_loaders_pin_memory_when_asked_or_by_default_when_training_on_a_gpu(
    synthetic_csv: Path, pin_memory: bool | None, device: str | None, pinned: bool
) -> None:
    module = FER2013DataModule(str(synthetic_csv), pin_memory=pin_memory)
    if device is not None:  # what the loaders read of the trainer attached by Lightning
        module.trainer = SimpleNamespace(
            strategy=SimpleNamespace(root_device=torch.device(device)),
            training=False,
            world_size=1,
        )
    assert module.train_dataloader().pin_memory is pinned
    assert module.val_dataloader().pin_memory is pinned


def test_csv_datamodule_batches_counts_and_weights(synthetic_csv: Path, tmp_path: Path) -> None:
    augment = OmegaConf.create({"hflip": 0.5, "affine_scale": [0.9, 1.1]})
    module = FER2013DataModule(
        str(synthetic_csv),
        cache_dir=str(tmp_path / "cache"),
        batch_size=16,
        in_channels=3,
        class_weighting="balanced",
        augment=augment,
        eval_batch_size=10,
    )
    module.setup("fit")
    module.setup("fit")  # idempotent
    assert module.class_names == EMOTIONS and module.num_classes == 7
    assert module.class_counts() == class_counts_for(SIZES["num_train"])
    assert module.class_weights() == pytest.approx(
        class_weights(class_counts_for(SIZES["num_train"]), "balanced")
    )
    train = module.train_dataloader()
    assert len(train) == math.ceil(70 / 16)  # the last, smaller batch is kept
    x, y = next(iter(train))
    assert x.shape == (16, 3, 48, 48) and x.dtype == torch.float32
    assert y.shape == (16,) and y.dtype == torch.int64
    x, y = next(iter(module.val_dataloader()))
    assert x.shape == (10, 3, 48, 48)
    expected = torch.from_numpy(module.split_arrays("val").images[:10]).float() / 127.5 - 1
    torch.testing.assert_close(x[:, 0], expected)
    test_labels = torch.cat([y for _, y in module.test_dataloader()])
    assert test_labels.tolist() == module.split_arrays("test").labels.tolist()
    assert module.hparams.augment == {"hflip": 0.5, "affine_scale": [0.9, 1.1]}
    saved = tmp_path / "hparams.pt"
    torch.save(dict(module.hparams), saved)
    assert torch.load(saved, weights_only=True)["augment"]["affine_scale"] == [0.9, 1.1]


def test_train_loader_shuffles_every_pass_and_eval_loaders_keep_file_order(
    synthetic_csv: Path, tmp_path: Path
) -> None:
    """Training batches come in a new random order each pass; val and test in file order."""
    module = FER2013DataModule(
        str(synthetic_csv), cache_dir=str(tmp_path / "cache"), batch_size=16, in_channels=3
    )

    def row_order(loader, split: str) -> list[int]:
        rows = {bytes(image): row for row, image in enumerate(module.split_arrays(split).images)}
        assert len(rows) == len(module.split_arrays(split).images), "setup: distinct images"
        images = torch.cat([x for x, _ in loader])[:, 0]
        pixels = ((images + 1) * 127.5).round().to(torch.uint8).numpy()
        return [rows[bytes(image)] for image in pixels]

    torch.manual_seed(0)
    first = row_order(module.train_dataloader(), "train")
    second = row_order(module.train_dataloader(), "train")
    assert sorted(first) == sorted(second) == list(range(SIZES["num_train"]))
    assert first != sorted(first) and second != first
    assert row_order(module.val_dataloader(), "val") == list(range(SIZES["num_val"]))
    assert row_order(module.test_dataloader(), "test") == list(range(SIZES["num_test"]))


def test_datamodule_augments_only_training_batches_after_transfer(
    synthetic_csv: Path, tmp_path: Path
) -> None:
    module = FER2013DataModule(
        str(synthetic_csv), cache_dir=str(tmp_path / "cache"), augment={"hflip": 1.0}
    )
    batch = next(iter(module.val_dataloader()))
    example_input = batch[0][:1]
    module.trainer = SimpleNamespace(training=False)  # validating, testing, predicting
    assert module.on_after_batch_transfer(batch, 0) is batch
    module.trainer = SimpleNamespace(training=True)
    images, labels = module.on_after_batch_transfer(batch, 0)
    torch.testing.assert_close(images, batch[0].flip(-1))
    assert torch.equal(labels, batch[1])
    assert module.on_after_batch_transfer(example_input, 0) is example_input
    for pad_crop in (-1, 2.7):  # not truncated to 2
        with pytest.raises(
            FERUserError, match=f"augment pad_crop must be a whole number >= 0, got {pad_crop}"
        ):
            FER2013DataModule(str(synthetic_csv), augment={"pad_crop": pad_crop})


def test_datamodule_rejects_bad_settings(synthetic_csv: Path) -> None:
    with pytest.raises(FERUserError, match=r"unknown data\.class_weighting 'inverse'"):
        FER2013DataModule(str(synthetic_csv), class_weighting="inverse")
    for setting, value, minimum in [
        ("batch_size", 0, 1),
        ("batch_size", 2.5, 1),
        ("eval_batch_size", 0, 1),
        ("num_workers", -1, 0),
        ("num_workers", True, 0),
    ]:
        message = f"data.{setting} must be a whole number >= {minimum}, got {value}"
        with pytest.raises(FERUserError, match=message):
            FER2013DataModule(str(synthetic_csv), **{setting: value})
    with pytest.raises(FERUserError, match="unknown split 'dev'"):
        FER2013DataModule(str(synthetic_csv)).dataloader("dev")


def test_synthetic_datamodule_writes_csv_once(tmp_path: Path) -> None:
    module = SyntheticFER2013DataModule(
        str(tmp_path / "synthetic"), seed=5, batch_size=8, csv_path=None, **SIZES
    )
    module.prepare_data()
    (csv_path,) = (tmp_path / "synthetic").glob("*.csv")
    mtime = csv_path.stat().st_mtime_ns
    module.prepare_data()
    assert csv_path.stat().st_mtime_ns == mtime
    x, y = next(iter(module.train_dataloader()))
    assert x.shape == (8, 1, 48, 48) and y.dtype == torch.int64
    assert module.hparams.num_train == 70 and module.hparams.csv_path == str(csv_path)


def test_folders_datamodule(tmp_path: Path) -> None:
    write_folders(tmp_path)
    with pytest.raises(FERUserError, match=r"csv_path='x\.csv' is not used by the image-folder"):
        FER2013FoldersDataModule(str(tmp_path), csv_path="x.csv")
    module = FER2013FoldersDataModule(str(tmp_path), val_fraction=0.2, split_seed=1, batch_size=4)
    assert module.class_counts() == [4] * 7
    x, y = next(iter(module.val_dataloader()))
    assert x.shape == (4, 1, 48, 48) and y.dtype == torch.int64
    assert len(module.test_dataloader().dataset) == 14


# ------------------------------------------------------------------------------------- real data

README_COUNTS = {  # shared/fer2013/README.md: rows per class, label order
    "train": [3995, 436, 4097, 7215, 4830, 3171, 4965],
    "val": [467, 56, 496, 895, 653, 415, 607],
    "test": [491, 55, 528, 879, 594, 416, 626],
}


@pytest.mark.real_data
@pytest.mark.skipif(not os.environ.get("FER2013_CSV"), reason="set FER2013_CSV to the real csv")
def test_real_fer2013_counts_match_readme() -> None:
    splits = load_fer2013_csv(os.environ["FER2013_CSV"])
    assert {split: len(arrays.labels) for split, arrays in splits.items()} == {
        "train": 28709,
        "val": 3589,
        "test": 3589,
    }
    for split, counts in README_COUNTS.items():
        assert np.bincount(splits[split].labels, minlength=7).tolist() == counts
        assert splits[split].images.shape[1:] == (48, 48)
