"""Look at the data and at what a model learned, as PNG files in the run folder:

    python -m fer_lightning.explore csv_path=<fer2013-format csv>
    python -m fer_lightning.explore ckpt_path=<run>/checkpoints/best.ckpt [split=val]

Data figures: examples per emotion, one example of each emotion, the class distribution of the
three splits side by side (seed 000's ``plot_compare_distributions``) and the mean face per class.
With a checkpoint also: training curves from the run's ``csv/metrics.csv``, image + probability-bar
panels (seed 000's ``plot_image_and_emotion``) and a gallery of the most confident mistakes. When
the checkpoint's run has a ``tensorboard/`` folder, the figures are logged there too.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from omegaconf import DictConfig
from torch.utils.tensorboard import SummaryWriter

from fer_lightning import pretrained
from fer_lightning.callbacks import plot_sample_predictions
from fer_lightning.checkpoint import (
    datamodule_from_checkpoint,
    read_checkpoint,
    require_stored_csv,
    run_config,
)
from fer_lightning.classes import EMOTIONS
from fer_lightning.cli import exit_on_user_error
from fer_lightning.config import CONF_DIR
from fer_lightning.data import SPLIT_NAMES, SplitArrays, load_fer2013_csv
from fer_lightning.errors import FERUserError
from fer_lightning.files import write_atomically
from fer_lightning.inference import Classifier, classifier_from_checkpoint

log = logging.getLogger(__name__)

SPLIT_TITLES = {"train": "Training", "val": "PublicTest (val)", "test": "PrivateTest (test)"}
CURVES = (("loss", "Loss"), ("acc", "Accuracy"))
TENSORBOARD_TAG = "explore"
# the data config (conf/data/fer2013.yaml) of runs trained on a plain fer2013 csv
CSV_DATA_TARGET = "fer_lightning.data.FER2013DataModule"


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
    """A grid: one row per emotion, ``num_examples`` random images of it (seed 000's
    ``plot_examples`` for every class)."""
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
    """One random example of each emotion in a row (seed 000's ``plot_all_emotions``)."""
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
    """Images per emotion in each split, side by side, with the count on every bar (seed 000's
    ``plot_compare_distributions`` for all three splits)."""
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


def read_epoch_metrics(metrics_csv: Path) -> pd.DataFrame:
    """Per-epoch train/val loss and accuracy from a CSVLogger ``metrics.csv`` (Lightning writes
    each logged value on its own row; the last value of each epoch is kept)."""
    table = pd.read_csv(metrics_csv)
    columns = [
        f"{stage}/{metric}"
        for metric, _ in CURVES
        for stage in ("train", "val")
        if f"{stage}/{metric}" in table
    ]
    if "epoch" not in table or not columns:
        raise FERUserError(f"{metrics_csv}: has no epoch, train/loss, val/loss, ... columns")
    return table.dropna(subset=["epoch"]).groupby("epoch")[columns].last().dropna(how="all")


def plot_training_curves(epochs: pd.DataFrame) -> Figure:
    """Loss and accuracy per epoch, train (dots) against val (line), like seed 000's plots."""
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
    probabilities as bars (seed 000's ``plot_image_and_emotion``)."""
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


class FigureSink:
    """Saves figures as PNG files in a folder and, when given a writer, logs them to TensorBoard."""

    def __init__(self, out_dir: Path, writer: SummaryWriter | None = None) -> None:
        self.out_dir = out_dir
        self.writer = writer
        self.written: dict[str, Path] = {}

    def save(self, name: str, figure: Figure) -> None:
        png = io.BytesIO()
        figure.savefig(png, format="png", dpi=100)
        path = self.out_dir / f"{name}.png"
        write_atomically(path, lambda file: file.write(png.getvalue()))
        if self.writer is not None:
            self.writer.add_figure(f"{TENSORBOARD_TAG}/{name}", figure, close=False)
        self.written[name] = path
        log.info("Wrote %s", path)


def load_splits(
    cfg: DictConfig, checkpoint: dict | None
) -> tuple[dict[str, SplitArrays], list[str]]:
    """The three splits and class names: from ``cfg.csv_path`` when given, else from the data of
    the checkpoint's training run."""
    if cfg.csv_path:
        return load_fer2013_csv(cfg.csv_path, cfg.cache_dir), list(EMOTIONS)
    if checkpoint is None:
        raise FERUserError(
            "explore needs csv_path=<a fer2013-format csv>, or ckpt_path=<a .ckpt> to use the "
            "data of its training run"
        )
    datamodule = datamodule_from_checkpoint(checkpoint, {"cache_dir": cfg.cache_dir})
    splits = {split: datamodule.split_arrays(split) for split in SPLIT_NAMES}
    return splits, list(datamodule.class_names)


def explore(cfg: DictConfig) -> dict[str, Path]:
    """Write the data figures (and, with ``cfg.ckpt_path``, the model figures); returns the PNG
    paths by figure name."""
    if cfg.num_examples < 1 or cfg.num_mistakes < 1:
        raise FERUserError(
            f"num_examples and num_mistakes must be >= 1, got {cfg.num_examples} and "
            f"{cfg.num_mistakes}"
        )
    for key in ("examples_split", "split"):
        if cfg[key] not in SPLIT_NAMES:
            raise FERUserError(f"{key}={cfg[key]!r} must be one of {', '.join(SPLIT_NAMES)}")
    checkpoint_path = pretrained.resolve(cfg.ckpt_path) if cfg.ckpt_path else None
    checkpoint = read_checkpoint(checkpoint_path) if checkpoint_path else None
    # explore's csv_path stands for the data of a plain-csv run only (FER+ also needs its votes)
    if checkpoint is not None and run_config(checkpoint).data._target_ == CSV_DATA_TARGET:
        require_stored_csv(cfg.ckpt_path, checkpoint, cfg.csv_path, "csv_path")
    splits, class_names = load_splits(cfg, checkpoint)
    classifier = run_dir = writer = None
    if checkpoint is not None:
        classifier = classifier_from_checkpoint(checkpoint, cfg.ckpt_path)
        if classifier.class_names != class_names:
            raise FERUserError(
                f"{cfg.ckpt_path}: the model's classes {classifier.class_names} are not the "
                f"data's {class_names}; leave csv_path unset to use its training run's data"
            )
        indices = image_indices(cfg.image_indices, splits[cfg.split], cfg.split)
        if not pretrained.is_shipped(cfg.ckpt_path):  # shipped weights have no run
            run_dir = checkpoint_path.resolve().parent.parent  # <run>/checkpoints/<name>.ckpt
        if run_dir is not None and (run_dir / "tensorboard").is_dir():
            writer = SummaryWriter(str(run_dir / "tensorboard"))

    sink = FigureSink(Path(cfg.paths.output_dir), writer)
    try:
        examples = splits[cfg.examples_split]
        sink.save(
            "examples_per_emotion",
            plot_examples_per_emotion(
                examples, class_names, cfg.num_examples, cfg.seed, cfg.examples_split
            ),
        )
        sink.save("one_per_emotion", plot_one_per_emotion(examples, class_names, cfg.seed))
        sink.save("class_distribution", plot_class_distribution(splits, class_names))
        sink.save("mean_faces", plot_mean_faces(examples, class_names, cfg.examples_split))
        if classifier is not None:
            _save_model_figures(cfg, sink, classifier, splits[cfg.split], run_dir, indices)
    finally:
        if writer is not None:
            writer.close()
            log.info("Figures also logged to TensorBoard in %s", writer.log_dir)
    return sink.written


def image_indices(value: object, arrays: SplitArrays, split: str) -> list[int]:
    """``image_indices`` as a list of images of the split (one whole number counts as a list)."""
    size = arrays.labels.size
    given = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]
    if not given or any(
        isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < size
        for index in given
    ):
        raise FERUserError(
            f"image_indices={value!r}: give 1 or more whole numbers in 0..{size - 1} "
            f"(split {split!r} has {size} images), e.g. image_indices=[0,1,2]"
        )
    return given


def _save_model_figures(
    cfg: DictConfig,
    sink: FigureSink,
    classifier: Classifier,
    arrays: SplitArrays,
    run_dir: Path | None,
    indices: list[int],
) -> None:
    """Training curves (from the run folder; shipped weights have none), prediction panels of
    the images at ``indices`` and the confident mistakes of a checkpoint."""
    metrics_csv = run_dir / "csv" / "metrics.csv" if run_dir is not None else None
    if metrics_csv is None:
        log.info("No training curves: shipped weights carry no training logs")
    elif metrics_csv.is_file():
        sink.save("training_curves", plot_training_curves(read_epoch_metrics(metrics_csv)))
    else:
        log.warning(
            "No training curves: %s does not exist (the run was trained without the csv logger)",
            metrics_csv,
        )
    probabilities = classifier.predict_proba(arrays.images)
    names = classifier.class_names
    panels = plot_prediction_panels(arrays, probabilities, indices, names, cfg.split)
    sink.save("prediction_panels", panels)
    mistakes = plot_confident_mistakes(arrays, probabilities, names, cfg.num_mistakes, cfg.split)
    sink.save("confident_mistakes", mistakes)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="explore")
def main(cfg: DictConfig) -> None:
    """Write the exploration figures of a dataset and, optionally, of a checkpoint."""
    exit_on_user_error(explore, cfg)


if __name__ == "__main__":
    main()
