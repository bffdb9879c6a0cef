"""The evaluation task behind evaluate.py: a checkpoint alone, one split, a per-class report."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from fer_lightning.builders import build_trainer
from fer_lightning.checkpoint import (
    datamodule_from_checkpoint,
    read_checkpoint,
    stored_tta,
    system_from_checkpoint,
)
from fer_lightning.data import SPLIT_NAMES
from fer_lightning.errors import FERUserError
from fer_lightning.report import publish_report
from fer_lightning.tta import check_tta_mode

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict:
    """Evaluate `cfg.ckpt_path` on `cfg.split`, print the report and write it into the run dir."""
    if cfg.split not in SPLIT_NAMES:
        raise FERUserError(f"split must be one of {', '.join(SPLIT_NAMES)} (got {cfg.split!r})")
    checkpoint = read_checkpoint(cfg.ckpt_path)
    datamodule = datamodule_from_checkpoint(checkpoint, cfg.data)
    system = system_from_checkpoint(checkpoint, cfg.ckpt_path)
    tta = stored_tta(checkpoint) if cfg.tta is None else check_tta_mode(cfg.tta)
    if cfg.tta is None and tta != "none":
        log.info("tta=%s: the mode shipped with these weights (tta=none turns it off)", tta)
    system.tta = tta
    trainer = build_trainer(cfg.trainer, callbacks=[], loggers=False)
    trainer.test(system, dataloaders=datamodule.dataloader(cfg.split), verbose=False)

    extra = {
        "split": cfg.split,
        "tta": tta,
        "ckpt_path": str(Path(cfg.ckpt_path).expanduser()),
    }
    report = publish_report(
        system.test_confusion.cpu().numpy(),
        datamodule.class_names,
        cfg.paths.output_dir,
        extra,
        title=f"{cfg.ckpt_path} on split '{cfg.split}' (tta={tta}):",
    )
    log.info("Report written to %s", cfg.paths.output_dir)
    return report
