"""Knowledge distillation: teacher targets written by ``python -m fer_lightning.distill`` for the
training split, and training on them blended with the labels (``data.teacher_targets``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fer_lightning.checkpoint import read_checkpoint, system_from_checkpoint
from fer_lightning.classes import EMOTIONS
from fer_lightning.config import compose_config
from fer_lightning.data import FER2013DataModule, load_fer2013_csv, normalize
from fer_lightning.data.ferplus import FERPLUS_CLASSES
from fer_lightning.data.teacher import (
    TEACHER_FORMAT,
    blend_targets,
    split_fingerprint,
    teacher_record,
)
from fer_lightning.distill import write_teacher_targets
from fer_lightning.errors import FERUserError
from fer_lightning.evaluation import evaluate
from fer_lightning.training import train
from fer_lightning.tta import tta_probabilities
from tests.conftest import LIMITED_RUN, run_module, run_script, tiny_data_overrides

# a 3-channel teacher whose shipped TTA is tencrop, beside the 1-channel tiny run
SHIPPED_TEACHER = "pretrained:deep"


def distill_cfg(tmp_path: Path, *overrides: str):
    return compose_config("distill", tmp_path / "distill", list(overrides))


def write_teacher_file(path: Path, csv_path: Path, probabilities_of) -> Path:
    """A teacher-targets file for the training split of ``csv_path`` whose probabilities are
    ``probabilities_of(labels)``."""
    arrays = load_fer2013_csv(csv_path)["train"]
    probabilities = probabilities_of(torch.from_numpy(arrays.labels))
    record = teacher_record(probabilities, arrays, EMOTIONS, ["made by hand"], ["none"])
    torch.save(record, path)
    return path


def test_distill_writes_the_teachers_mean_probabilities_for_each_training_image(
    trained_checkpoint, tiny_csv, tmp_path
):
    paths = [str(trained_checkpoint), SHIPPED_TEACHER]
    cfg = distill_cfg(tmp_path, f"ckpt_path=[{','.join(paths)}]", "tta=flip")
    output = write_teacher_targets(cfg)

    assert output == tmp_path / "distill" / "teacher_targets.pt"
    record = torch.load(output, weights_only=True)
    arrays = load_fer2013_csv(tiny_csv)["train"]
    images = torch.from_numpy(arrays.images).unsqueeze(1)
    expected = []
    for path in paths:
        system = system_from_checkpoint(read_checkpoint(path), path)
        with torch.no_grad():
            inputs = normalize(images, system.net.in_channels)
            expected.append(tta_probabilities(system, inputs, "flip"))
    assert record["format"] == TEACHER_FORMAT
    assert record["probabilities"].shape == (len(arrays.labels), len(EMOTIONS))
    assert torch.allclose(record["probabilities"], torch.stack(expected).mean(0), atol=1e-5)
    assert record["class_names"] == list(EMOTIONS)
    assert record["train_fingerprint"] == split_fingerprint(arrays)
    assert record["teachers"] == paths and record["tta"] == ["flip", "flip"]


def test_distill_output_option_and_members_shipped_tta(trained_checkpoint, tmp_path):
    output = tmp_path / "elsewhere" / "targets.pt"
    cfg = distill_cfg(tmp_path, f"ckpt_path={trained_checkpoint}", f"output={output}")
    assert write_teacher_targets(cfg) == output
    record = torch.load(output, weights_only=True)
    assert record["tta"] == ["none"]  # a training checkpoint's own mode
    assert torch.allclose(record["probabilities"].sum(1), torch.ones(280), atol=1e-5)
    assert not list(output.parent.glob(".tmp-*"))


def test_blend_keeps_the_label_dominant_up_to_half_weight():
    labels = torch.tensor([0, 2])
    teacher = torch.tensor([[0.1, 0.9, 0.0], [0.0, 0.0, 1.0]])
    blended = blend_targets(labels, teacher, 0.25)
    assert torch.allclose(blended, torch.tensor([[0.775, 0.225, 0.0], [0.0, 0.0, 1.0]]))
    assert torch.equal(blend_targets(labels, teacher, 0.5).argmax(1), labels)
    assert torch.equal(blend_targets(labels, teacher, 1.0), teacher)


def test_training_batches_carry_the_blended_targets(tiny_csv, tmp_path):
    generator = torch.Generator().manual_seed(0)
    path = write_teacher_file(
        tmp_path / "t.pt",
        tiny_csv,
        lambda labels: torch.rand(len(labels), 7, generator=generator).softmax(1),
    )
    teacher = torch.load(path, weights_only=True)["probabilities"]
    datamodule = FER2013DataModule(
        str(tiny_csv), batch_size=50, teacher_targets=str(path), teacher_weight=0.3
    )
    datamodule.setup("fit")
    arrays = datamodule.split_arrays("train")
    expected = blend_targets(torch.from_numpy(arrays.labels), teacher, 0.3)
    row_of = {
        image.numpy().tobytes(): row
        for row, image in enumerate(normalize(torch.from_numpy(arrays.images).unsqueeze(1)))
    }
    seen = []
    for images, targets in datamodule.train_dataloader():
        assert targets.shape == (len(images), 7)
        rows = [row_of[image.numpy().tobytes()] for image in images]
        assert torch.allclose(targets, expected[rows])
        seen += rows
    assert sorted(seen) == list(range(len(arrays.labels)))
    # evaluation splits keep their labels
    _, val_targets = next(iter(datamodule.val_dataloader()))
    assert val_targets.dtype == torch.int64 and val_targets.ndim == 1


def fit_metrics(run_dir: Path, csv_path: Path, *overrides: str) -> dict[str, float]:
    settings = ["seed=3", "test=false", "data.class_weighting=none", *LIMITED_RUN, *overrides]
    return train(compose_config("train", run_dir, [*tiny_data_overrides(csv_path), *settings]))


def test_a_teacher_that_repeats_the_labels_trains_exactly_like_the_labels(tiny_csv, tmp_path):
    """With weight 1, a teacher equal to the one-hot labels gives the same fit as no teacher;
    a teacher that disagrees gives another: the targets reach the loss."""
    echo = write_teacher_file(tmp_path / "echo.pt", tiny_csv, lambda y: F.one_hot(y, 7).float())
    shifted = write_teacher_file(
        tmp_path / "shifted.pt", tiny_csv, lambda y: F.one_hot((y + 1) % 7, 7).float()
    )
    plain = fit_metrics(tmp_path / "plain", tiny_csv)
    distilled = fit_metrics(
        tmp_path / "echo", tiny_csv, f"data.teacher_targets={echo}", "data.teacher_weight=1.0"
    )
    misled = fit_metrics(
        tmp_path / "shifted", tiny_csv, f"data.teacher_targets={shifted}", "data.teacher_weight=1"
    )
    for name in ("train/loss", "val/loss", "val/acc"):
        assert distilled[name] == pytest.approx(plain[name], abs=1e-5), name
    assert abs(misled["train/loss"] - plain["train/loss"]) > 1e-3

    # the targets are for training only: evaluation needs neither them nor their file
    echo.unlink()
    overrides = [f"ckpt_path={tmp_path / 'echo' / 'checkpoints' / 'best.ckpt'}", "split=val"]
    report = evaluate(compose_config("evaluate", tmp_path / "evaluate", overrides))
    assert report["accuracy"] == pytest.approx(distilled["val/acc_best"], abs=1e-6)


def test_teacher_targets_of_another_training_set_are_refused(train_cfg, tiny_csv, tmp_path):
    other_csv = tmp_path / "other.csv"
    lines = tiny_csv.read_text().splitlines()
    other_csv.write_text("\n".join([lines[0], *lines[2:]]) + "\n")  # one training row less
    stale = write_teacher_file(tmp_path / "stale.pt", other_csv, lambda y: F.one_hot(y, 7).float())
    with pytest.raises(FERUserError, match=r"stale.pt: made for another training set \(279"):
        train(train_cfg(f"data.teacher_targets={stale}", *LIMITED_RUN))
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_teacher_targets_of_other_classes_or_foreign_files_are_refused(
    tiny_csv, tmp_path, trained_checkpoint
):
    arrays = load_fer2013_csv(tiny_csv)["train"]
    ferplus = tmp_path / "ferplus.pt"
    record = teacher_record(torch.rand(len(arrays.labels), 8), arrays, FERPLUS_CLASSES, [], [])
    torch.save(record, ferplus)
    cases = {
        ferplus: "made for the classes",
        trained_checkpoint: "not a teacher-targets file",
        tmp_path / "missing.pt": "no such file; write it with fer-lightning distill",
    }
    (tmp_path / "truncated.pt").write_bytes(ferplus.read_bytes()[:100])
    cases[tmp_path / "truncated.pt"] = r"not a teacher-targets file \("
    uniform = torch.full((len(arrays.labels), 7), 1 / 7)
    for name, change, message in [
        ("no_tta.pt", lambda r: r.pop("tta"), r"not a teacher-targets file \(write one"),
        (
            "short.pt",
            lambda r: r.update(probabilities=uniform[:32]),
            r"its probabilities have shape \(32, 7\), the training set needs \(280, 7\)",
        ),
        (
            "integer.pt",
            lambda r: r.update(probabilities=uniform.long()),
            "its probabilities are not a float tensor",
        ),
        (
            "negative.pt",
            lambda r: r["probabilities"][5].sub_(2 / 7),
            "row 5 of its probabilities is not a probability",
        ),
        (
            "unnormalised.pt",
            lambda r: r["probabilities"][9].mul_(2),
            "row 9 of its probabilities is not a probability",
        ),
    ]:
        record = teacher_record(uniform.clone(), arrays, EMOTIONS, [], [])
        change(record)
        torch.save(record, tmp_path / name)
        cases[tmp_path / name] = message
    for path, message in cases.items():
        datamodule = FER2013DataModule(str(tiny_csv), teacher_targets=str(path))
        with pytest.raises(FERUserError, match=f"data.teacher_targets=.*{path.name}: {message}"):
            datamodule.setup("fit")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"teacher_weight": 1.5}, r"data.teacher_weight=1.5 must be a number in \[0, 1\]"),
        ({"teacher_weight": "half"}, r"data.teacher_weight='half' must be a number"),
        ({"augment": {"mixup_alpha": 0.2}}, "cannot be combined with augment mixup_alpha"),
    ],
)
def test_distillation_settings_are_checked_in_one_line(tiny_csv, settings, message):
    with pytest.raises(FERUserError, match=message):
        FER2013DataModule(str(tiny_csv), teacher_targets="t.pt", **settings)


def test_a_teacher_weight_without_teacher_targets_is_still_checked(tiny_csv):
    with pytest.raises(FERUserError, match=r"data.teacher_weight=7 must be a number in \[0, 1\]"):
        FER2013DataModule(str(tiny_csv), teacher_weight=7)


def test_distill_refuses_a_partial_labelling_and_writes_nothing(trained_checkpoint, tmp_path):
    cfg = distill_cfg(
        tmp_path, f"ckpt_path={trained_checkpoint}", "+trainer.limit_predict_batches=1"
    )
    with pytest.raises(FERUserError, match=r"labelled 256 of 280 training images; .*nothing was"):
        write_teacher_targets(cfg)
    assert not (tmp_path / "distill").exists() or not list((tmp_path / "distill").iterdir())


def test_distill_refuses_an_output_folder_before_labelling(trained_checkpoint, tmp_path):
    cfg = distill_cfg(tmp_path, f"ckpt_path={trained_checkpoint}", f"output={tmp_path}")
    with pytest.raises(FERUserError, match=f"output={tmp_path} is a folder; name the file"):
        write_teacher_targets(cfg)


def test_distill_refuses_teachers_trained_on_another_split(trained_checkpoint, tmp_path):
    """A teacher that trained on the student's validation images would leak them."""
    other = torch.load(trained_checkpoint, weights_only=True)
    other["fer_run_config"]["data"]["split_seed"] = 1
    torch.save(other, tmp_path / "other_split.ckpt")
    paths = f"ckpt_path=[{trained_checkpoint},{tmp_path / 'other_split.ckpt'}]"
    with pytest.raises(FERUserError, match=r"other_split.ckpt: trained on another split of the"):
        write_teacher_targets(distill_cfg(tmp_path, paths))


