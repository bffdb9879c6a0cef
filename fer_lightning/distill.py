"""Teacher targets for knowledge distillation: the class probabilities that trained nets (often
the shipped ensemble) give every training image, written once and then used by train.py:

    python -m fer_lightning.distill ckpt_path=[pretrained:vgg,pretrained:deep] tta=flip
    python train.py experiment=vgg_fer2013 data.teacher_targets=<run dir>/teacher_targets.pt

Only the training split is labelled: PublicTest stays for selection, PrivateTest for the report.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from fer_lightning.builders import build_trainer
from fer_lightning.checkpoint import datamodule_from_checkpoint, read_checkpoint, require_stored_csv
from fer_lightning.cli import exit_on_user_error
from fer_lightning.config import CONF_DIR
from fer_lightning.data.teacher import teacher_record
from fer_lightning.ensemble import checkpoint_paths, describe_members, ensemble_from_loaded
from fer_lightning.files import write_atomically
from fer_lightning.system import FERSystem

log = logging.getLogger(__name__)

OUTPUT_NAME = "teacher_targets.pt"


def write_teacher_targets(cfg: DictConfig) -> Path:
    """Label the training split of the first teacher's data with the teachers' mean class
    probabilities (each teacher with its TTA) and write them, atomically, to ``cfg.output``."""
    paths = checkpoint_paths(cfg.ckpt_path)
    checkpoints = [read_checkpoint(path) for path in paths]
    require_stored_csv(paths[0], checkpoints[0], cfg.data.csv_path, "data.csv_path")
    ensemble, class_names = ensemble_from_loaded(checkpoints, paths, cfg.tta)
    datamodule = datamodule_from_checkpoint(
        checkpoints[0], {**cfg.data, "in_channels": ensemble.in_channels}
    )
    system = FERSystem(net=ensemble, class_names=class_names).eval()
    trainer = build_trainer(cfg.trainer, callbacks=[], loggers=False)
    batches = trainer.predict(system, dataloaders=datamodule.dataloader("train"))
    probabilities = torch.cat([batch.float().cpu() for batch in batches])

    output = Path(cfg.output or Path(cfg.paths.output_dir) / OUTPUT_NAME).expanduser()
    arrays = datamodule.split_arrays("train")
    record = teacher_record(probabilities, arrays, class_names, paths, ensemble.tta_modes)
    write_atomically(output, lambda file: torch.save(record, file))
    agreement = (probabilities.argmax(dim=1).numpy() == arrays.labels).mean()
    log.info(
        "Wrote %s: %d training images labelled by %s (they agree with %.1f %% of the labels)",
        output,
        len(probabilities),
        describe_members(paths, ensemble.tta_modes),
        100 * agreement,
    )
    return output


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="distill")
def main(cfg: DictConfig) -> None:
    """Write the teacher targets of the training split."""
    exit_on_user_error(write_teacher_targets, cfg)


if __name__ == "__main__":
    main()
