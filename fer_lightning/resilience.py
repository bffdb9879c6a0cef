"""Surviving crashes and scaling out: checkpoints written atomically, csv logs that continue
after a resume, and a progress bar that does not hang multi-process runs."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning_fabric.plugins import TorchCheckpointIO
from lightning_fabric.utilities.cloud_io import get_filesystem
from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.callbacks import RichProgressBar
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment

from fer_lightning.files import write_atomically


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write local checkpoints into a temp file next to the target, then rename it over the target.

    A crash or ``kill -9`` mid-write leaves the previous checkpoint whole. Lightning's own writer
    stages the file in the system temp folder and moves it, which becomes a plain copy (not atomic)
    when that folder is on another file system. Remote (fsspec URL) paths keep Lightning's writer.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        write_atomically(Path(path), lambda file: torch.save(checkpoint, file))


class _ContinuingExperimentWriter(ExperimentWriter):
    """Lightning's csv writer, except that an existing metrics.csv is continued, not deleted."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = next(csv.reader(file), [])


class ContinuingCSVLogger(CSVLogger):
    """CSVLogger whose metrics.csv grows across a resume into the same run folder
    (``hydra.run.dir=<run dir> ckpt_path=<run dir>/checkpoints/last.ckpt``) instead of being
    replaced by the rows logged after the resume."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingExperimentWriter(log_dir=self.log_dir)
        return self._experiment


class DistributedRichProgressBar(RichProgressBar):
    """RichProgressBar that does not hang multi-process (DDP) runs.

    Only rank 0 shows a bar, and Lightning's bar computes the logged metrics only there; metrics
    logged with ``sync_dist=True`` then wait forever for the other ranks' all-reduce
    (Lightning issue #21264). Here every rank computes them at the same points.
    """

    def _update_metrics(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.world_size > 1:
            _ = trainer.progress_bar_metrics  # cached: the bar on rank 0 does not sync again
        super()._update_metrics(trainer, pl_module)
