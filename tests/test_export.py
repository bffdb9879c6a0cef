"""export: ONNX and TorchScript files with a dynamic batch axis, parity with PyTorch, metadata that
predict reads back, and prediction from the ONNX file equal to the checkpoint's."""

from __future__ import annotations

import json
import re

import cv2
import numpy as np
import onnx
import pytest
import torch

from fer_lightning.checkpoint import read_checkpoint
from fer_lightning.classes import EMOTIONS
from fer_lightning.config import compose_config
from fer_lightning.data import load_fer2013_csv
from fer_lightning.errors import FERUserError
from fer_lightning.evaluation import evaluate
from fer_lightning.export import (
    BATCH_AXIS,
    MIN_OPSET,
    export,
    onnx_bytes,
    parity_gap,
    torchscript_bytes,
)
from fer_lightning.inference import (
    METADATA_KEY,
    OnnxClassifier,
    TorchClassifier,
    classifier_from_bytes,
    model_metadata,
)
from fer_lightning.loader import load_model
from fer_lightning.models import BaselineCNN, DeepConcatNet
from fer_lightning.predict import predict
from fer_lightning.pretrained.__main__ import ship
from tests.conftest import run_module

PARITY = 1e-4


@pytest.fixture(scope="module")
def exported(tmp_path_factory, trained_checkpoint) -> dict:
    """The trained checkpoint exported once per format, into each export run's default file."""
    files = {}
    for model_format in ("onnx", "torchscript"):
        run_dir = tmp_path_factory.mktemp(model_format)
        cfg = compose_config(
            "export", run_dir, [f"ckpt_path={trained_checkpoint}", f"format={model_format}"]
        )
        files[model_format] = export(cfg)
    return files


def random_inputs(batch: int, channels: int = 1) -> np.ndarray:
    generator = torch.Generator().manual_seed(batch)
    return (torch.rand(batch, channels, 48, 48, generator=generator) * 2 - 1).numpy()


@pytest.mark.parametrize(
    ("model_format", "name"), [("onnx", "model.onnx"), ("torchscript", "model.pt")]
)
def test_exported_model_matches_pytorch_for_any_batch_size(
    exported, trained_checkpoint, model_format, name
):
    path = exported[model_format]
    assert path.name == name
    model = load_model(path).classifier
    reference = load_model(trained_checkpoint).classifier
    assert (model.class_names, model.in_channels) == (list(EMOTIONS), 1)
    for batch in (5, 1, 13):  # exported with 8: the batch axis must be dynamic
        inputs = random_inputs(batch)
        assert np.abs(model.logits(inputs) - reference.logits(inputs)).max() < PARITY


def test_onnx_file_declares_a_symbolic_batch_axis_and_a_recent_opset(exported):
    model = onnx.load(exported["onnx"])
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param == BATCH_AXIS
    assert max(opset.version for opset in model.opset_import if opset.domain == "") >= MIN_OPSET
    assert json.loads({p.key: p.value for p in model.metadata_props}["fer_lightning"]) == {
        "class_names": list(EMOTIONS),
        "in_channels": 1,
        "tta": "none",
    }


@pytest.mark.parametrize("model_format", ["onnx", "torchscript"])
def test_files_exported_from_shipped_weights_keep_their_tta(
    trained_checkpoint, tiny_csv, tmp_path, monkeypatch, model_format
):
    monkeypatch.setattr("fer_lightning.checkpoint.PRETRAINED_DIR", tmp_path)
    monkeypatch.setattr("fer_lightning.pretrained.__main__.PRETRAINED_DIR", tmp_path)
    ship(str(trained_checkpoint), "tiny", "flip", half=False)
    cfg = compose_config(
        "export", tmp_path / "run", ["ckpt_path=pretrained:tiny", f"format={model_format}"]
    )
    path = export(cfg)
    model = load_model(path).classifier
    assert model.tta == "flip"
    faces = load_fer2013_csv(tiny_csv)["test"].images[:16]
    np.testing.assert_allclose(
        model.predict_proba(faces),
        load_model("pretrained:tiny").classifier.predict_proba(faces),
        atol=1e-5,
    )
    without_tta = load_model(path, tta="none").classifier
    assert without_tta.tta == "none"
    assert not np.allclose(model.predict_proba(faces), without_tta.predict_proba(faces), atol=1e-5)


