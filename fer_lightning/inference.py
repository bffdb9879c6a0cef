"""Classifiers of 48x48 gray faces, with exactly the preprocessing that training evaluates with:
a checkpoint's net, an ensemble of them, or an exported ONNX or TorchScript model. Each has
``class_names``, ``in_channels``, ``tta`` and ``predict_proba``; ``fer_lightning.loader`` builds
them from any model file.

ONNX models run on onnxruntime (torch does no inference there); their class names, input
channels and TTA mode travel in the file's metadata, as they do in a TorchScript file's extra
files.
"""

from __future__ import annotations

import io
import json
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
import onnxruntime
import torch
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors
from torch import nn

from fer_lightning.classes import IMAGE_SIZE
from fer_lightning.data.transforms import check_in_channels, normalize
from fer_lightning.ensemble import MeanEnsemble, describe_members
from fer_lightning.errors import FERUserError, first_line
from fer_lightning.system import prepare_for_inference
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
    """A PyTorch module returning logits (a checkpoint's net or a TorchScript module), run on
    ``device``."""

    def __init__(
        self,
        net: nn.Module,
        class_names: Sequence[str],
        in_channels: int,
        tta: str = "none",
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(class_names, in_channels, tta)
        self.device = torch.device(device)
        net = net.eval().to(self.device)
        scripted = isinstance(net, torch.jit.ScriptModule)
        self.net = net if scripted else prepare_for_inference(net, self.device)

    def logits(self, inputs: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.net(torch.from_numpy(inputs).to(self.device)).float().cpu().numpy()


class EnsembleClassifier(TorchClassifier):
    """Several checkpoints' nets as one ``MeanEnsemble``: each member applies its own TTA mode,
    so the classifier's own ``tta`` is ``none``."""

    def __init__(
        self,
        ensemble: MeanEnsemble,
        class_names: Sequence[str],
        paths: Sequence[str],
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(ensemble, class_names, ensemble.in_channels, device=device)
        self.paths = list(paths)

    def describe(self) -> str:
        return f"the mean of {describe_members(self.paths, self.net.tta_modes)}"


class OnnxClassifier(Classifier):
    """An exported ONNX model run by onnxruntime (on the device its session was made for)."""

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


def classifier_from_bytes(
    data: bytes,
    model_format: str,
    origin: str,
    device: str | torch.device = "cpu",
    threads: int | None = None,
) -> Classifier:
    """An exported model (``onnx`` or ``torchscript``) from its file contents, run on ``device``
    (an ONNX session with ``threads`` intra-op threads; None = onnxruntime's default); ``origin``
    names the file in error messages."""
    if model_format == "onnx":
        options = onnxruntime.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        providers = onnx_providers(torch.device(device))
        try:
            session = onnxruntime.InferenceSession(data, sess_options=options, providers=providers)
        except _ONNX_LOAD_ERRORS as err:
            raise FERUserError(f"{origin}: not a readable ONNX model ({first_line(err)})") from err
        metadata = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        class_names, in_channels, tta = parse_metadata(metadata, origin)
        check_onnx_signature(session, len(class_names), in_channels, origin)
        return OnnxClassifier(session, class_names, in_channels, tta)
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
    return TorchClassifier(module, *parse_metadata(text or None, origin), device=device)


def onnx_providers(device: torch.device) -> list[str | tuple[str, dict[str, int]]]:
    """The onnxruntime execution providers that run a model on ``device``; a device this
    onnxruntime cannot use is a one-line error rather than a silent fallback to the CPU."""
    available = onnxruntime.get_available_providers()
    if device.type == "cpu":
        return ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in available:
        return [("CUDAExecutionProvider", {"device_id": device.index or 0})]
    raise FERUserError(
        f"device={device}: this onnxruntime cannot run ONNX models there (it has "
        f"{', '.join(available)}); use device=cpu, or install the onnxruntime build for it"
    )


def check_onnx_signature(
    session: onnxruntime.InferenceSession, num_classes: int, in_channels: int, origin: str
) -> None:
    """The graph takes one float batch (N, in_channels, 48, 48) and gives (N, num_classes), as
    its metadata says: a foreign file with metadata like ours, or ours with the metadata edited,
    fails here in one line rather than inside onnxruntime on the first face."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    expected = [in_channels, IMAGE_SIZE, IMAGE_SIZE]
    if (
        len(inputs) != 1
        or inputs[0].type != "tensor(float)"
        or len(inputs[0].shape) != 4
        or list(inputs[0].shape[1:]) != expected
    ):
        found = ", ".join(f"{node.type} {node.shape}" for node in inputs) or "no input"
        raise FERUserError(
            f"{origin}: its graph takes {found}, but its metadata says float "
            f"(N, {', '.join(map(str, expected))}); export models with "
            "fer-lightning export"
        )
    classes = outputs[0].shape[-1] if outputs and outputs[0].shape else None
    if isinstance(classes, int) and classes != num_classes:
        raise FERUserError(
            f"{origin}: its graph gives {classes} class scores, but its metadata names "
            f"{num_classes} classes; export models with fer-lightning export"
        )


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
            "channels); export models with fer-lightning export"
        ) from err
    return class_names, in_channels, tta
