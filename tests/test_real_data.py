"""Opt-in: both nets on the real FER2013 csv (set FER2013_CSV); skipped cleanly without it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_script

REAL_CSV = os.environ.get("FER2013_CSV")
# PrivateTest supports per class, from ../shared/fer2013/README.md
PRIVATE_TEST_SUPPORT = {
    "Angry": 491,
    "Disgust": 55,
    "Fear": 528,
    "Happy": 879,
    "Sad": 594,
    "Surprise": 416,
    "Neutral": 626,
}

pytestmark = [
    pytest.mark.real_data,
    pytest.mark.skipif(not REAL_CSV, reason="set FER2013_CSV to the real fer2013 csv"),
]


@pytest.fixture(scope="module")
def real_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One parse cache for every run here: the 35,887-row csv is parsed once, not per run."""
    return tmp_path_factory.mktemp("real_cache")


@pytest.mark.parametrize("model", ["baseline", "deep"])
def test_train_then_evaluate_on_real_data(tmp_path: Path, real_cache: Path, model: str):
    """A short real-data run (few batches) and a PrivateTest report with the true supports."""
    run_dir = tmp_path / "train"
    trained = run_script(
        "train.py",
        f"model={model}",
        "data=fer2013",
        f"data.csv_path={REAL_CSV}",
        f"data.cache_dir={real_cache}",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=20",
        "trainer.limit_val_batches=10",
        "~callbacks.rich_progress_bar",
        f"hydra.run.dir={run_dir}",
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    evaluated, metrics = _evaluate_on_private_test(
        run_dir / "checkpoints" / "best.ckpt", tmp_path / "evaluate", real_cache
    )
    supports = {name: values["support"] for name, values in metrics["per_class"].items()}
    assert supports == PRIVATE_TEST_SUPPORT
    assert metrics["support"] == 3589
    for name, support in PRIVATE_TEST_SUPPORT.items():
        row = next(line for line in evaluated.stdout.splitlines() if line.strip().startswith(name))
        assert row.split()[-1] == str(support)


@pytest.mark.parametrize(
    ("name", "overrides", "tta", "min_accuracy", "min_f1_macro"),
    [
        # the command, `evaluate.py ckpt_path=pretrained:<name>`: the shipped TTA
        ("baseline", [], "flip", 0.64, 0.60),  # measured 0.6492 / 0.6112
        ("deep", [], "tencrop", 0.67, 0.64),  # measured 0.6796 / 0.6525
        ("vgg", [], "tencrop", 0.725, 0.71),  # measured 0.7300 / 0.7154
        # the ensemble's two other VGGs (fp16 files), alone
        ("vgg_small", [], "tencrop", 0.71, 0.69),  # measured 0.7164 / 0.6982
        ("vgg_small_reg", [], "tencrop", 0.725, 0.71),  # measured 0.7300 / 0.7175
        # without TTA: issue 5's rows, 0.62 / 0.55 and 0.64 / 0.58
        ("baseline", ["tta=none"], "none", 0.62, 0.55),  # measured 0.6336 / 0.5968
        ("deep", ["tta=none"], "none", 0.64, 0.61),  # measured 0.6420 / 0.6178
        ("vgg", ["tta=none"], "none", 0.72, 0.71),  # measured 0.7247 / 0.7148
    ],
)
def test_shipped_weights_keep_their_private_test_scores(
    tmp_path: Path,
    real_cache: Path,
    name: str,
    overrides: list[str],
    tta: str,
    min_accuracy: float,
    min_f1_macro: float,
):
    """`pretrained:baseline` (the baseline reference CNN), `pretrained:deep` (the deep reference
    net) and `pretrained:vgg` (the strongest net) score at least this on PrivateTest."""
    _, metrics = _evaluate_on_private_test(f"pretrained:{name}", tmp_path, real_cache, *overrides)
    assert metrics["support"] == 3589
    assert metrics["tta"] == tta
    assert metrics["accuracy"] >= min_accuracy
    assert metrics["f1_macro"] >= min_f1_macro


def test_the_shipped_ensemble_keeps_its_private_test_score(tmp_path: Path, real_cache: Path):
    """The best row of docs/results.md, offline: the four shipped members, each with its own TTA."""
    members = "[pretrained:baseline,pretrained:vgg_small,pretrained:vgg_small_reg,pretrained:vgg]"
    _, metrics = _evaluate_on_private_test(members, tmp_path, real_cache)
    assert metrics["tta"] == ["flip", "tencrop", "tencrop", "tencrop"]
    assert metrics["accuracy"] >= 0.735 and metrics["f1_macro"] >= 0.72  # measured 0.7392 / 0.7287


def _evaluate_on_private_test(
    ckpt_path: str | Path, run_dir: Path, cache_dir: Path, *overrides: str
) -> tuple[subprocess.CompletedProcess, dict]:
    """`evaluate.py` on the real csv's PrivateTest: the finished process and its metrics.json."""
    evaluated = run_script(
        "evaluate.py",
        f"ckpt_path={ckpt_path}",
        f"data.csv_path={REAL_CSV}",
        f"data.cache_dir={cache_dir}",
        f"hydra.run.dir={run_dir}",
        *overrides,
        # ten crops of four nets over 3,589 faces take minutes on one xdist worker's thread
        timeout=2400,
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    return evaluated, json.loads((run_dir / "metrics.json").read_text())
