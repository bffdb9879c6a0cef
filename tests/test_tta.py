"""Test-time augmentation: the views, the averaging, and evaluate.py's `tta=` option."""

from __future__ import annotations

import json

import pytest
import torch

from fer_lightning.checkpoint import (
    datamodule_from_checkpoint,
    read_checkpoint,
    system_from_checkpoint,
)
from fer_lightning.errors import FERUserError
from fer_lightning.evaluation import evaluate
from fer_lightning.report import classification_report
from fer_lightning.tta import TEN_CROP_SIZE, tta_log_probabilities, views
from tests.conftest import compose_config, confusion


def test_flip_views_are_the_image_and_its_mirror():
    images = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    original, mirrored = views(images, "flip")
    assert torch.equal(original, images)
    assert torch.equal(mirrored[..., 0], images[..., -1])


def test_tencrop_views_are_corner_and_centre_crops_and_their_mirrors():
    """The ten views: the 44-px crops at the four corners and the centre of a 48-px image, each
    resized back to 48, then the same five mirrored, in that order."""
    assert TEN_CROP_SIZE == 44  # the corner offsets below are 48 - 44 = 4, the centre's 2
    images = torch.rand(3, 1, 48, 48)
    crops = views(images, "tencrop")
    assert len(crops) == 10
    corners_then_centre = [(0, 0), (0, 4), (4, 0), (4, 4), (2, 2)]
    for index, (top, left) in enumerate(corners_then_centre):
        expected = torch.nn.functional.interpolate(
            images[..., top : top + 44, left : left + 44], size=(48, 48), mode="bilinear"
        )
        torch.testing.assert_close(crops[index], expected, msg=f"view {index}")
        torch.testing.assert_close(crops[index + 5], expected.flip(-1), msg=f"view {index + 5}")


def test_tta_averages_probabilities_over_views():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    images = torch.rand(5, 1, 4, 4)
    log_probabilities = tta_log_probabilities(net, images, "flip")
    expected = (net(images).softmax(1) + net(images.flip(-1)).softmax(1)) / 2
    assert torch.allclose(log_probabilities.exp(), expected, atol=1e-6)
    assert torch.allclose(
        tta_log_probabilities(net, images, "none").exp(), net(images).softmax(1), atol=1e-6
    )


def test_unknown_tta_mode_is_a_user_error():
    with pytest.raises(FERUserError, match="tta='mirror' is not one of"):
        views(torch.zeros(1, 1, 48, 48), "mirror")


@pytest.mark.parametrize("mode", ["flip", "tencrop"])
def test_evaluate_with_tta(trained_checkpoint, tmp_path, mode):
    cfg = compose_config("evaluate", tmp_path, [f"ckpt_path={trained_checkpoint}", f"tta={mode}"])
    report = evaluate(cfg)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["tta"] == mode
    assert written["accuracy"] == pytest.approx(report["accuracy"])
    assert sum(values["support"] for values in written["per_class"].values()) == 70
    # the report scores the views' averaged predictions, which here differ from the plain ones
    checkpoint = read_checkpoint(trained_checkpoint)
    system = system_from_checkpoint(checkpoint, trained_checkpoint)
    images, labels = next(iter(datamodule_from_checkpoint(checkpoint, {}).dataloader("test")))
    with torch.no_grad():
        averaged = tta_log_probabilities(system, images, mode).argmax(1)
        plain = system(images).argmax(1)
    assert len(labels) == 70 and not torch.equal(averaged, plain)
    expected = classification_report(confusion(labels, averaged), list(system.hparams.class_names))
    assert report["accuracy"] == pytest.approx(expected["accuracy"])
    for name, scores in expected["per_class"].items():
        assert report["per_class"][name] == pytest.approx(scores)
