"""Shared fixtures: tiny fer2013-format data, the real Hydra configs composed for a tmp run dir."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from fer_lightning.config import ROOT, compose_config
from fer_lightning.data.synthetic import write_synthetic_fer2013_csv

os.environ.setdefault("PROJECT_ROOT", str(ROOT))

# small enough for seconds-long runs, large enough that every class appears in every split
TINY_SPLIT_SIZES = {"num_train": 280, "num_val": 70, "num_test": 70}


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


def run_script(
    script: str, *args: str, cwd: Path = ROOT, timeout: int = 600
) -> subprocess.CompletedProcess:
    """Run train.py/evaluate.py in a fresh interpreter, as a user would, capturing its output."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
