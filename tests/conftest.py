"""Shared fixtures: tiny fer2013-format data, the real Hydra configs composed for a tmp run dir."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import DictConfig
from PIL import Image

from fer_lightning.classes import EMOTIONS
from fer_lightning.config import compose_config
from fer_lightning.data.ferplus import VOTE_COLUMNS
from fer_lightning.data.synthetic import write_synthetic_fer2013_csv
from fer_lightning.training import train

# the clone the tests run in (its scripts, README, tools)
ROOT = Path(__file__).resolve().parents[1]
# small enough for seconds-long runs, large enough that every class appears in every split
TINY_SPLIT_SIZES = {"num_train": 280, "num_val": 70, "num_test": 70}


def _share_the_cores_between_workers() -> None:
    """Under pytest-xdist, each worker process gets its share of the cores: torch would take all
    of them in every worker, and its spinning threads would fight. Subprocesses inherit it."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
        torch.set_num_threads(threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))


_share_the_cores_between_workers()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The real-data tests run in one worker, which then parses the real csv once; the browser
    tests in one worker, which then starts the app's server once."""
    for item in items:
        for marker in ("real_data", "browser"):
            if item.get_closest_marker(marker):
                item.add_marker(pytest.mark.xdist_group(marker))


@pytest.fixture(scope="session", autouse=True)
def isolated_parse_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Parse caches of the tests' csvs go to a temporary folder, not the repository's data/cache
    (in-process configs and subprocesses alike read FER_LIGHTNING_CACHE)."""
    cache = tmp_path_factory.mktemp("parse_cache")
    before = os.environ.get("FER_LIGHTNING_CACHE")
    os.environ["FER_LIGHTNING_CACHE"] = str(cache)
    yield cache
    if before is None:
        del os.environ["FER_LIGHTNING_CACHE"]
    else:
        os.environ["FER_LIGHTNING_CACHE"] = before


@pytest.fixture(scope="session")
def tiny_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic csv in the original fer2013 format."""
    path = tmp_path_factory.mktemp("data") / "tiny_fer2013.csv"
    return write_synthetic_fer2013_csv(path, seed=7, **TINY_SPLIT_SIZES)


def tiny_data_overrides(csv_path: Path) -> list[str]:
    """Train on `csv_path` in the main process, small batches, no progress bar."""
    return [
        "data=fer2013",
        f"data.csv_path={csv_path}",
        "data.cache_dir=null",
        "data.num_workers=0",
        "data.batch_size=32",
        "~callbacks.rich_progress_bar",
    ]


@pytest.fixture
def train_cfg(tmp_path: Path, tiny_csv: Path) -> Callable[..., DictConfig]:
    """Factory: the train config on the tiny csv, CPU, no progress bar, plus any overrides."""

    def make(*overrides: str) -> DictConfig:
        return compose_config(
            "train",
            tmp_path / "run",
            [*tiny_data_overrides(tiny_csv), *overrides],
        )

    return make


# one epoch of three optimizer steps and a single val batch, no test: for resume tests
THREE_STEP_EPOCHS = (
    "test=false",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=1",
    "trainer.log_every_n_steps=1",
)

LIMITED_RUN = (
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=2",
    "trainer.log_every_n_steps=2",
    "callbacks.tensorboard_extras.num_samples=8",
)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, tiny_csv) -> Path:
    """One short real training run of the baseline on the tiny csv, shared by many tests."""
    run_dir = tmp_path_factory.mktemp("trained")
    cfg = compose_config(
        "train",
        run_dir,
        [*tiny_data_overrides(tiny_csv), "seed=0", *LIMITED_RUN],
    )
    metrics = train(cfg)
    assert "val/acc_best" in metrics and "test/acc" in metrics
    return run_dir


@pytest.fixture(scope="session")
def trained_checkpoint(trained_run: Path) -> Path:
    """The best checkpoint of `trained_run`."""
    return trained_run / "checkpoints" / "best.ckpt"


def _run_python(*argv: str, cwd: Path, timeout: int) -> subprocess.CompletedProcess:
    """`python <argv>` in a fresh interpreter, as a user runs it, capturing its output."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def run_script(
    script: str, *args: str, cwd: Path = ROOT, timeout: int = 600
) -> subprocess.CompletedProcess:
    """Run a script of the repository (train.py, benchmarks/...) in a fresh interpreter."""
    return _run_python(str(ROOT / script), *args, cwd=cwd, timeout=timeout)


def run_module(
    module: str, *args: str, cwd: Path = ROOT, timeout: int = 600
) -> subprocess.CompletedProcess:
    """`python -m <module> ...` in a fresh interpreter from the repository root."""
    return _run_python("-m", module, *args, cwd=cwd, timeout=timeout)


def confusion(labels: torch.Tensor, predictions: torch.Tensor, classes: int = 7) -> np.ndarray:
    """The (true, predicted) count matrix of ``labels`` against ``predictions``."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (labels.numpy(), predictions.numpy()), 1)
    return matrix


# one valid fer2013 row of each split, pixels 0..255 repeating
PIXELS = " ".join(str(value) for value in np.arange(2304) % 256)
HEADER = "emotion,pixels,Usage"
VALID_ROWS = [f"3,{PIXELS},Training", f"0,{PIXELS},PublicTest", f"6,{PIXELS},PrivateTest"]


def write_folders(root: Path, per_class: int = 5) -> dict[str, dict[str, np.ndarray]]:
    """Random 48x48 PNGs in the Kaggle layout (class folder names in mixed case): ``per_class``
    training and 2 test images per class, returned by split and "label/index"."""
    rng = np.random.default_rng(0)
    written: dict[str, dict[str, np.ndarray]] = {"train": {}, "test": {}}
    for split in written:
        for label, name in enumerate(EMOTIONS):
            folder = root / split / (name.lower() if label % 2 else name.upper())
            folder.mkdir(parents=True)
            for index in range(per_class if split == "train" else 2):
                pixels = rng.integers(0, 256, (48, 48), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{index:03d}.png")
                written[split][f"{label}/{index}"] = pixels
    return written


def ferplus_votes(**counts: int) -> list[int]:
    """One fer2013new.csv vote row: ``counts`` by column name, zeros elsewhere."""
    return [counts.get(column, 0) for column in VOTE_COLUMNS]


def write_ferplus_votes(tiny_csv: Path, path: Path, rows: list[list[int]] | None = None) -> Path:
    """A fer2013new.csv for `tiny_csv`: row i votes for FER+ class i % 8, every 9th row NF."""
    usage = pd.read_csv(tiny_csv, usecols=["Usage"])["Usage"]
    if rows is None:
        rows = [
            ferplus_votes(NF=10)
            if index % 9 == 8
            else ferplus_votes(**{VOTE_COLUMNS[index % 8]: 10})
            for index in range(len(usage))
        ]
    table = pd.DataFrame(rows, columns=list(VOTE_COLUMNS))
    table.insert(0, "Image name", [f"fer{index:07d}.png" for index in range(len(usage))])
    table.insert(0, "Usage", usage)
    table.to_csv(path, index=False)
    return path


def png_header_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` gray pixels (a decompression-bomb
    shape: the file is small, its pixels would not be)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * (width + 1) * 4)  # a few rows; decoding would need them all
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )
