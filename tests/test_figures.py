"""The figures show what they say: rates and counts of a confusion matrix, and the model's
surest mistakes in order."""

from __future__ import annotations

import numpy as np

from fer_lightning.classes import EMOTIONS
from fer_lightning.data import SplitArrays
from fer_lightning.figures import plot_confident_mistakes, plot_confusion_matrix

NAMES = ["Angry", "Happy", "Sad"]
# Rows = true class, columns = predicted class.
CONFUSION = np.array(
    [
        [5, 2, 1],  # 8 Angry
        [1, 6, 3],  # 10 Happy
        [0, 2, 2],  # 4 Sad
    ]
)


def test_plot_shows_rates_and_counts() -> None:
    confusion = CONFUSION.copy()
    confusion[2] = 0  # a class without samples must not divide by zero
    figure = plot_confusion_matrix(confusion, NAMES)
    axes = figure.axes[0]
    texts = {text.get_text() for text in axes.texts}
    assert "0.62\n(5)" in texts  # 5 of 8 Angry
    assert "0.60\n(6)" in texts
    assert "0.00\n(0)" in texts
    assert len(axes.texts) == 9
    assert [label.get_text() for label in axes.get_xticklabels()] == NAMES
    assert axes.get_xlabel() == "Predicted"
    assert axes.get_ylabel() == "True"
    assert "Confusion matrix" in axes.get_title()


def test_confident_mistakes_are_the_surest_wrong_predictions_surest_first():
    """plot_confident_mistakes shows only wrong predictions, the most confident ones, in
    descending confidence, each with its own image and labels."""
    images = np.zeros((6, 48, 48), np.uint8)
    images.reshape(6, -1)[np.arange(6), np.arange(6)] = 255  # image i: one bright pixel at i
    labels = np.arange(6, dtype=np.int64)
    # (predicted class, its probability) per image; images 0 and 3 are right
    predictions = [(0, 0.99), (3, 0.60), (0, 0.90), (3, 0.50), (1, 0.75), (6, 0.40)]
    probabilities = np.empty((6, 7))
    for row, (predicted, confidence) in enumerate(predictions):
        probabilities[row] = (1 - confidence) / 6
        probabilities[row, predicted] = confidence
    figure = plot_confident_mistakes(
        SplitArrays(images, labels), probabilities, list(EMOTIONS), 3, "val"
    )
    shown = [int(axes.images[0].get_array().argmax()) for axes in figure.axes if axes.images]
    assert shown == [2, 4, 1]
    titles = [axes.get_title() for axes in figure.axes if axes.images]
    assert titles == ["Angry (0.90)\n/ Fear", "Disgust (0.75)\n/ Sad", "Happy (0.60)\n/ Disgust"]
    assert "4 of 6 wrong" in figure.get_suptitle()
