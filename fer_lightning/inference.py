"""One way to load any trained classifier (Lightning checkpoint, shipped ``pretrained:<name>``
weights, ONNX or TorchScript file) and to classify 48x48 gray faces with exactly the
preprocessing that training evaluates with.

``load_classifier(ckpt_path)`` loads any of these files, or an ensemble of checkpoints (predict
uses it), and ``classifier_from_checkpoint`` wraps an already-read checkpoint (export, explore);
both return a ``Classifier`` with ``class_names``, ``in_channels``, ``tta`` and ``predict_proba``.
ONNX models run on onnxruntime (torch does no inference there); their class names, input
channels and TTA mode travel in the file's metadata, as they do in a TorchScript file's extra
files.
"""

from __future__ import annotations

import io
import json
import os
import warnings
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import torch
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors
from torch import nn

from fer_lightning import pretrained
from fer_lightning.checkpoint import (
    has_compiled_code,
    read_checkpoint,
    stored_tta,
    system_from_checkpoint,
)
from fer_lightning.classes import IMAGE_SIZE
from fer_lightning.data.transforms import check_in_channels, normalize
from fer_lightning.ensemble import (
    MeanEnsemble,
    checkpoint_paths,
    describe_members,
    ensemble_from_checkpoints,
)
from fer_lightning.errors import FERUserError, first_line
from fer_lightning.tta import check_tta_mode, tta_probabilities

CHECKPOINT_SUFFIX = ".ckpt"
# exported formats and the file suffix each one is written with and recognised by
MODEL_SUFFIXES: dict[str, str] = {"onnx": ".onnx", "torchscript": ".pt"}
# where an exported file keeps its class names and input channels: an ONNX metadata_props key,
# and the name of a TorchScript extra file
METADATA_KEY = "fer_lightning"
# onnxruntime's load errors derive from Exception directly, not from RuntimeError
_ONNX_LOAD_ERRORS = (
    ort_errors.Fail,
    ort_errors.InvalidArgument,
    ort_errors.InvalidGraph,
    ort_errors.InvalidProtobuf,
    ort_errors.NotImplemented,
)


