"""Turn the Hydra config groups into Lightning objects (trainer, callbacks, loggers)."""

from __future__ import annotations

from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning import Callback, Trainer
from pytorch_lightning.loggers import Logger

from fer_lightning.errors import FERUserError


def resolve_gpus_alias(trainer_cfg: DictConfig) -> DictConfig:
    """Translate the Lightning 1.x `gpus=N` flag into `accelerator`/`devices`.

    `gpus=0` means CPU; `gpus=N>0` needs N visible CUDA devices and otherwise fails at once,
    in one line, as does `accelerator=gpu` (the `trainer=gpu` preset) without a GPU.
    """
    resolved = OmegaConf.to_container(trainer_cfg, resolve=True)
    gpus = resolved.pop("gpus", None)
    if gpus is None:
        accelerator = resolved.get("accelerator")
        # Lightning's "gpu" is CUDA or Apple's MPS; "cuda" only CUDA
        mps = accelerator == "gpu" and torch.backends.mps.is_available()
        if accelerator in ("gpu", "cuda") and _visible_gpus() == 0 and not mps:
            raise FERUserError(
                f"trainer.accelerator={resolved['accelerator']} (e.g. trainer=gpu) but no GPU "
                "is available on this machine (torch.cuda.is_available() is False); drop "
                "trainer=gpu to train on the CPU"
            )
        return OmegaConf.create(resolved)
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
        raise FERUserError(f"trainer.gpus must be a whole number >= 0 (got {gpus!r})")
    if gpus == 0:
        resolved.update(accelerator="cpu", devices=1)
        return OmegaConf.create(resolved)
    available = _visible_gpus()
    if available == 0:
        raise FERUserError(
            f"trainer.gpus={gpus} asks for a GPU but no GPU is available on this machine "
            "(torch.cuda.is_available() is False); use trainer.gpus=0 or leave it unset "
            "to train on the CPU"
        )
    if gpus > available:
        raise FERUserError(
            f"trainer.gpus={gpus} asks for {gpus} GPUs but only {available} are available"
        )
    resolved.update(accelerator="gpu", devices=gpus)
    return OmegaConf.create(resolved)


def _visible_gpus() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def instantiate_group(group_cfg: DictConfig | None) -> list[Any]:
    """Instantiate each entry of a config group mapping (callbacks, loggers), skipping nulls."""
    if not group_cfg:
        return []
    return [hydra.utils.instantiate(entry) for entry in group_cfg.values() if entry is not None]


def build_trainer(
    trainer_cfg: DictConfig, callbacks: list[Callback], loggers: list[Logger] | bool
) -> Trainer:
    """The Lightning Trainer from `trainer/*.yaml`, with the `gpus` alias resolved."""
    return hydra.utils.instantiate(
        resolve_gpus_alias(trainer_cfg), callbacks=callbacks, logger=loggers
    )


def check_runs_test_batches(trainer: Trainer, hint: str = "") -> None:
    """Refuse, before any work, a test limited to no batch: it would leave nothing to report."""
    if trainer.limit_test_batches == 0:
        raise FERUserError(
            f"trainer.limit_test_batches={trainer.limit_test_batches} runs no test batch, so "
            f"there would be no report{hint}"
        )