def test_a_test_only_run_does_not_need_the_teacher_file(train_cfg, trained_checkpoint, tmp_path):
    cfg = train_cfg(
        "train=false",
        "test=true",
        f"init_weights={trained_checkpoint}",
        f"data.teacher_targets={tmp_path / 'gone.pt'}",
    )
    assert train(cfg)["test/acc"] >= 0


def test_train_py_names_a_missing_teacher_file_in_one_line(tiny_csv, tmp_path):
    result = run_script(
        "train.py",
        "data=fer2013",
        f"data.csv_path={tiny_csv}",
        f"data.teacher_targets={tmp_path / 'nowhere.pt'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        timeout=300,
    )
    assert result.returncode != 0
    assert "nowhere.pt: no such file; write it with fer-lightning distill" in (result.stderr)
    assert "Traceback" not in result.stderr


def test_distill_cli_asks_for_a_csv_that_is_not_here_in_one_line(trained_checkpoint, tmp_path):
    moved = torch.load(trained_checkpoint, weights_only=True)
    moved["fer_run_config"]["data"]["csv_path"] = str(tmp_path / "elsewhere" / "fer2013.csv")
    torch.save(moved, tmp_path / "moved.ckpt")
    result = run_module(
        "fer_lightning.distill",
        f"ckpt_path=[{tmp_path / 'moved.ckpt'},pretrained:deep]",
        f"hydra.run.dir={tmp_path / 'run'}",
        timeout=300,
    )
    assert result.returncode != 0
    assert "moved.ckpt: the csv it was trained on" in result.stderr
    assert "name yours with data.csv_path=" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "teacher_targets.pt").exists()
