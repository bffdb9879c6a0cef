"""Ensembles: ``ckpt_path=[a,b,...]`` in evaluate.py, distill and predict averages the class
probabilities of several trained nets, each with its own input channels and test-time
augmentation (the mode it was shipped with, or ``tta=`` for all)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from omegaconf import ListConfig
from pytorch_lightning import LightningModule
from torch import nn

from fer_lightning.errors import FERUserError
from fer_lightning.tta import check_tta_mode, probabilities_as_logits, tta_probabilities


class MeanEnsemble(nn.Module):
    """Normalised gray faces (N, 1, 48, 48) in, the log of the members' mean class
    probabilities (N, K) out: usable wherever a net's logits are (argmax, softmax,
    cross-entropy)."""

    in_channels = 1  # gray; each member gets the faces replicated to the channels it takes

    def __init__(self, nets: Sequence[nn.Module], tta_modes: Sequence[str]) -> None:
        super().__init__()
        if not nets or len(nets) != len(tta_modes):
            raise ValueError(f"{len(nets)} nets need as many TTA modes, got {len(tta_modes)}")
        self.nets = nn.ModuleList(nets)
        self.tta_modes = [check_tta_mode(mode) for mode in tta_modes]
        self.num_classes = nets[0].num_classes

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        probabilities = [
            tta_probabilities(net, images.expand(-1, net.in_channels, -1, -1), mode)
            for net, mode in zip(self.nets, self.tta_modes, strict=True)
        ]
        return probabilities_as_logits(torch.stack(probabilities).mean(dim=0))


def checkpoint_paths(ckpt_path: str | os.PathLike | Sequence[str]) -> list[str]:
    """``ckpt_path`` as a list of paths: one checkpoint, or the members of an ensemble."""
    if isinstance(ckpt_path, str | os.PathLike):
        return [str(ckpt_path)]
    if not isinstance(ckpt_path, ListConfig | list | tuple) or not ckpt_path:
        raise FERUserError(
            f"ckpt_path={ckpt_path} must be a checkpoint or a list of them, e.g. "
            "ckpt_path=[pretrained:vgg,pretrained:deep]"
        )
    return [str(path) for path in ckpt_path]


def shared_class_names(paths: Sequence[str], systems: Sequence[LightningModule]) -> list[str]:
    """The class names all ``systems`` (loaded from ``paths``) share, in one order; members that
    differ fail in one line, since averaging their probabilities would mix classes."""
    class_names = list(systems[0].hparams.class_names)
    for path, system in zip(paths[1:], systems[1:], strict=True):
        if list(system.hparams.class_names) != class_names:
            raise FERUserError(
                f"{path}: its classes {list(system.hparams.class_names)} differ from "
                f"{paths[0]}'s {class_names}; an ensemble's members must share their classes"
            )
    return class_names


def describe_members(paths: Sequence[str], tta_modes: Sequence[str]) -> str:
    """``a (tta=flip) + b (tta=none)``: the members, for titles and logs."""
    return " + ".join(f"{path} (tta={mode})" for path, mode in zip(paths, tta_modes, strict=True))
