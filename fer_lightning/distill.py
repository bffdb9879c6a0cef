"""Teacher targets for knowledge distillation: the class probabilities that trained nets (often
the shipped ensemble) give every training image, written once and then used by train.py:

    python -m fer_lightning.distill ckpt_path=[pretrained:vgg,pretrained:deep] tta=flip
    python train.py experiment=vgg_fer2013 data.teacher_targets=<run dir>/teacher_targets.pt

Only the training split is labelled: PublicTest stays for selection, PrivateTest for the report.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig

from fer_lightning.builders import build_trainer
from fer_lightning.checkpoint import run_config
from fer_lightning.cli import exit_on_user_error, settings_in_one_line
from fer_lightning.config import CONF_DIR
from fer_lightning.data.teacher import teacher_record
from fer_lightning.ensemble import describe_members
from fer_lightning.errors import FERUserError
from fer_lightning.files import write_output
from fer_lightning.loader import load_model
from fer_lightning.system import FERSystem

log = logging.getLogger(__name__)

OUTPUT_NAME = "teacher_targets.pt"
# data settings that decide which images a run trained on (image folders carve val out of train)
SPLIT_SETTINGS = ("_target_", "val_fraction", "split_seed")


def write_teacher_targets(cfg: DictConfig) -> Path:
    """Label the training split of the first teacher's data with the teachers' mean class
    probabilities (each teacher with its TTA) and write them, atomically, to ``cfg.output``."""
    output = Path(cfg.output or Path(cfg.paths.output_dir) / OUTPUT_NAME).expanduser()
    if output.is_dir():
        raise FERUserError(f"output={output} is a folder; name the file to write")
    model = load_model(cfg.ckpt_path, tta=cfg.tta, exported=False)
    paths, class_names = model.names, model.class_names
    model.require_stored_csv(cfg.data.csv_path, "data.csv_path")
    _check_same_split(model.checkpoints, paths)
    ensemble = model.mean_ensemble()
    datamodule = model.datamodule({**cfg.data, "in_channels": ensemble.in_channels})
    system = FERSystem(net=ensemble, class_names=class_names).eval()
    trainer = build_trainer(cfg.trainer, callbacks=[], loggers=False)
    batches = trainer.predict(system, dataloaders=datamodule.dataloader("train"))
    probabilities = torch.cat([batch.float().cpu() for batch in batches])
    arrays = datamodule.split_arrays("train")
    if len(probabilities) != len(arrays.labels):
        raise FERUserError(
            f"the teachers labelled {len(probabilities)} of {len(arrays.labels)} training "
            "images; label them all, on one device (no trainer.fast_dev_run, "
            "trainer.limit_predict_batches or trainer.devices > 1); nothing was written"
        )

    record = teacher_record(probabilities, arrays, class_names, paths, ensemble.tta_modes)
    write_output(output, lambda file: torch.save(record, file), "output")
    agreement = (probabilities.argmax(dim=1).numpy() == arrays.labels).mean()
    log.info(
        "Wrote %s: %d training images labelled by %s (they agree with %.1f %% of the labels)",
        output,
        len(probabilities),
        describe_members(paths, ensemble.tta_modes),
        100 * agreement,
    )
    return output


def _check_same_split(checkpoints: Sequence[dict[str, Any]], paths: Sequence[str]) -> None:
    """Teachers trained on another split of the data than the first one's (the student's) may
    have seen its validation images, which would leak into the targets: refused in one line."""
    first = run_config(checkpoints[0]).data
    for checkpoint, path in zip(checkpoints[1:], paths[1:], strict=True):
        data = run_config(checkpoint).data
        for key in SPLIT_SETTINGS:
            if data.get(key) != first.get(key):
                raise FERUserError(
                    f"{path}: trained on another split of the data (data.{key}="
                    f"{data.get(key)} vs {first.get(key)} for {paths[0]}); a teacher must not "
                    "have seen the student's validation images"
                )


@settings_in_one_line
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="distill")
def main(cfg: DictConfig) -> None:
    """Write the teacher targets of the training split."""
    exit_on_user_error(write_teacher_targets, cfg)


if __name__ == "__main__":
    main()
