"""Ensembles (``ckpt_path=[a,b,...]``): the mean of the members' probabilities, each member with
its own input channels and TTA, in evaluate.py and predict; one-line errors elsewhere."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from torch import nn

from fer_lightning.checkpoint import (
    datamodule_from_checkpoint,
    read_checkpoint,
    system_from_checkpoint,
)
from fer_lightning.config import compose_config
from fer_lightning.data import FER2013DataModule, load_fer2013_csv
from fer_lightning.ensemble import MeanEnsemble, checkpoint_paths
from fer_lightning.errors import FERUserError
from fer_lightning.evaluation import evaluate
from fer_lightning.export import export
from fer_lightning.loader import load_model
from fer_lightning.report import classification_report
from fer_lightning.training import train
from fer_lightning.tta import tta_probabilities
from tests.conftest import ROOT, confusion, run_module

# a 3-channel member (the deep reference net, gray replicated) whose shipped TTA is tencrop
THREE_CHANNEL_MEMBER = "pretrained:deep"


class PixelNet(nn.Module):
    """Logits from a linear map of all pixels: sensitive to mirroring and to every channel."""

    def __init__(self, in_channels: int, num_classes: int = 3, size: int = 8) -> None:
        super().__init__()
        self.in_channels, self.num_classes = in_channels, num_classes
        self.linear = nn.Linear(in_channels * size * size, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.linear(images.flatten(1))


def test_mean_ensemble_averages_each_members_own_tta_and_channels():
    torch.manual_seed(0)
    gray, rgb = PixelNet(in_channels=1), PixelNet(in_channels=3)
    images = torch.rand(5, 1, 8, 8)
    ensemble = MeanEnsemble([gray, rgb], ["flip", "none"])
    expected = (
        (gray(images).softmax(1) + gray(images.flip(-1)).softmax(1)) / 2
        + rgb(images.expand(-1, 3, -1, -1)).softmax(1)
    ) / 2
    with torch.no_grad():
        assert torch.allclose(ensemble(images).softmax(1), expected, atol=1e-6)
        assert torch.allclose(ensemble(images).exp(), expected, atol=1e-6)
    with pytest.raises(ValueError, match="2 nets need as many TTA modes, got 1"):
        MeanEnsemble([gray, rgb], ["none"])


def member_probabilities(path, images: torch.Tensor, tta: str) -> torch.Tensor:
    """One member's probabilities, computed without the ensemble code."""
    system = system_from_checkpoint(read_checkpoint(path), path)
    with torch.no_grad():
        return tta_probabilities(system, images.expand(-1, system.net.in_channels, -1, -1), tta)


@pytest.mark.parametrize("tta", [None, "flip"])
def test_evaluate_an_ensemble_scores_the_mean_of_its_members(trained_checkpoint, tmp_path, tta):
    members = [str(trained_checkpoint), THREE_CHANNEL_MEMBER]
    overrides = [f"ckpt_path=[{','.join(members)}]"] + ([f"tta={tta}"] if tta else [])
    report = evaluate(compose_config("evaluate", tmp_path, overrides))

    modes = ["none", "tencrop"] if tta is None else [tta, tta]
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["tta"] == modes and written["ckpt_path"] == members
    assert written["accuracy"] == pytest.approx(report["accuracy"])
    checkpoint = read_checkpoint(trained_checkpoint)
    data = datamodule_from_checkpoint(checkpoint, {})
    images, labels = next(iter(data.dataloader("test")))
    each = [member_probabilities(m, images, mode) for m, mode in zip(members, modes, strict=True)]
    predicted = ((each[0] + each[1]) / 2).argmax(1)
    # the mean decides differently from either member alone, so a lost member would show
    assert len(labels) == 70
    assert not any(torch.equal(predicted, member.argmax(1)) for member in each)
    expected = classification_report(confusion(labels, predicted), data.class_names)
    assert report["accuracy"] == pytest.approx(expected["accuracy"])
    for name, scores in expected["per_class"].items():
        assert report["per_class"][name] == pytest.approx(scores)


def test_predict_with_an_ensemble_averages_the_members(trained_checkpoint, tiny_csv):
    faces = load_fer2013_csv(tiny_csv)["test"].images[:16]
    members = [str(trained_checkpoint), THREE_CHANNEL_MEMBER]
    ensemble = load_model(members).classifier
    each = [load_model(member).classifier.predict_proba(faces) for member in members]
    expected = np.mean(each, 0)
    np.testing.assert_allclose(ensemble.predict_proba(faces), expected, atol=1e-6)
    assert ensemble.describe() == (
        f"the mean of {trained_checkpoint} (tta=none) + {THREE_CHANNEL_MEMBER} (tta=tencrop)"
    )
    assert load_model(members, tta="flip").classifier.net.tta_modes == ["flip", "flip"]


def test_members_must_share_their_classes(trained_checkpoint, tmp_path):
    renamed = read_checkpoint(trained_checkpoint)
    renamed["hyper_parameters"]["class_names"][0] = "Anger"
    other = tmp_path / "renamed.ckpt"
    torch.save(renamed, other)
    with pytest.raises(FERUserError, match=r"renamed\.ckpt: its classes \['Anger', .* differ"):
        load_model([str(trained_checkpoint), str(other)])


def test_an_empty_list_is_a_user_error():
    with pytest.raises(FERUserError, match=r"ckpt_path=\[\] must be a checkpoint or a list"):
        checkpoint_paths([])


