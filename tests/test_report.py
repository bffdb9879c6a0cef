"""Classification report numbers, text and files, checked against hand-derived values."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.image import imread
from torchmetrics.classification import MulticlassF1Score, MulticlassPrecision

from fer_lightning.report import (
    classification_report,
    format_report,
    write_report,
)

NAMES = ["Angry", "Happy", "Sad"]
# Rows = true class, columns = predicted class.
CONFUSION = np.array(
    [
        [5, 2, 1],  # 8 Angry
        [1, 6, 3],  # 10 Happy
        [0, 2, 2],  # 4 Sad
    ]
)
# Derived by hand: precision = diagonal / column sum, recall = diagonal / row sum,
# F1 = 2 * TP / (row sum + column sum).
PRECISION = [Fraction(5, 6), Fraction(6, 10), Fraction(2, 6)]
RECALL = [Fraction(5, 8), Fraction(6, 10), Fraction(2, 4)]
F1 = [Fraction(10, 14), Fraction(12, 20), Fraction(4, 10)]
SUPPORT = [8, 10, 4]
TOTAL = 22


def _weighted(values: list[Fraction]) -> float:
    return float(sum(v * s for v, s in zip(values, SUPPORT, strict=True)) / TOTAL)


def _macro(values: list[Fraction]) -> float:
    return float(sum(values) / len(values))


def test_per_class_scores_match_hand_computation() -> None:
    report = classification_report(CONFUSION, NAMES)
    for index, name in enumerate(NAMES):
        scores = report["per_class"][name]
        assert scores["precision"] == pytest.approx(float(PRECISION[index]))
        assert scores["recall"] == pytest.approx(float(RECALL[index]))
        assert scores["f1"] == pytest.approx(float(F1[index]))
        assert scores["support"] == SUPPORT[index]


def test_overall_and_averaged_scores_match_hand_computation() -> None:
    report = classification_report(CONFUSION, NAMES)
    assert report["accuracy"] == pytest.approx(13 / 22)
    assert report["support"] == TOTAL
    assert report["precision_macro"] == pytest.approx(_macro(PRECISION))
    assert report["recall_macro"] == pytest.approx(_macro(RECALL))
    assert report["f1_macro"] == pytest.approx(_macro(F1))
    assert report["precision_weighted"] == pytest.approx(14 / 22)
    assert report["recall_weighted"] == pytest.approx(report["accuracy"])  # always equal
    assert report["f1_weighted"] == pytest.approx(_weighted(F1))
    json.dumps(report)  # plain Python numbers only


def test_matches_sklearn_when_installed() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    true_labels = np.repeat(np.arange(3), CONFUSION.sum(axis=1))
    predicted = np.concatenate([np.repeat(np.arange(3), row) for row in CONFUSION])
    expected = metrics.classification_report(
        true_labels, predicted, labels=[0, 1, 2], target_names=NAMES, output_dict=True
    )
    report = classification_report(CONFUSION, NAMES)
    for name in NAMES:
        assert report["per_class"][name]["f1"] == pytest.approx(expected[name]["f1-score"])
    assert report["f1_weighted"] == pytest.approx(expected["weighted avg"]["f1-score"])


def test_undefined_ratios_are_zero() -> None:
    # "Happy" is never true nor predicted; "Sad" is predicted once but never true.
    confusion = np.array([[2, 0, 1], [0, 0, 0], [0, 0, 0]])
    with np.errstate(all="raise"):
        report = classification_report(confusion, NAMES)
    assert report["per_class"]["Happy"] == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "support": 0,
    }
    assert report["per_class"]["Sad"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert report["per_class"]["Angry"]["precision"] == pytest.approx(1.0)
    assert report["per_class"]["Angry"]["recall"] == pytest.approx(2 / 3)
    # Happy (neither true nor predicted) has no score to average; Sad's 0 counts
    assert report["precision_macro"] == pytest.approx(1 / 2)
    assert report["precision_weighted"] == pytest.approx(1.0)  # only Angry has support
    assert report["accuracy"] == pytest.approx(2 / 3)


def test_empty_matrix_gives_zeros_not_nan() -> None:
    report = classification_report(np.zeros((3, 3), dtype=int), NAMES)
    assert report["accuracy"] == 0.0
    assert report["support"] == 0
    assert report["f1_macro"] == 0.0
    assert report["f1_weighted"] == 0.0


@pytest.mark.parametrize(
    ("confusion", "message"),
    [
        (np.zeros((2, 2)), r"has shape \(2, 2\), expected \(3, 3\)"),
        (np.array([[1, -1, 0], [0, 1, 0], [0, 0, 1]]), "non-negative integer counts"),
        (np.full((3, 3), 0.5), "non-negative integer counts"),
    ],
    ids=["shape", "negative", "fractional"],
)
def test_invalid_matrix_is_rejected(confusion: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        classification_report(confusion, NAMES)


def test_text_layout_follows_sklearn() -> None:
    text = format_report(classification_report(CONFUSION, NAMES), NAMES)
    assert text == (
        "              precision    recall  f1-score   support\n"
        "\n"
        "       Angry     0.8333    0.6250    0.7143         8\n"
        "       Happy     0.6000    0.6000    0.6000        10\n"
        "         Sad     0.3333    0.5000    0.4000         4\n"
        "\n"
        "    accuracy                         0.5909        22\n"
        "   macro avg     0.5889    0.5750    0.5714        22\n"
        "weighted avg     0.6364    0.5909    0.6052        22\n"
    )


def test_write_report_writes_all_files(tmp_path: Path) -> None:
    out_dir = tmp_path / "eval" / "test"
    extra = {"loss": np.float32(0.5), "checkpoint": "best.ckpt", "per_epoch": torch.tensor([1, 2])}
    metrics = write_report(CONFUSION, NAMES, out_dir, extra=extra)

    assert sorted(path.name for path in out_dir.iterdir()) == [
        "classification_report.txt",
        "confusion_matrix.csv",
        "confusion_matrix.png",
        "metrics.json",
    ]  # and no temporary files left behind
    saved = json.loads((out_dir / "metrics.json").read_text())
    assert saved["accuracy"] == pytest.approx(13 / 22)
    assert saved["per_class"]["Sad"]["support"] == 4
    assert saved["loss"] == pytest.approx(0.5)
    assert saved["checkpoint"] == "best.ckpt"
    assert saved["per_epoch"] == [1, 2]
    assert metrics["checkpoint"] == "best.ckpt"

    text = (out_dir / "classification_report.txt").read_text()
    assert text == format_report(classification_report(CONFUSION, NAMES), NAMES)

    table = pd.read_csv(out_dir / "confusion_matrix.csv", index_col=0)
    assert list(table.index) == NAMES
    assert list(table.columns) == NAMES
    np.testing.assert_array_equal(table.to_numpy(), CONFUSION)

    png_path = out_dir / "confusion_matrix.png"
    assert png_path.stat().st_size > 0
    pixels = imread(png_path)
    assert pixels.ndim == 3
    assert pixels.shape[0] > 100
    assert pixels.shape[1] > 100


def test_write_report_replaces_previous_files(tmp_path: Path) -> None:
    write_report(CONFUSION, NAMES, tmp_path)
    write_report(np.eye(3, dtype=int), NAMES, tmp_path)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["accuracy"] == 1.0
    assert len(list(tmp_path.iterdir())) == 4


def test_macro_averages_agree_with_the_logged_torchmetrics_ones() -> None:
    # 7 classes, 4 of which never occur: the report's macro-F1 is what val/f1_macro logs
    predicted, true = torch.tensor([0, 0, 1, 1, 2]), torch.tensor([0, 1, 1, 1, 2])
    confusion = np.zeros((7, 7), dtype=int)
    np.add.at(confusion, (true.numpy(), predicted.numpy()), 1)
    report = classification_report(confusion, [f"c{index}" for index in range(7)])
    f1 = MulticlassF1Score(7, average="macro")(predicted, true)
    precision = MulticlassPrecision(7, average="macro")(predicted, true)
    assert report["f1_macro"] == pytest.approx(float(f1)) == pytest.approx(37 / 45)
    assert report["precision_macro"] == pytest.approx(float(precision))