class Classifier(ABC):
    """A trained FER classifier: gray uint8 faces in, class probabilities out (averaged over the
    views of test-time augmentation ``tta``, as evaluate.py averages them)."""

    def __init__(self, class_names: Sequence[str], in_channels: int, tta: str = "none") -> None:
        self.class_names = [str(name) for name in class_names]
        self.in_channels = check_in_channels(int(in_channels))
        self.tta = check_tta_mode(tta)

    @abstractmethod
    def logits(self, inputs: np.ndarray) -> np.ndarray:
        """Logits (N, K) of preprocessed float32 inputs (N, in_channels, 48, 48)."""

    def preprocess(self, faces: np.ndarray) -> np.ndarray:
        """uint8 faces (N, 48, 48) -> float32 (N, in_channels, 48, 48) through training's
        normalisation (scale to [-1, 1], gray replicated to 3 channels where the net wants them)."""
        faces = np.asarray(faces)
        if faces.dtype != np.uint8 or faces.ndim != 3 or faces.shape[1:] != (IMAGE_SIZE,) * 2:
            raise ValueError(
                f"faces must be uint8 (N, {IMAGE_SIZE}, {IMAGE_SIZE}), "
                f"got {faces.dtype} {faces.shape}"
            )
        batch = torch.from_numpy(np.ascontiguousarray(faces)).unsqueeze(1)
        return normalize(batch, self.in_channels).numpy()

    def describe(self) -> str:
        """The test-time augmentation it averages over, for logs."""
        return f"tta={self.tta}"

    def predict_proba(self, faces: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Class probabilities (N, K) for uint8 faces (N, 48, 48), ``batch_size`` at a time."""
        batches = [
            self._probabilities(self.preprocess(faces[start : start + batch_size]))
            for start in range(0, len(faces), batch_size)
        ]
        if not batches:
            return np.zeros((0, len(self.class_names)), dtype=np.float32)
        return np.concatenate(batches)

    def _probabilities(self, inputs: np.ndarray) -> np.ndarray:
        """Mean softmax over the TTA views of preprocessed ``inputs``."""

        def forward(batch: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(self.logits(batch.numpy()))

        return tta_probabilities(forward, torch.from_numpy(inputs), self.tta).numpy()


class TorchClassifier(Classifier):
    """A PyTorch module returning logits (a checkpoint's net or a TorchScript module), on CPU."""

    def __init__(
        self, net: nn.Module, class_names: Sequence[str], in_channels: int, tta: str = "none"
    ) -> None:
        super().__init__(class_names, in_channels, tta)
        self.net = net.eval()

    def logits(self, inputs: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.net(torch.from_numpy(inputs)).numpy()


class EnsembleClassifier(TorchClassifier):
    """Several checkpoints' nets as one ``MeanEnsemble``: each member applies its own TTA mode,
    so the classifier's own ``tta`` is ``none``."""

    def __init__(self, ensemble: MeanEnsemble, class_names: Sequence[str], paths: Sequence[str]):
        super().__init__(ensemble, class_names, ensemble.in_channels)
        self.paths = list(paths)

    def describe(self) -> str:
        return f"the mean of {describe_members(self.paths, self.net.tta_modes)}"


class OnnxClassifier(Classifier):
    """An exported ONNX model run by onnxruntime on the CPU."""

    def __init__(
        self,
        session: onnxruntime.InferenceSession,
        class_names: Sequence[str],
        in_channels: int,
        tta: str = "none",
    ) -> None:
        super().__init__(class_names, in_channels, tta)
        self.session = session
        self.input_name = session.get_inputs()[0].name

    def logits(self, inputs: np.ndarray) -> np.ndarray:
        feed = {self.input_name: np.ascontiguousarray(inputs, dtype=np.float32)}
        return self.session.run(None, feed)[0]


def load_classifier(
    ckpt_path: str | os.PathLike | Sequence[str], tta: str | None = None
) -> Classifier:
    """The classifier behind ``ckpt_path``: a Lightning ``.ckpt``, an exported ``.onnx`` or
    TorchScript ``.pt`` file, ``pretrained:<name>``, or a list of checkpoints (an ensemble).
    ``tta=None`` keeps the TTA mode each file carries (the one shipped weights were chosen with;
    ``none`` for a training checkpoint)."""
    paths = checkpoint_paths(ckpt_path)
    if len(paths) > 1:
        ensemble, class_names = ensemble_from_checkpoints(paths, tta)
        return EnsembleClassifier(ensemble, class_names, paths)
    classifier = _load_classifier(paths[0])
    if tta is not None:
        classifier.tta = check_tta_mode(tta)
    return classifier


def _load_classifier(ckpt_path: str | os.PathLike) -> Classifier:
    text = str(ckpt_path)
    if pretrained.is_shipped(text):  # shipped weights are slimmed Lightning checkpoints
        return classifier_from_checkpoint(read_checkpoint(text), text)
    path = Path(text).expanduser()
    if not path.is_file():
        raise FERUserError(f"model file {path} does not exist")
    suffix = path.suffix.lower()
    # a .pt is TorchScript when exported here, a slimmed checkpoint when shipped as pretrained
    if suffix == CHECKPOINT_SUFFIX or (suffix == ".pt" and not _is_torchscript(path)):
        return classifier_from_checkpoint(read_checkpoint(path), path)
    for model_format, model_suffix in MODEL_SUFFIXES.items():
        if suffix == model_suffix:
            return classifier_from_bytes(path.read_bytes(), model_format, str(path))
    raise FERUserError(
        f"{path}: unknown model file type {suffix!r}; expected a Lightning {CHECKPOINT_SUFFIX}, "
        f"an exported {' or '.join(MODEL_SUFFIXES.values())} file, or pretrained:<name>"
    )


def classifier_from_checkpoint(
    checkpoint: dict[str, Any], path: str | os.PathLike
) -> TorchClassifier:
    """The net of a loaded Lightning checkpoint with its class names and TTA mode, in eval mode."""
    system = system_from_checkpoint(checkpoint, path)
    return TorchClassifier(
        system.net, system.hparams.class_names, system.net.in_channels, stored_tta(checkpoint)
    )


def classifier_from_bytes(data: bytes, model_format: str, origin: str) -> Classifier:
    """An exported model (``onnx`` or ``torchscript``) from its file contents; ``origin`` names
    the file in error messages."""
    if model_format == "onnx":
        try:
            session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
        except _ONNX_LOAD_ERRORS as err:
            raise FERUserError(f"{origin}: not a readable ONNX model ({first_line(err)})") from err
        metadata = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        return OnnxClassifier(session, *parse_metadata(metadata, origin))
    extra_files = {METADATA_KEY: ""}
    try:
        with warnings.catch_warnings():
            # TorchScript is deprecated in torch 2.15 but still the format users ask for
            warnings.filterwarnings("ignore", r"`torch\.jit\.load` is deprecated", FutureWarning)
            module = torch.jit.load(io.BytesIO(data), map_location="cpu", _extra_files=extra_files)
    except RuntimeError as err:
        raise FERUserError(
            f"{origin}: not a readable TorchScript model ({first_line(err)})"
        ) from err
    metadata = extra_files[METADATA_KEY]
    text = metadata.decode() if isinstance(metadata, bytes) else metadata
    return TorchClassifier(module, *parse_metadata(text or None, origin))


def model_metadata(classifier: Classifier) -> str:
    """The JSON stored in an exported model: what predict needs besides the weights."""
    return json.dumps(
        {
            "class_names": classifier.class_names,
            "in_channels": classifier.in_channels,
            "tta": classifier.tta,
        }
    )


def parse_metadata(text: str | None, origin: str) -> tuple[list[str], int, str]:
    """(class_names, in_channels, tta) from ``model_metadata``'s JSON (files exported before the
    TTA mode was stored mean ``none``); missing or broken metadata means the file was not written
    by ``fer_lightning.export``."""
    try:
        metadata = json.loads(text) if text else None
        class_names = [str(name) for name in metadata["class_names"]]
        in_channels = int(metadata["in_channels"])
        tta = str(metadata.get("tta", "none"))
    except (TypeError, KeyError, ValueError) as err:
        raise FERUserError(
            f"{origin}: has no fer-lightning metadata '{METADATA_KEY}' (class names, input "
            "channels); export models with python -m fer_lightning.export"
        ) from err
    return class_names, in_channels, tta


def _is_torchscript(path: Path) -> bool:
    """True for a TorchScript archive, and for a file that is no zip at all (no torch file: the
    TorchScript loader explains)."""
    return not zipfile.is_zipfile(path) or has_compiled_code(path)
