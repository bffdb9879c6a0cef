"""The one loader behind every task and the Python API: ``load_model(ckpt_path)`` takes a Lightning
``.ckpt``, shipped ``pretrained:<name>`` weights, an exported ``.onnx`` or TorchScript ``.pt``
file, or a list of checkpoints (an ensemble), and returns a ``LoadedModel``: the classifier that
predict and the API run, and, for checkpoints, what evaluate, explore, distill and export build
on (the stored run config, the training run's datamodule, a system a Trainer can run).
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from pytorch_lightning import LightningDataModule, LightningModule

from fer_lightning.checkpoint import (
    datamodule_from_checkpoint,
    has_compiled_code,
    is_pretrained,
    read_checkpoint,
    require_stored_csv,
    resolve_checkpoint_path,
    run_config,
    stored_tta,
    system_from_checkpoint,
)
from fer_lightning.ensemble import MeanEnsemble, checkpoint_paths, shared_class_names
from fer_lightning.errors import FERUserError, check_whole_number, first_line
from fer_lightning.inference import (
    CHECKPOINT_SUFFIX,
    MODEL_SUFFIXES,
    Classifier,
    EnsembleClassifier,
    TorchClassifier,
    classifier_from_bytes,
)
from fer_lightning.system import FERSystem
from fer_lightning.tta import check_tta_mode

ModelPath = str | os.PathLike
# what names a model: one file or pretrained:<name>, or the members of an ensemble
ModelSource = ModelPath | Sequence[ModelPath]


@dataclass
class LoadedModel:
    """A loaded model: its ``classifier`` and, for Lightning checkpoints (one per ensemble
    member, in order), the checkpoints read and the systems rebuilt from them."""

    names: list[str]  # as given: paths or pretrained:<name>
    classifier: Classifier
    checkpoints: list[dict[str, Any]]  # empty for an exported (ONNX or TorchScript) model
    systems: list[LightningModule]  # each checkpoint's system, in eval mode
    tta_modes: list[str]  # each checkpoint's test-time augmentation

    @property
    def class_names(self) -> list[str]:
        return self.classifier.class_names

    @property
    def is_ensemble(self) -> bool:
        return len(self.names) > 1

    @property
    def file(self) -> Path:
        """The (first) model file on disk; shipped weights resolved to theirs."""
        return resolve_checkpoint_path(self.names[0])

    @property
    def is_pretrained(self) -> bool:
        """Whether the (first) model is shipped weights, which have no training run folder."""
        return is_pretrained(self.names[0])

    def checkpoint(self) -> dict[str, Any]:
        """The (first) Lightning checkpoint: the one whose run config and data count."""
        if not self.checkpoints:  # only with load_model(exported=True)
            raise FERUserError(f"{self.names[0]}: an exported model, where a checkpoint is needed")
        return self.checkpoints[0]

    def run_config(self) -> DictConfig:
        """The (first) checkpoint's training run config."""
        return run_config(self.checkpoint())

    def require_stored_csv(self, csv_path: str | None, option: str) -> None:
        """Fail in one line when the training csv is not here and ``option`` names none."""
        require_stored_csv(self.names[0], self.checkpoint(), csv_path, option)

    def datamodule(self, overrides: Mapping[str, Any]) -> LightningDataModule:
        """The (first) checkpoint's training datamodule, loaded, with non-null ``overrides``."""
        return datamodule_from_checkpoint(self.checkpoint(), overrides)

    def mean_ensemble(self) -> MeanEnsemble:
        """The checkpoints' nets (one or more) as a ``MeanEnsemble`` of gray inputs, each with
        its TTA mode."""
        if isinstance(self.classifier.net, MeanEnsemble):
            return self.classifier.net
        return MeanEnsemble([system.net for system in self.systems], self.tta_modes)

    def system(self) -> LightningModule:
        """A system a Trainer can test or predict with: a checkpoint's own (its TTA set), or a
        ``FERSystem`` around an ensemble."""
        if not self.is_ensemble:
            self.checkpoint()
            return self.systems[0]
        return FERSystem(net=self.mean_ensemble(), class_names=self.class_names).eval()


