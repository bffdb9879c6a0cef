"""Logging pieces: a csv logger that continues its metrics.csv after a resume, and a run's
hyper-parameters with its final metrics in TensorBoard's HPARAMS tab."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from typing import Any

from pytorch_lightning.loggers import CSVLogger, Logger, TensorBoardLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment

# the hparams values TensorBoard shows as they are; others are shown as strings
HPARAM_SCALARS = (bool, int, float, str)


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


def _flatten_params(params: Mapping[str, Any], parent: str = "") -> dict[str, Any]:
    """Nested mappings -> "a/b" keys; values TensorBoard cannot show as hparams become strings."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{parent}/{key}" if parent else str(key)
        if isinstance(value, Mapping):
            flat.update(_flatten_params(value, name))
        else:
            flat[name] = value if isinstance(value, HPARAM_SCALARS) else str(value)
    return flat


def log_hparams_with_metrics(
    logger: Logger | None, params: Mapping[str, Any], metrics: Mapping[str, Any]
) -> None:
    """Log flattened ``params`` with final ``metrics`` to TensorBoard's HPARAMS tab, then close
    the event file: this is the run's last write, after Lightning finalized the logger (the write
    reopens it; left open, its flush thread outlives the run, one per multirun job).

    Does nothing for other loggers (or None), so callers need not check the logger type.
    """
    if not isinstance(logger, TensorBoardLogger):
        return
    final_metrics = {name: float(value) for name, value in metrics.items()}
    logger.log_hyperparams(_flatten_params(params), final_metrics)
    logger.finalize("success")
