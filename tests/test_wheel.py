"""The built wheel works outside a clone: installed into a fresh virtual environment, its
`fer-lightning` command trains, evaluates and predicts from a temporary folder, and writes there."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from fer_lightning.classes import EMOTIONS
from tests.conftest import ROOT

# what the wheel is built from (conf/ is packaged as fer_lightning/conf)
SOURCES = ("pyproject.toml", "setup.py", "README.md", "conf", "fer_lightning")


def _run(*argv: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    """`argv` in a fresh process that sees neither this clone (PYTHONPATH) nor the tests' cache."""
    hidden = {"PYTHONPATH", "FER_LIGHTNING_CACHE", "FER2013_CSV", "FERPLUS_CSV"}
    env = {key: value for key, value in os.environ.items() if key not in hidden}
    return subprocess.run(
        [str(arg) for arg in argv],
        cwd=cwd,
        env={**env, "HYDRA_FULL_ERROR": "0"},
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    """Size and modification time of every file below `folder` (bytecode caches aside)."""
    return {
        str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in folder.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the wheel of this clone installed; torch and the other
    dependencies come from the system's site-packages (nothing is downloaded)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"  # a copy: a build in the clone leaves build/ (and stale files) there
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(ROOT / name, source / name, ignore=ignore)
        else:
            shutil.copy2(ROOT / name, source / name)
    dist = tmp / "dist"
    wheel_build = ("wheel", "--no-deps", "--no-build-isolation", "-w", dist, source)
    built = _run(sys.executable, "-m", "pip", *wheel_build, cwd=tmp)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = dist.glob("fer_lightning-*.whl")
    venv = tmp / "venv"
    made = _run(
        sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv, cwd=tmp
    )
    assert made.returncode == 0, made.stderr[-3000:]
    # the system's pip, run by the venv's python, installs into the venv; --ignore-installed: an
    # editable install of a clone in the system's site-packages stays where it is, unused
    installed = _run(
        venv / "bin" / "python",
        "-m",
        "pip",
        "install",
        "--no-deps",
        "--ignore-installed",
        wheel,
        cwd=tmp,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    return venv


def test_wheel_trains_evaluates_and_predicts_outside_the_clone(venv, tmp_path):
    command = venv / "bin" / "fer-lightning"
    where = _run(
        venv / "bin" / "python",
        "-c",
        "import fer_lightning.config as c; print(c.__file__); print(c.CONF_DIR)",
        cwd=tmp_path,
    )
    config_file, conf_dir = map(Path, where.stdout.split())
    package = config_file.parent
    assert package.is_relative_to(venv), f"{package} is not the installed wheel"
    assert conf_dir == package / "conf"
    assert (conf_dir / "train.yaml").is_file()
    shipped = _files(package)

    # one sweep: debug=fdr (a batch of each split, no checkpoint) and a short debug=limit run,
    # which writes checkpoints; the data is the built-in synthetic set, made in data/
    train = _run(command, "train", "-m", "debug=fdr,limit", "trainer.max_epochs=1", cwd=tmp_path)
    assert train.returncode == 0, train.stderr[-3000:]
    jobs = sorted(tmp_path.glob("logs/debug/multiruns/*/[01]"))
    assert [json.loads((job / "metrics.json").read_text())["split"] for job in jobs] == ["test"] * 2
    assert not (jobs[0] / "checkpoints").exists()  # debug=fdr
    best = jobs[1] / "checkpoints" / "best.ckpt"
    assert best.is_file()
    assert list(tmp_path.glob("data/synthetic/*.csv"))
    assert list(tmp_path.glob("data/cache/*"))  # the parse cache, below the working folder too

    evaluate = _run(command, "evaluate", f"ckpt_path={best}", "split=val", cwd=tmp_path)
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    (report,) = tmp_path.glob("logs/evaluate/runs/*/metrics.json")
    assert json.loads(report.read_text())["split"] == "val"

    rng = np.random.default_rng(0)
    cv2.imwrite(str(tmp_path / "face.png"), rng.integers(0, 256, (48, 48), dtype=np.uint8))
    model = "ckpt_path=pretrained:baseline"
    predict = _run(command, "predict", "face.png", model, "detect=false", cwd=tmp_path)
    assert predict.returncode == 0, predict.stderr[-3000:]
    (predictions,) = tmp_path.glob("logs/predict/runs/*/predictions.jsonl")
    (face,) = map(json.loads, predictions.read_text().splitlines())
    assert face["label"] in EMOTIONS

    assert _files(package) == shipped  # nothing written into the installed package