def load_model(
    ckpt_path: ModelSource,
    *,
    tta: str | None = None,
    device: str = "cpu",
    threads: int | None = None,
    exported: bool = True,
    ensemble: bool = True,
) -> LoadedModel:
    """Load the model behind ``ckpt_path``: a Lightning ``.ckpt``, ``pretrained:<name>``, an
    exported ``.onnx`` or TorchScript ``.pt`` file, or a list of checkpoints (an ensemble).

    ``tta=None`` keeps the TTA mode each file carries (the one shipped weights were chosen with;
    ``none`` for a training checkpoint). The classifier runs on ``device`` (ONNX sessions with
    ``threads`` intra-op threads). Tasks that need a training run's config pass
    ``exported=False`` (an exported file is then refused in one line), those that take one
    model ``ensemble=False`` (a list is refused). Every mistake is a one-line ``FERUserError``.
    """
    if tta is not None:
        check_tta_mode(tta)
    if threads is not None:
        check_whole_number("threads", threads, 1)
    torch_device = check_device(device)
    if isinstance(ckpt_path, int | float) and not isinstance(ckpt_path, bool):
        ckpt_path = str(ckpt_path)  # Hydra reads a file named 123 as a number
    if not ensemble and not isinstance(ckpt_path, ModelPath):
        resolve_checkpoint_path(ckpt_path)  # a list: refused in one line
    names = checkpoint_paths(ckpt_path)
    if len(names) == 1 and exported:
        model = _exported_model(names[0], tta, torch_device, threads)
        if model is not None:
            return model
    checkpoints = [read_checkpoint(name) for name in names]
    systems = [
        system_from_checkpoint(checkpoint, name)
        for checkpoint, name in zip(checkpoints, names, strict=True)
    ]
    modes = [stored_tta(checkpoint) if tta is None else tta for checkpoint in checkpoints]
    class_names = shared_class_names(names, systems)
    if len(names) > 1:
        ensemble_net = MeanEnsemble([system.net for system in systems], modes)
        classifier = EnsembleClassifier(ensemble_net, class_names, names, torch_device)
    else:
        systems[0].tta = modes[0]  # as evaluate.py runs it
        net = systems[0].net
        classifier = TorchClassifier(net, class_names, net.in_channels, modes[0], torch_device)
    return LoadedModel(names, classifier, checkpoints, systems, modes)


def _exported_model(
    name: str, tta: str | None, device: torch.device, threads: int | None
) -> LoadedModel | None:
    """The model of an exported file (``.onnx``, or a ``.pt`` holding TorchScript); None for a
    checkpoint (``.ckpt``, ``pretrained:<name>``, or a ``.pt`` that is a slimmed checkpoint)."""
    if is_pretrained(name):
        return None
    path = Path(name).expanduser()
    if not path.is_file():
        raise FERUserError(f"model file {path} does not exist")
    suffix = path.suffix.lower()
    # a .pt is TorchScript when exported here, a slimmed checkpoint when shipped as pretrained
    if suffix == CHECKPOINT_SUFFIX or (suffix == ".pt" and not _is_torchscript(path)):
        return None
    for model_format, model_suffix in MODEL_SUFFIXES.items():
        if suffix == model_suffix:
            classifier = classifier_from_bytes(
                path.read_bytes(), model_format, str(path), device, threads
            )
            if tta is not None:
                classifier.tta = tta
            return LoadedModel([name], classifier, [], [], [classifier.tta])
    raise FERUserError(
        f"{path}: unknown model file type {suffix!r}; expected a Lightning {CHECKPOINT_SUFFIX}, "
        f"an exported {' or '.join(MODEL_SUFFIXES.values())} file, or pretrained:<name>"
    )


def check_device(device: str) -> torch.device:
    """``device`` as a torch device this machine has; anything else is a one-line error."""
    try:
        torch_device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise FERUserError(f"device={device!r}: not a device ({first_line(err)})") from err
    if torch_device.type == "cuda" and (torch_device.index or 0) >= torch.cuda.device_count():
        raise FERUserError(
            f"device={device}: torch sees {torch.cuda.device_count()} CUDA GPU(s) here; "
            "use device=cpu"
        )
    if torch_device.type not in ("cpu", "cuda"):
        raise FERUserError(f"device={device}: give cpu, cuda or cuda:<index>")
    return torch_device


def _is_torchscript(path: Path) -> bool:
    """True for a TorchScript archive, and for a file that is no zip at all (no torch file: the
    TorchScript loader explains)."""
    return not zipfile.is_zipfile(path) or has_compiled_code(path)
