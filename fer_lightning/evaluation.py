"""The evaluation task behind evaluate.py: a checkpoint alone (or an ensemble of them), one split,
a per-class report."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from fer_lightning.builders import build_trainer, check_runs_test_batches
from fer_lightning.data import SPLIT_NAMES
from fer_lightning.ensemble import describe_members
from fer_lightning.errors import FERUserError
from fer_lightning.loader import load_model
from fer_lightning.report import publish_report

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict:
    """Evaluate `cfg.ckpt_path` on `cfg.split`, print the report and write it into the run dir.
    A list of checkpoints is evaluated as one ensemble, on the first one's data."""
    if cfg.split not in SPLIT_NAMES:
        raise FERUserError(f"split must be one of {', '.join(SPLIT_NAMES)} (got {cfg.split!r})")
    model = load_model(cfg.ckpt_path, tta=cfg.tta, exported=False)
    model.require_stored_csv(cfg.data.csv_path, "data.csv_path")
    system = model.system()
    paths = model.names
    if not model.is_ensemble:
        tta = model.tta_modes[0]
        if cfg.tta is None and tta != "none":
            log.info("tta=%s: the mode shipped with these weights (tta=none turns it off)", tta)
        data_overrides = cfg.data
        described = f"{paths[0]} on split '{cfg.split}' (tta={tta}):"
        extra = {"tta": tta, "ckpt_path": str(Path(paths[0]).expanduser())}
    else:
        data_overrides = {**cfg.data, "in_channels": system.net.in_channels}
        members = describe_members(paths, model.tta_modes)
        described = f"the mean of {members} on split '{cfg.split}':"
        extra = {
            "tta": model.tta_modes,
            "ckpt_path": [str(Path(path).expanduser()) for path in paths],
        }
    system.channels_last = cfg.get("channels_last")  # how to run it, not what it was trained with
    datamodule = model.datamodule(data_overrides)
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