def test_predict_from_onnx_gives_the_checkpoint_predictions(
    exported, trained_checkpoint, tiny_csv, tmp_path
):
    folder = tmp_path / "crops"
    folder.mkdir()
    for index, image in enumerate(load_fer2013_csv(tiny_csv)["test"].images[:20]):
        cv2.imwrite(str(folder / f"{index:02d}.png"), image)
    assert isinstance(load_model(exported["onnx"]).classifier, OnnxClassifier)

    def predictions(model) -> list[dict]:
        cfg = compose_config(
            "predict",
            tmp_path / model.suffix[1:],
            [f"source={folder}", f"ckpt_path={model}", "detect=false"],
        )
        return [json.loads(line) for line in predict(cfg).read_text().splitlines()]

    from_onnx, from_checkpoint = predictions(exported["onnx"]), predictions(trained_checkpoint)
    assert [line["label"] for line in from_onnx] == [line["label"] for line in from_checkpoint]
    for onnx_line, checkpoint_line in zip(from_onnx, from_checkpoint, strict=True):
        assert onnx_line["source"] == checkpoint_line["source"]
        np.testing.assert_allclose(
            list(onnx_line["probabilities"].values()),
            list(checkpoint_line["probabilities"].values()),
            atol=1e-5,
        )


@pytest.mark.parametrize("model_format", ["onnx", "torchscript"])
def test_deep_net_exports_with_parity(model_format):
    net = DeepConcatNet(in_channels=3).eval()
    example = torch.from_numpy(random_inputs(8, channels=3))
    reference = TorchClassifier(net, EMOTIONS, 3)
    metadata = model_metadata(reference)
    data = (
        onnx_bytes(net, example, metadata)
        if model_format == "onnx"
        else torchscript_bytes(net, example, metadata)
    )
    model = classifier_from_bytes(data, model_format, f"deep.{model_format}")
    assert model.in_channels == 3
    assert parity_gap(reference, model, random_inputs(4, channels=3)) < PARITY


def test_an_opset_the_exporter_cannot_write_is_one_line_and_writes_nothing(
    trained_checkpoint, tmp_path
):
    # torch's exporter would log the failed conversion and write its own opset 18
    output = tmp_path / "model.onnx"
    result = run_module(
        "fer_lightning.export",
        f"ckpt_path={trained_checkpoint}",
        "opset=40",
        f"output={output}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: opset=40 is newer than the installed onnx {onnx.__version__} knows; "
        f"use 17..{onnx.defs.onnx_opset_version()}"
    ]
    assert not output.exists()


def test_an_opset_the_exporter_falls_back_from_is_refused(monkeypatch):
    # were onnx to know an opset the exporter cannot write, the written one is checked
    net = BaselineCNN().eval()
    example = torch.from_numpy(random_inputs(2))
    monkeypatch.setattr(onnx.defs, "onnx_opset_version", lambda: 99)
    with pytest.raises(FERUserError, match=r"opset=40: torch's ONNX exporter cannot write it"):
        onnx_bytes(net, example, "{}", opset=40)


