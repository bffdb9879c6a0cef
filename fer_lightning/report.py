"""Per-class classification report and report files (with the confusion-matrix figure) from a
confusion matrix.

torchmetrics has no classification report; computing it from the (DDP-synced) confusion matrix
keeps every number consistent with the matrix that is shown and saved.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fer_lightning.figures import plot_confusion_matrix, png_bytes
from fer_lightning.files import write_atomically

SCORES = ("precision", "recall", "f1")


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Element-wise division that yields 0 where the denominator is 0 (sklearn zero_division=0)."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    result = np.zeros_like(numerator)
    np.divide(numerator, denominator, out=result, where=denominator != 0)
    return result


def _check_confusion(confusion: np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    """Return the matrix as int64 after checking it is K x K, non-negative and integral."""
    matrix = np.asarray(confusion)
    num_classes = len(class_names)
    if matrix.shape != (num_classes, num_classes):
        raise ValueError(
            f"confusion matrix has shape {matrix.shape}, expected ({num_classes}, {num_classes})"
        )
    if (matrix < 0).any() or not np.array_equal(matrix, np.round(matrix)):
        raise ValueError("confusion matrix must hold non-negative integer counts")
    return matrix.astype(np.int64)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """K x K int64 counts of class indices, rows = true class, columns = prediction."""
    pairs = np.asarray(labels, dtype=np.int64) * num_classes + np.asarray(predictions)
    return np.bincount(pairs, minlength=num_classes**2).reshape(num_classes, num_classes)


def classification_report(confusion: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """Accuracy, per-class and macro/weighted precision, recall, F1 and support.

    Rows of ``confusion`` are true classes, columns predictions. Undefined ratios are 0. Macro
    averages are over the classes that occur as truth or prediction (a class that is neither has
    no score to average), as in torchmetrics' macro average, which the logged ``*/f1_macro``
    uses, and sklearn's default ``labels``: the report and the training logs agree.
    """
    matrix = _check_confusion(confusion, class_names)
    true_positives = np.diag(matrix)
    support = matrix.sum(axis=1)
    precision = _safe_divide(true_positives, matrix.sum(axis=0))
    recall = _safe_divide(true_positives, support)
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    total = int(support.sum())
    scores = {"precision": precision, "recall": recall, "f1": f1}
    occurring = (support + matrix.sum(axis=0)) > 0

    report: dict[str, Any] = {
        "accuracy": float(_safe_divide(true_positives.sum(), total)),
        "support": total,
    }
    for score, values in scores.items():
        report[f"{score}_macro"] = float(values[occurring].mean()) if occurring.any() else 0.0
        report[f"{score}_weighted"] = float(_safe_divide((values * support).sum(), total))
    report["per_class"] = {
        name: {
            **{score: float(values[index]) for score, values in scores.items()},
            "support": int(support[index]),
        }
        for index, name in enumerate(class_names)
    }
    return report


def format_report(report: dict[str, Any], class_names: Sequence[str], digits: int = 4) -> str:
    """Plain-text table in sklearn's ``classification_report`` layout."""
    width = max(len(name) for name in [*class_names, "weighted avg"])

    def line(label: str, cells: Sequence[object]) -> str:
        return f"{label:>{width}s} " + "".join(f" {cell!s:>9}" for cell in cells)

    def scores_line(label: str, scores: Sequence[float], support: int) -> str:
        return line(label, [*(f"{score:.{digits}f}" for score in scores), support])

    lines = [line("", ["precision", "recall", "f1-score", "support"]), ""]
    for name in class_names:
        per_class = report["per_class"][name]
        lines.append(
            scores_line(name, [per_class[score] for score in SCORES], per_class["support"])
        )
    lines.append("")
    lines.append(line("accuracy", ["", "", f"{report['accuracy']:.{digits}f}", report["support"]]))
    for average in ("macro", "weighted"):
        averages = [report[f"{score}_{average}"] for score in SCORES]
        lines.append(scores_line(f"{average} avg", averages, report["support"]))
    return "\n".join(lines) + "\n"


def _confusion_csv(matrix: np.ndarray, class_names: Sequence[str]) -> str:
    """Counts with class names as header row and first column (rows = true, columns = predicted)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["true\\predicted", *class_names])
    for name, counts in zip(class_names, matrix, strict=True):
        writer.writerow([name, *(int(count) for count in counts)])
    return buffer.getvalue()


def _json_default(value: Any) -> Any:
    """Serialise numpy/torch scalars and arrays found in ``extra``."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def publish_report(
    confusion: np.ndarray,
    class_names: Sequence[str],
    out_dir: str | os.PathLike,
    extra: dict[str, Any],
    title: str,
) -> dict[str, Any]:
    """Write the report files into `out_dir` and print the per-class table under `title`."""
    report = write_report(confusion, class_names, out_dir, extra)
    print(title)
    print(format_report(report, class_names))
    return report


def write_report(
    confusion: np.ndarray,
    class_names: Sequence[str],
    out_dir: str | os.PathLike[str],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``metrics.json``, ``classification_report.txt``, ``confusion_matrix.png`` and
    ``confusion_matrix.csv`` to ``out_dir``; returns the metrics dict.

    ``extra`` (e.g. loss, checkpoint path) is merged into the report dict; its keys win.
    """
    matrix = _check_confusion(confusion, class_names)
    out_path = Path(out_dir)
    out_path.mkdir(parents=True, exist_ok=True)
    report = classification_report(matrix, class_names)
    metrics = {**report, **(extra or {})}

    contents = {
        "metrics.json": json.dumps(metrics, indent=2, default=_json_default) + "\n",
        "classification_report.txt": format_report(report, class_names),
        "confusion_matrix.csv": _confusion_csv(matrix, class_names),
        "confusion_matrix.png": png_bytes(plot_confusion_matrix(matrix, class_names)),
    }
    for name, content in contents.items():
        data = content.encode() if isinstance(content, str) else content
        write_atomically(out_path / name, lambda file, data=data: file.write(data))
    return metrics
