"""The evaluation task behind evaluate.py: a checkpoint alone (or an ensemble of them), one split,
a per-class report."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig
from pytorch_lightning import LightningModule

from fer_lightning.builders import build_trainer, check_runs_test_batches
from fer_lightning.checkpoint import (
    datamodule_from_checkpoint,
    read_checkpoint,
    require_stored_csv,
    stored_tta,
    system_from_checkpoint,
)
from fer_lightning.data import SPLIT_NAMES
from fer_lightning.ensemble import checkpoint_paths, describe_members, ensemble_from_loaded
from fer_lightning.errors import FERUserError
from fer_lightning.report import publish_report
from fer_lightning.system import FERSystem
from fer_lightning.tta import check_tta_mode

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict:
    """Evaluate `cfg.ckpt_path` on `cfg.split`, print the report and write it into the run dir.
    A list of checkpoints is evaluated as one ensemble, on the first one's data."""
    if cfg.split not in SPLIT_NAMES:
        raise FERUserError(f"split must be one of {', '.join(SPLIT_NAMES)} (got {cfg.split!r})")
    paths = checkpoint_paths(cfg.ckpt_path)
    checkpoints = [read_checkpoint(path) for path in paths]
    require_stored_csv(paths[0], checkpoints[0], cfg.data.csv_path, "data.csv_path")
    first = checkpoints[0]
    if len(paths) == 1:
        system, tta = _single(first, paths[0], cfg.tta)
        data_overrides = cfg.data
        described = f"{paths[0]} on split '{cfg.split}' (tta={tta}):"
        extra = {"tta": tta, "ckpt_path": str(Path(paths[0]).expanduser())}
    else:
        ensemble, class_names = ensemble_from_loaded(checkpoints, paths, cfg.tta)
        system = FERSystem(net=ensemble, class_names=class_names).eval()
        data_overrides = {**cfg.data, "in_channels": ensemble.in_channels}
        described = (
            f"the mean of {describe_members(paths, ensemble.tta_modes)} on split '{cfg.split}':"
        )
        extra = {
            "tta": ensemble.tta_modes,
            "ckpt_path": [str(Path(path).expanduser()) for path in paths],
        }
    datamodule = datamodule_from_checkpoint(first, data_overrides)
    trainer = build_trainer(cfg.trainer, callbacks=[], loggers=False)
    check_runs_test_batches(trainer)
    trainer.test(system, dataloaders=datamodule.dataloader(cfg.split), verbose=False)

    report = publish_report(
        system.test_confusion.cpu().numpy(),
        datamodule.class_names,
        cfg.paths.output_dir,
        {"split": cfg.split, **extra},
        title=described,
    )
    log.info("Report written to %s", cfg.paths.output_dir)
    return report


def _single(checkpoint: dict, path: str, tta: str | None) -> tuple[LightningModule, str]:
    """The checkpoint's system, set to its shipped TTA mode or to ``tta``, and that mode."""
    system = system_from_checkpoint(checkpoint, path)
    system.tta = stored_tta(checkpoint) if tta is None else check_tta_mode(tta)
    if tta is None and system.tta != "none":
        log.info("tta=%s: the mode shipped with these weights (tta=none turns it off)", system.tta)
    return system, system.tta