def test_failed_parity_exits_non_zero_and_writes_nothing(trained_checkpoint, tmp_path):
    output = tmp_path / "model.onnx"
    result = run_module(
        "fer_lightning.export",
        f"ckpt_path={trained_checkpoint}",
        "tolerance=0",  # no logit difference is below 0
        f"output={output}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and "failed the parity check: max |delta logit| =" in line
    assert not output.exists()
    assert not list(tmp_path.glob(".tmp-*"))


def test_output_suffix_must_name_the_format(trained_checkpoint, tmp_path):
    cfg = compose_config(
        "export",
        tmp_path,
        [
            f"ckpt_path={trained_checkpoint}",
            "format=torchscript",
            f"output={tmp_path / 'model.onnx'}",
        ],
    )
    with pytest.raises(FERUserError, match=r"must end in \.pt for format=torchscript"):
        export(cfg)


def test_foreign_or_broken_model_files_are_one_line_errors(exported, tmp_path):
    stripped = onnx.load(exported["onnx"])
    del stripped.metadata_props[:]
    foreign = tmp_path / "foreign.onnx"
    onnx.save(stripped, foreign)
    with pytest.raises(FERUserError, match="has no fer-lightning metadata"):
        load_model(foreign)
    for suffix, kind in ((".onnx", "ONNX"), (".pt", "TorchScript")):
        broken = tmp_path / f"broken{suffix}"
        broken.write_bytes(b"\x00 not a model")
        with pytest.raises(FERUserError, match=f"not a readable {kind} model"):
            load_model(broken)
    keras = tmp_path / "model.h5"
    keras.write_bytes(b"")
    with pytest.raises(FERUserError, match=r"unknown model file type '\.h5'"):
        load_model(keras)


@pytest.mark.parametrize("model_format", ["onnx", "torchscript"])
def test_exported_models_given_where_a_checkpoint_is_needed_point_to_predict(
    exported, tmp_path, model_format
):
    """evaluate.py, explore and export need the Lightning checkpoint; an exported file there
    says so (not torch's unpickling advice to load it with weights_only=False)."""
    path = exported[model_format]
    message = rf"{re.escape(str(path))}: an exported model \(ONNX or TorchScript\), where a"
    with pytest.raises(FERUserError, match=message):
        read_checkpoint(path)
    with pytest.raises(FERUserError, match=message):
        evaluate(compose_config("evaluate", tmp_path / "eval", [f"ckpt_path={path}"]))


def test_a_checkpoint_named_code_is_no_torchscript_archive(trained_checkpoint, tmp_path):
    """torch.save names a file's zip entries after it (code.ckpt -> code/data.pkl): only a
    code/ folder inside the archive marks TorchScript."""
    torch.save(torch.load(trained_checkpoint, weights_only=True), tmp_path / "code.ckpt")
    assert read_checkpoint(tmp_path / "code.ckpt").keys() >= {"state_dict", "fer_run_config"}


def test_an_onnx_graph_unlike_its_metadata_is_one_line_at_load_time(exported, tmp_path):
    """Ours with in_channels edited, and a foreign graph whose metadata looks like ours, are
    refused when loaded, through predict's command line too, not inside onnxruntime."""
    edited = onnx.load(exported["onnx"])
    [entry] = [entry for entry in edited.metadata_props if entry.key == METADATA_KEY]
    metadata = json.loads(entry.value)
    entry.value = json.dumps({**metadata, "in_channels": 3})
    edited_path = tmp_path / "edited.onnx"
    onnx.save(edited, edited_path)
    with pytest.raises(FERUserError, match=r"edited\.onnx: its graph takes tensor\(float\) "):
        load_model(edited_path)

    inputs = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 1, 32, 32])
    outputs = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 1, 32, 32])
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])], "foreign", [inputs], [outputs]
    )
    foreign = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)])
    foreign.ir_version = edited.ir_version
    foreign.metadata_props.add(key=METADATA_KEY, value=json.dumps(metadata))
    foreign_path = tmp_path / "foreign.onnx"
    onnx.save(foreign, foreign_path)
    photo = tmp_path / "face.png"
    cv2.imwrite(str(photo), np.full((48, 48), 90, np.uint8))
    result = run_module(
        "fer_lightning.predict",
        str(photo),
        f"ckpt_path={foreign_path}",
        "detect=false",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: {foreign_path}: its graph takes tensor(float) ['N', 1, 32, 32], but its "
        "metadata says float (N, 1, 48, 48); export models with fer-lightning export"
    ]


def test_an_export_output_that_cannot_be_written_is_one_line(trained_checkpoint, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    output = blocker / "model.onnx"
    result = run_module(
        "fer_lightning.export",
        f"ckpt_path={trained_checkpoint}",
        f"output={output}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: output={output}: cannot write it ({blocker} is a file, not a folder)"
    ]
    # nor may it replace the checkpoint it exports
    copy = tmp_path / "weights.pt"
    copy.write_bytes(trained_checkpoint.read_bytes())
    cfg = compose_config(
        "export", tmp_path, [f"ckpt_path={copy}", "format=torchscript", f"output={copy}"]
    )
    with pytest.raises(FERUserError, match=r"weights\.pt is the checkpoint being exported"):
        export(cfg)
    assert copy.read_bytes() == trained_checkpoint.read_bytes()
