"""Every figure the project draws, as standalone matplotlib ``Figure`` objects (no pyplot state,
so nothing leaks between multirun jobs): the confusion matrix of a report, sample predictions
for TensorBoard, and explore's data and model figures (after the plots of the baseline
reference's Keras notebook: examples, class distributions, curves, image + probability bars)."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

if TYPE_CHECKING:
    from fer_lightning.data import SplitArrays

SPLIT_TITLES = {"train": "Training", "val": "PublicTest (val)", "test": "PrivateTest (test)"}
# (metric, title) of the training-curve panels, logged as train/<metric> and val/<metric>
CURVES = (("loss", "Loss"), ("acc", "Accuracy"))
GRID_COLUMNS = 8


def png_bytes(figure: Figure) -> bytes:
    """``figure`` encoded as a PNG at 100 dpi."""
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=100)
    return png.getvalue()


def plot_confusion_matrix(confusion: np.ndarray, class_names: Sequence[str]) -> Figure:
    """Row-normalised confusion matrix (rows = true class) of counts; each cell shows the rate
    and the count, e.g. "0.62\\n(123)". A class without samples gets rates of 0."""
    matrix = np.asarray(confusion, dtype=np.int64)
    totals = matrix.sum(axis=1, keepdims=True).astype(np.float64)
    rates = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals != 0)
    num_classes = len(class_names)
    size = 1.0 + 0.9 * num_classes
    figure = Figure(figsize=(size + 1.5, size), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, label="fraction of true class")
    for true_index in range(num_classes):
        for pred_index in range(num_classes):
            rate = rates[true_index, pred_index]
            axes.text(
                pred_index,
                true_index,
                f"{rate:.2f}\n({matrix[true_index, pred_index]})",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if rate > 0.5 else "black",
            )
    ticks = np.arange(num_classes)
    axes.set_xticks(ticks, labels=class_names, rotation=45, ha="right")
    axes.set_yticks(ticks, labels=class_names)
    axes.set_xlabel("Predicted")
    axes.set_ylabel("True")
    axes.set_title(f"Confusion matrix (row-normalised, n={int(matrix.sum())})")
    return figure


def _display_image(image: torch.Tensor) -> tuple[torch.Tensor, str | None]:
    """CHW tensor -> (HW or HWC array scaled to [0, 1], colormap) for ``imshow``."""
    image = image.detach().float().cpu()
    low, high = image.min(), image.max()
    image = (image - low) / (high - low) if high > low else torch.zeros_like(image)
    if image.shape[0] == 1:
        return image[0], "gray"
    return image.permute(1, 2, 0), None


def plot_sample_predictions(
    images: torch.Tensor,
    targets: torch.Tensor,
    probabilities: torch.Tensor,
    class_names: list[str],
) -> Figure:
    """Grid of images titled "pred (p) / true", green when correct and red when wrong."""
    num_images = images.shape[0]
    columns = min(GRID_COLUMNS, num_images)
    rows = math.ceil(num_images / columns)
    figure = Figure(figsize=(1.9 * columns, 2.1 * rows), layout="constrained")
    confidences, predictions = probabilities.max(dim=1)
    for index in range(num_images):
        axes = figure.add_subplot(rows, columns, index + 1)
        pixels, cmap = _display_image(images[index])
        axes.imshow(pixels.numpy(), cmap=cmap, vmin=0.0, vmax=1.0)
        predicted, true = int(predictions[index]), int(targets[index])
        axes.set_title(
            f"{class_names[predicted]} ({confidences[index]:.2f})\n/ {class_names[true]}",
            fontsize=8,
            color="green" if predicted == true else "red",
        )
        axes.axis("off")
    return figure


def _show_face(axes: Axes, image: np.ndarray, title: str, stretch: bool = False) -> None:
    """A gray face on ``axes`` without ticks, at the full 0..255 range or, with ``stretch``,
    from its own darkest to its brightest pixel."""
    limits = (None, None) if stretch else (0, 255)
    axes.imshow(image, cmap="gray", vmin=limits[0], vmax=limits[1])
    axes.set_title(title, fontsize=9)
    axes.set_xticks([])
    axes.set_yticks([])


def plot_examples_per_emotion(
    arrays: SplitArrays, class_names: Sequence[str], num_examples: int, seed: int, split: str
) -> Figure:
    """A grid: one row per emotion, ``num_examples`` random images of it."""
    rng = np.random.default_rng(seed)
    figure = Figure(
        figsize=(1.3 * num_examples + 0.6, 1.45 * len(class_names)), layout="constrained"
    )
    grid = figure.subplots(len(class_names), num_examples, squeeze=False)
    for label, (name, row) in enumerate(zip(class_names, grid, strict=True)):
        indices = np.flatnonzero(arrays.labels == label)
        chosen = rng.choice(indices, size=min(num_examples, len(indices)), replace=False)
        for column, axes in enumerate(row):
            if column < len(chosen):
                _show_face(axes, arrays.images[chosen[column]], name)
            else:
                axes.axis("off")
    figure.suptitle(f"Examples per emotion ({SPLIT_TITLES[split]}, {arrays.labels.size} images)")
    return figure


def plot_one_per_emotion(arrays: SplitArrays, class_names: Sequence[str], seed: int) -> Figure:
    """One random example of each emotion in a row."""
    rng = np.random.default_rng(seed)
    figure = Figure(figsize=(1.6 * len(class_names), 2.0), layout="constrained")
    for label, (name, axes) in enumerate(
        zip(class_names, figure.subplots(1, len(class_names), squeeze=False)[0], strict=True)
    ):
        indices = np.flatnonzero(arrays.labels == label)
        if indices.size:
            _show_face(axes, arrays.images[rng.choice(indices)], name)
        else:
            axes.set_title(f"{name}\n(none)", fontsize=9)
            axes.axis("off")
    return figure


def plot_class_distribution(splits: dict[str, SplitArrays], class_names: Sequence[str]) -> Figure:
    """Images per emotion in each split, side by side, with the count on every bar."""
    figure = Figure(figsize=(5.0 * len(splits), 4.2), layout="constrained")
    panels = figure.subplots(1, len(splits), squeeze=False)[0]
    colors = ("tab:orange", "tab:blue", "tab:green")
    for (split, arrays), axes, color in zip(splits.items(), panels, colors, strict=False):
        counts = np.bincount(arrays.labels, minlength=len(class_names))
        bars = axes.bar(class_names, counts, color=color)
        axes.bar_label(bars, fontsize=8)
        axes.set_title(f"{SPLIT_TITLES[split]}: {counts.sum()} images")
        axes.tick_params(axis="x", labelrotation=45)
        axes.grid(axis="y", alpha=0.4)
        axes.set_ylabel("images")
    figure.suptitle("Class distribution per split")
    return figure


def plot_mean_faces(arrays: SplitArrays, class_names: Sequence[str], split: str) -> Figure:
    """The pixel-wise mean image of each emotion, contrast-stretched (means are low-contrast)."""
    figure = Figure(figsize=(1.6 * len(class_names), 2.1), layout="constrained")
    for label, (name, axes) in enumerate(
        zip(class_names, figure.subplots(1, len(class_names), squeeze=False)[0], strict=True)
    ):
        members = arrays.images[arrays.labels == label]
        if len(members):
            _show_face(axes, members.mean(axis=0), f"{name}\nn={len(members)}", stretch=True)
        else:
            axes.set_title(f"{name}\n(none)", fontsize=9)
            axes.axis("off")
    figure.suptitle(f"Mean face per emotion ({SPLIT_TITLES[split]}, contrast stretched)")
    return figure


def plot_training_curves(epochs: pd.DataFrame) -> Figure:
    """Loss and accuracy per epoch, train (dots) against val (line)."""
    figure = Figure(figsize=(11, 4), layout="constrained")
    for (metric, title), axes in zip(CURVES, figure.subplots(1, 2), strict=True):
        for stage, style in (("train", "o"), ("val", "-")):
            column = f"{stage}/{metric}"
            if column in epochs:
                values = epochs[column].dropna()
                axes.plot(values.index + 1, values, style, label=f"{stage} {metric}")
        axes.set_title(title)
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.4)
        axes.legend()
    return figure


def plot_prediction_panels(
    arrays: SplitArrays,
    probabilities: np.ndarray,
    indices: Sequence[int],
    class_names: Sequence[str],
    split: str,
) -> Figure:
    """For each chosen image of ``split``: the face with its true label, and the predicted
    probabilities as bars."""
    figure = Figure(figsize=(10, 2.6 * len(indices)), layout="constrained")
    rows = figure.subplots(len(indices), 2, squeeze=False, width_ratios=(1, 3))
    for index, (image_axes, bar_axes) in zip(indices, rows, strict=True):
        true_name = class_names[arrays.labels[index]]
        _show_face(image_axes, arrays.images[index], f"#{index} true: {true_name}")
        predicted = int(probabilities[index].argmax())
        colors = ["tab:orange"] * len(class_names)
        colors[predicted] = "tab:green" if predicted == arrays.labels[index] else "tab:red"
        bar_axes.bar(class_names, probabilities[index], color=colors, alpha=0.8)
        bar_axes.set_ylim(0, 1)
        bar_axes.set_ylabel("probability")
        bar_axes.set_title(
            f"predicted: {class_names[predicted]} ({probabilities[index, predicted]:.2f})",
            fontsize=9,
        )
    figure.suptitle(f"Predictions on {SPLIT_TITLES[split]}")
    return figure


def plot_confident_mistakes(
    arrays: SplitArrays,
    probabilities: np.ndarray,
    class_names: Sequence[str],
    count: int,
    split: str,
) -> Figure:
    """The ``count`` wrong predictions on ``split`` the model was surest of, most confident
    first."""
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != arrays.labels)
    if wrong.size == 0:
        figure = Figure(figsize=(4, 1.5))
        figure.text(0.5, 0.5, f"no mistakes on {SPLIT_TITLES[split]}", ha="center", va="center")
        return figure
    worst = wrong[np.argsort(-probabilities[wrong, predicted[wrong]], kind="stable")][:count]
    figure = plot_sample_predictions(
        torch.from_numpy(arrays.images[worst]).unsqueeze(1),
        torch.from_numpy(arrays.labels[worst]),
        torch.from_numpy(probabilities[worst]),
        list(class_names),
    )
    figure.suptitle(
        f"Most confident mistakes on {SPLIT_TITLES[split]}: {wrong.size} of "
        f"{arrays.labels.size} wrong; predicted (confidence) / true"
    )
    return figure
