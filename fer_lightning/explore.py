"""Look at the data and at what a model learned, as PNG files in the run folder:

    python -m fer_lightning.explore data.csv_path=<fer2013-format csv>
    python -m fer_lightning.explore ckpt_path=<run>/checkpoints/best.ckpt [split=val]

Data figures: examples per emotion, one example of each emotion, the class distribution of the
three splits side by side and the mean face per class. With a checkpoint also: training curves
from the run's ``csv/metrics.csv``, image + probability-bar panels and a gallery of the most
confident mistakes. When the checkpoint's run has a ``tensorboard/`` folder, the figures are
logged there too. The figures are drawn in :mod:`fer_lightning.figures`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from omegaconf import DictConfig
from torch.utils.tensorboard import SummaryWriter

from fer_lightning.classes import EMOTIONS
from fer_lightning.cli import exit_on_user_error, settings_in_one_line
from fer_lightning.config import CONF_DIR
from fer_lightning.data import SPLIT_NAMES, SplitArrays, load_fer2013_csv
from fer_lightning.errors import FERUserError
from fer_lightning.figures import (
    CURVES,
    SPLIT_TITLES,
    plot_class_distribution,
    plot_confident_mistakes,
    plot_examples_per_emotion,
    plot_mean_faces,
    plot_one_per_emotion,
    plot_prediction_panels,
    plot_training_curves,
    png_bytes,
)
from fer_lightning.files import write_atomically
from fer_lightning.inference import Classifier
from fer_lightning.loader import LoadedModel, load_model
from fer_lightning.progress import tracked

log = logging.getLogger(__name__)

TENSORBOARD_TAG = "explore"
# faces per forward pass of the model figures unless data.eval_batch_size says otherwise
EVAL_BATCH_SIZE = 256
# the data settings that apply to a csv read without a checkpoint
CSV_SETTINGS = ("csv_path", "cache_dir")


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


class FigureSink:
    """Saves figures as PNG files in a folder and, when given a writer, logs them to TensorBoard."""

    def __init__(self, out_dir: Path, writer: SummaryWriter | None = None) -> None:
        self.out_dir = out_dir
        self.writer = writer
        self.written: dict[str, Path] = {}

    def save(self, name: str, figure: Figure) -> None:
        png = png_bytes(figure)
        path = self.out_dir / f"{name}.png"
        write_atomically(path, lambda file: file.write(png))
        if self.writer is not None:
            self.writer.add_figure(f"{TENSORBOARD_TAG}/{name}", figure, close=False)
        self.written[name] = path
        log.info("Wrote %s", path)


def load_splits(
    data: DictConfig, model: LoadedModel | None
) -> tuple[dict[str, SplitArrays], list[str]]:
    """The three splits and class names: with a model, the data of its training run with the
    non-null settings of ``data`` (``data.csv_path``, ...) replacing the stored ones, as in
    evaluate; without one, the fer2013-format csv ``data.csv_path``."""
    if model is not None:
        datamodule = model.datamodule(data)
        splits = {split: datamodule.split_arrays(split) for split in SPLIT_NAMES}
        return splits, list(datamodule.class_names)
    if not data.csv_path:
        raise FERUserError(
            "explore needs data.csv_path=<a fer2013-format csv>, or ckpt_path=<a .ckpt> to use "
            "the data of its training run"
        )
    others = [key for key in data if key not in CSV_SETTINGS and data[key] is not None]
    if others:
        raise FERUserError(
            f"data.{others[0]} applies to the data of a checkpoint (ckpt_path=...); without one, "
            "explore reads the csv data.csv_path"
        )
    return load_fer2013_csv(data.csv_path, data.cache_dir), list(EMOTIONS)


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
    model = load_model(cfg.ckpt_path, exported=False, ensemble=False) if cfg.ckpt_path else None
    if model is not None:
        model.require_stored_csv(cfg.data.csv_path, "data.csv_path")
    splits, class_names = load_splits(cfg.data, model)
    classifier = run_dir = writer = None
    if model is not None:
        classifier = model.classifier
        if classifier.class_names != class_names:
            raise FERUserError(
                f"{cfg.ckpt_path}: the model's classes {classifier.class_names} are not the "
                f"data's {class_names}"
            )
        indices = image_indices(cfg.image_indices, splits[cfg.split], cfg.split)
        if not model.is_pretrained:  # shipped weights have no run
            run_dir = model.file.resolve().parent.parent  # <run>/checkpoints/<name>.ckpt
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
    probabilities = _predict_with_progress(
        classifier, arrays.images, cfg.data.eval_batch_size or EVAL_BATCH_SIZE, cfg.split
    )
    names = classifier.class_names
    panels = plot_prediction_panels(arrays, probabilities, indices, names, cfg.split)
    sink.save("prediction_panels", panels)
    mistakes = plot_confident_mistakes(arrays, probabilities, names, cfg.num_mistakes, cfg.split)
    sink.save("confident_mistakes", mistakes)


def _predict_with_progress(
    classifier: Classifier, faces: np.ndarray, batch_size: int, split: str
) -> np.ndarray:
    """The classifier's probabilities for ``faces``, ``batch_size`` at a time, with progress shown
    (a large model with ten-crop TTA takes minutes over a split on a CPU)."""
    starts = range(0, len(faces), batch_size)
    described = f"Predicting {len(faces):,} images of {SPLIT_TITLES[split]}"
    batches = [
        classifier.predict_proba(faces[start : start + batch_size], batch_size)
        for start in tracked(starts, described, unit="batches")
    ]
    return np.concatenate(batches)


@settings_in_one_line
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="explore")
def main(cfg: DictConfig) -> None:
    """Write the exploration figures of a dataset and, optionally, of a checkpoint."""
    exit_on_user_error(explore, cfg)


if __name__ == "__main__":
    main()
