"""Preemption: SIGTERM (what SLURM sends a preempted or timed-out job, and `kill`'s default) stops
training at the end of the current batch with last.ckpt saved there, and the run exits with
status 143 and one line saying how to resume.

Lightning turns SIGTERM into its ``SIGTERMException`` at the next batch end; `LastCheckpoint`
saves last.ckpt then, through ModelCheckpoint's own ``save_on_exception``. On SLURM through
``hydra/launcher=slurm_gpu``, submitit's warning signal before the time limit saves last.ckpt the
same way and submitit requeues the job, which resumes from it (``ckpt_path=auto``).
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from typing_extensions import override

# 128 + SIGTERM: the status a shell reports for a process that SIGTERM ended
PREEMPTED_EXIT_STATUS = 143


class LastCheckpoint(ModelCheckpoint):
    """ModelCheckpoint for last.ckpt that, with ``save_on_exception=True``, saves it when the fit
    is stopped by a signal: SIGTERM (Lightning's ``SIGTERMException``, raised between batches)
    or a ``SystemExit`` (submitit's requeue on its warning signal). Other exceptions (a crash,
    a config mistake found during the fit) leave the last good last.ckpt alone."""

    @override
    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if isinstance(exception, SystemExit):  # SIGTERMException is one
            super().on_exception(trainer, pl_module, exception)


class RunPreempted(Exception):
    """Training stopped by SIGTERM after saving ``checkpoint`` (None when there was none to
    save); the command line reports it in one line and exits with status 143."""

    def __init__(self, checkpoint: Path | None, epoch: int, step: int) -> None:
        self.checkpoint = checkpoint
        super().__init__(
            f"stopped by SIGTERM at epoch {epoch}, step {step}; "
            + (
                f"resume with the same command plus ckpt_path={checkpoint}"
                if checkpoint is not None
                else "no checkpoint was saved"
            )
        )


def last_checkpoint_path(trainer: pl.Trainer) -> Path | None:
    """The last.ckpt of the trainer's `LastCheckpoint`, if it has been written."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, LastCheckpoint):
            path = Path(callback.format_checkpoint_name({}))
            if path.is_file():
                return path
    return None
