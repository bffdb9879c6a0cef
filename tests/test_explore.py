"""explore: every figure is written as a real PNG for a csv and for a trained checkpoint, the
curves come from the run's metrics.csv, and the figures reach the run's TensorBoard."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from omegaconf import ListConfig
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fer_lightning import explore as explore_module
from fer_lightning.config import compose_config
from fer_lightning.data import SplitArrays, load_fer2013_csv
from fer_lightning.errors import FERUserError
from fer_lightning.explore import explore, image_indices, read_epoch_metrics
from fer_lightning.figures import SPLIT_TITLES
from tests.conftest import TINY_SPLIT_SIZES, run_module

DATA_FIGURES = ("examples_per_emotion", "one_per_emotion", "class_distribution", "mean_faces")
MODEL_FIGURES = ("training_curves", "prediction_panels", "confident_mistakes")


@pytest.fixture(scope="module")
def run_checkpoint(tmp_path_factory, trained_run) -> Path:
    """The best checkpoint of a copy of the shared training run (explore logs into its
    TensorBoard folder, which other tests read)."""
    copy = shutil.copytree(trained_run, tmp_path_factory.mktemp("explored") / "run")
    return copy / "checkpoints" / "best.ckpt"


def assert_png(path, min_height: int = 100, min_width: int = 200) -> None:
    """A decodable picture of a plausible size with more than one colour in it."""
    image = cv2.imread(str(path))
    assert image is not None, path
    assert image.shape[0] >= min_height and image.shape[1] >= min_width, (path, image.shape)
    assert image.std() > 10, path


def test_cli_writes_the_data_figures_of_a_csv(tiny_csv, tmp_path):
    result = run_module(
        "fer_lightning.explore",
        f"data.csv_path={tiny_csv}",
        "data.cache_dir=null",
        "num_examples=3",
        f"hydra.run.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for name in DATA_FIGURES:
        assert_png(tmp_path / f"{name}.png")
    assert not any((tmp_path / f"{name}.png").exists() for name in MODEL_FIGURES)
    # seven rows of three examples: taller than wide
    height, width = cv2.imread(str(tmp_path / "examples_per_emotion.png")).shape[:2]
    assert height > width


def test_csv_path_on_the_command_line_is_answered_with_data_csv_path(tmp_path):
    """explore takes the data settings of train.py and evaluate.py; the old key gets a hint."""
    result = run_module("fer_lightning.explore", "csv_path=x.csv", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: explore has no setting csv_path; did you mean data.csv_path=...?"
    )


def test_checkpoint_adds_model_figures_and_logs_all_to_tensorboard(
    run_checkpoint, tmp_path, caplog, monkeypatch
):
    monkeypatch.delenv("FORCE_COLOR", raising=False)  # progress as log lines, as in a pipe
    cfg = compose_config(
        "explore",
        tmp_path,
        [f"ckpt_path={run_checkpoint}", "image_indices=[0,5]", "num_mistakes=4"],
    )
    with caplog.at_level(logging.INFO, logger="fer_lightning.progress"):
        written = explore(cfg)
    progress = [record.getMessage() for record in caplog.records]
    size = TINY_SPLIT_SIZES["num_val"]
    assert progress[0] == f"Predicting {size} images of PublicTest (val): 0/1 batches"
    assert progress[-1].startswith(f"Predicting {size} images of PublicTest (val): 1/1 batches")
    assert set(written) == {*DATA_FIGURES, *MODEL_FIGURES}
    for name in (*DATA_FIGURES, *MODEL_FIGURES):
        assert written[name] == tmp_path / f"{name}.png"
        assert_png(written[name])
    # two image + probability-bar rows
    height, width = cv2.imread(str(written["prediction_panels"])).shape[:2]
    assert height > 400 and width > height

    events = EventAccumulator(
        str(run_checkpoint.parents[1] / "tensorboard"), size_guidance={"images": 0}
    )
    events.Reload()
    logged = {tag for tag in events.Tags()["images"] if tag.startswith("explore/")}
    assert logged == {f"explore/{name}" for name in (*DATA_FIGURES, *MODEL_FIGURES)}


def test_run_without_csv_logs_skips_the_curves_with_a_message(run_checkpoint, tmp_path, caplog):
    copied = tmp_path / "bare_run" / "checkpoints" / "best.ckpt"
    copied.parent.mkdir(parents=True)
    shutil.copy(run_checkpoint, copied)
    cfg = compose_config("explore", tmp_path / "out", [f"ckpt_path={copied}"])
    with caplog.at_level(logging.WARNING, logger="fer_lightning.explore"):
        written = explore(cfg)
    assert "training_curves" not in written
    assert {"prediction_panels", "confident_mistakes"} <= set(written)
    assert "No training curves" in caplog.text and "csv/metrics.csv" in caplog.text
    assert not (tmp_path / "bare_run" / "tensorboard").exists()


def test_epoch_metrics_take_each_epochs_logged_values(tmp_path):
    metrics_csv = tmp_path / "metrics.csv"
    metrics_csv.write_text(
        "epoch,step,lr-Adam,train/acc,train/loss,val/acc,val/loss\n"
        ",0,0.001,,,,\n"
        "0,4,,,,0.30,1.90\n"
        "0,4,,0.25,1.95,,\n"
        "1,9,,,,0.40,1.80\n"
        "1,9,,0.35,1.85,,\n"
    )
    epochs = read_epoch_metrics(metrics_csv)
    assert list(epochs.index) == [0, 1]
    np.testing.assert_allclose(epochs["train/loss"], [1.95, 1.85])
    np.testing.assert_allclose(epochs["val/acc"], [0.30, 0.40])


def test_one_image_index_is_a_list_of_one():
    arrays = SplitArrays(np.zeros((3, 48, 48), np.uint8), np.zeros(3, np.int64))
    assert image_indices(2, arrays, "test") == [2]  # `image_indices=2` on the command line
    assert image_indices(ListConfig([0, 2]), arrays, "test") == [0, 2]


def test_mistakes_of_the_options_are_user_errors(run_checkpoint, tmp_path):
    out_of_range = compose_config(
        "explore", tmp_path, [f"ckpt_path={run_checkpoint}", "image_indices=[0,70]"]
    )
    with pytest.raises(FERUserError, match=r"image_indices=\[0, 70\].*0\.\.69"):
        explore(out_of_range)
    for indices in ("[]", "[1.5]", "[a]", "true"):
        bad = compose_config(
            "explore", tmp_path, [f"ckpt_path={run_checkpoint}", f"image_indices={indices}"]
        )
        with pytest.raises(FERUserError, match=r"give 1 or more whole numbers in 0\.\.69"):
            explore(bad)
    with pytest.raises(FERUserError, match=r"explore needs data\.csv_path="):
        explore(compose_config("explore", tmp_path, []))
    with pytest.raises(FERUserError, match="split='dev' must be one of"):
        explore(compose_config("explore", tmp_path, ["split=dev", "data.csv_path=x.csv"]))
    assert not list(tmp_path.glob("*.png"))


@pytest.mark.parametrize(("overrides", "split"), [((), "val"), (("split=test",), "test")])
def test_model_figures_show_publictest_unless_privatetest_is_asked_for(
    run_checkpoint, tiny_csv, tmp_path, monkeypatch, overrides, split
):
    shown = {}
    original = explore_module.plot_confident_mistakes

    def recording(arrays, probabilities, class_names, count, split_name):
        figure = original(arrays, probabilities, class_names, count, split_name)
        shown.update(labels=arrays.labels, title=figure.get_suptitle())
        return figure

    monkeypatch.setattr(explore_module, "plot_confident_mistakes", recording)
    cfg = compose_config(
        "explore", tmp_path, [f"ckpt_path={run_checkpoint}", "num_mistakes=4", *overrides]
    )
    explore(cfg)
    np.testing.assert_array_equal(shown["labels"], load_fer2013_csv(tiny_csv)[split].labels)
    assert SPLIT_TITLES[split] in shown["title"]


def test_shipped_weights_get_model_figures_without_training_curves(tiny_csv, tmp_path, caplog):
    package = Path(explore_module.__file__).parent
    before = sorted(path.name for path in package.iterdir())
    cfg = compose_config(
        "explore",
        tmp_path,
        ["ckpt_path=pretrained:baseline", f"data.csv_path={tiny_csv}"],
    )
    with caplog.at_level(logging.INFO, logger="fer_lightning.explore"):
        written = explore(cfg)
    assert {"prediction_panels", "confident_mistakes"} <= set(written)
    assert "training_curves" not in written
    assert "shipped weights carry no training logs" in caplog.text
    assert "csv logger" not in caplog.text
    assert sorted(path.name for path in package.iterdir()) == before  # nothing written there