def test_tasks_without_ensembles_refuse_a_list_in_one_line(trained_checkpoint, tmp_path, train_cfg):
    listed = f"ckpt_path=[{trained_checkpoint},{THREE_CHANNEL_MEMBER}]"
    message = r"got a list of checkpoints \(\[.*\]\); only evaluate and predict take one"
    with pytest.raises(FERUserError, match=message):
        export(compose_config("export", tmp_path, [listed]))
    for module in ("fer_lightning.export", "fer_lightning.explore"):
        result = run_module(module, listed, f"hydra.run.dir={tmp_path / module}")
        assert result.returncode == 2
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("error: got a list of checkpoints (['")
    for key in ("init_weights", "ckpt_path"):  # a new run from weights, and a resume
        with pytest.raises(FERUserError, match=message):
            train(train_cfg(f"{key}=[{trained_checkpoint},{THREE_CHANNEL_MEMBER}]"))
    # a value Hydra reads as a number is still a (missing) path, not a list
    with pytest.raises(FERUserError, match="checkpoint 123 does not exist"):
        export(compose_config("export", tmp_path, ["ckpt_path=123"]))


def choose_ensemble_module():
    path = ROOT / "tools" / "choose_ensemble.py"
    spec = importlib.util.spec_from_file_location("choose_ensemble", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.bench  # tools/choose_ensemble.py, a development tool
def test_choose_ensemble_ranks_every_subset_on_publictest_only(
    trained_checkpoint, tiny_csv, tmp_path, monkeypatch, capsys
):
    tool = choose_ensemble_module()
    candidates = [str(trained_checkpoint), THREE_CHANNEL_MEMBER, "pretrained:baseline"]
    read_splits = []
    split_arrays = FER2013DataModule.split_arrays
    monkeypatch.setattr(
        FER2013DataModule,
        "split_arrays",
        lambda self, split: read_splits.append(split) or split_arrays(self, split),
    )
    ranked = tool.choose(candidates, {"csv_path": str(tiny_csv)}, min_size=1)
    assert set(read_splits) == {"val"}  # PrivateTest is never used
    best = ",".join(ranked[0].members)
    assert (
        capsys.readouterr()
        .out.rstrip()
        .endswith(f"chosen: python evaluate.py ckpt_path=[{best}] data.csv_path={tiny_csv}")
    )

    assert len(ranked) == 7 and len({scored.members for scored in ranked}) == 7
    # each score is what evaluate.py split=val reports for that set
    checked = (ranked[0], ranked[-1], next(s for s in ranked if len(s.members) == 3))
    for index, scored in enumerate(checked):
        listed = f"ckpt_path=[{','.join(scored.members)}]"  # one member: a list of one
        run_dir = tmp_path / f"evaluate{index}"
        overrides = [listed, "split=val", f"data.csv_path={tiny_csv}"]
        report = evaluate(compose_config("evaluate", run_dir, overrides))
        assert scored.accuracy == pytest.approx(report["accuracy"])
        assert scored.f1_macro == pytest.approx(report["f1_macro"])


@pytest.mark.bench  # tools/choose_ensemble.py, a development tool
def test_choose_ensemble_breaks_ties_by_macro_f1_then_the_smaller_set():
    tool = choose_ensemble_module()
    labels = torch.tensor([0, 0, 1, 2])
    one_hot = torch.eye(3)
    # a, b and c each get 3 of 4 right; a misses a class-0 face, b and c the class-2 face
    a = one_hot[[1, 0, 1, 2]]
    b = one_hot[[0, 0, 1, 1]]
    c = b.clone()
    ranked = tool.score_subsets({"a": a, "b": b, "c": c}, labels, ["x", "y", "z"], min_size=1)
    scores = {scored.members: (scored.accuracy, scored.f1_macro) for scored in ranked}
    assert scores[("a",)][0] == scores[("b",)][0] == scores[("b", "c")][0] == 0.75
    assert scores[("a",)][1] > scores[("b",)][1]  # a's errors cost less macro-F1
    assert ranked[0].members == ("a",)
    # b and b + c score the same (c copies b): the smaller set ranks first
    order = [scored.members for scored in ranked]
    assert order.index(("b",)) < order.index(("b", "c"))


@pytest.mark.bench  # tools/choose_ensemble.py, a development tool
def test_choose_ensemble_refuses_candidates_of_other_classes(trained_checkpoint, tmp_path):
    renamed = read_checkpoint(trained_checkpoint)
    renamed["hyper_parameters"]["class_names"][0] = "Anger"
    torch.save(renamed, tmp_path / "renamed.ckpt")
    tool = choose_ensemble_module()
    with pytest.raises(FERUserError, match=r"renamed\.ckpt: its classes .* differ"):
        tool.choose([str(trained_checkpoint), str(tmp_path / "renamed.ckpt")], {}, min_size=2)


@pytest.mark.bench  # tools/choose_ensemble.py, a development tool
def test_the_printed_command_quotes_paths_hydra_would_misread():
    tool = choose_ensemble_module()
    command = tool.evaluate_command(
        ["pretrained:vgg", "runs/a b,c/best.ckpt", "~/runs/best.ckpt"],
        {"csv_path": "~/x.csv", "ferplus_csv": None},
    )
    assert command == (
        "python evaluate.py ckpt_path=[pretrained:vgg,'runs/a b,c/best.ckpt','~/runs/best.ckpt'] "
        "data.csv_path='~/x.csv'"
    )
    overrides = command.split(" ", 2)[2].rsplit(" ", 1)
    members, csv = OverridesParser.create().parse_overrides(overrides)
    assert members.value() == ["pretrained:vgg", "runs/a b,c/best.ckpt", "~/runs/best.ckpt"]
    assert csv.value() == "~/x.csv"
