"""The training task behind train.py: fit with checkpoint selection on val (PublicTest), then test
the best checkpoint once (PrivateTest)."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_only
from torch.optim.lr_scheduler import ReduceLROnPlateau

from fer_lightning.builders import (
    build_trainer,
    check_runs_test_batches,
    instantiate_group,
    resolve_gpus_alias,
)
from fer_lightning.checkpoint import (
    VAL_METRICS_KEY,
    StoreRunConfig,
    check_resumable,
    load_net_weights,
)
from fer_lightning.cli import in_multirun
from fer_lightning.data import SyntheticFER2013DataModule
from fer_lightning.errors import FERUserError, check_whole_number
from fer_lightning.loggers import log_hparams_with_metrics
from fer_lightning.report import publish_report

log = logging.getLogger(__name__)
# counters Lightning's ModelCheckpoint may monitor besides the logged metrics
EPOCH_COUNTERS = frozenset({"epoch", "step"})


def train(cfg: DictConfig) -> dict[str, float]:
    """Train the configured system and return its metrics (val during fit, test after)."""
    if cfg.get("seed") is not None:
        pl.seed_everything(check_whole_number("seed", cfg.seed, 0), workers=True)

    trainer_cfg = resolve_gpus_alias(cfg.trainer)  # fail on a missing GPU before any data work
    if cfg.get("ckpt_path") and cfg.get("init_weights"):
        raise FERUserError(
            "set ckpt_path (resume a run) or init_weights (a new run from trained weights), "
            "not both"
        )
    if not cfg.get("train"):
        _check_untrained_test(cfg)
    datamodule, system = build_data_and_system(cfg)
    if cfg.get("train") and cfg.get("ckpt_path"):
        check_resumable(cfg.ckpt_path, cfg.model, system)
    if cfg.get("init_weights"):
        load_net_weights(system, cfg.init_weights)
    run_config = resolved_run_config(cfg)
    callbacks = [*instantiate_group(cfg.get("callbacks")), StoreRunConfig(run_config)]
    loggers = instantiate_group(cfg.get("logger"))
    if cfg.get("train"):
        check_monitors(callbacks, system)
    trainer = build_trainer(trainer_cfg, callbacks, loggers)
    if cfg.get("test"):
        check_runs_test_batches(trainer, "; set test=false to skip the test")

    metrics: dict[str, float] = {}
    if cfg.get("train"):
        log.info("Training %s on %s", cfg.model.net._target_, cfg.data._target_)
        with warnings.catch_warnings():
            if cfg.get("ckpt_path"):  # resuming in its own run folder (README): expected there
                warnings.filterwarnings("ignore", r"Checkpoint directory .* is not empty")
            # mixed precision keeps fp32 weights: the summary's 32-bit fallback is the right size
            warnings.filterwarnings("ignore", r"Precision \S+-mixed is not supported by the model")
            trainer.fit(system, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        metrics.update(_floats(trainer.callback_metrics))

    if cfg.get("test"):
        best_path = (
            trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        )
        if not best_path:
            log.warning("No best checkpoint was saved; testing the current weights")
        trainer.test(
            system,
            datamodule=datamodule,
            ckpt_path=best_path or None,
            weights_only=True,
            verbose=False,
        )
        metrics.update(_floats(trainer.callback_metrics))
        if trainer.is_global_zero:
            _write_test_report(
                cfg, trainer, system, datamodule, best_path, metrics, loggers, run_config
            )
    return metrics


def check_monitors(callbacks: list[Any], system: pl.LightningModule) -> None:
    """Before the fit, refuse a checkpoint/early-stopping/scheduler monitor the system never
    logs (Lightning would stop with a traceback after the first epoch), and a mode that keeps
    the worst epoch (a loss maximised, a score minimised)."""
    logged = system.logged_metric_names()
    watched = [
        (f"callbacks: {type(callback).__name__}.monitor", callback.monitor, callback.mode)
        for callback in callbacks
        if isinstance(callback, ModelCheckpoint | EarlyStopping) and callback.monitor is not None
    ]
    scheduler = getattr(system.scheduler_factory, "func", system.scheduler_factory)
    if isinstance(scheduler, type) and issubclass(scheduler, ReduceLROnPlateau):
        watched.append(("model.scheduler_monitor", system.hparams.scheduler_monitor, None))
    for setting, monitor, mode in watched:
        if monitor not in logged | EPOCH_COUNTERS:
            raise FERUserError(
                f"{setting}={monitor!r} is not a metric this run logs; "
                f"choose one of {', '.join(sorted(logged | EPOCH_COUNTERS))}"
            )
        best = "min" if monitor.endswith("loss") else "max"
        if mode is not None and monitor not in EPOCH_COUNTERS and mode != best:
            raise FERUserError(
                f"{setting}={monitor!r} with mode={mode!r} would keep the worst epoch; "
                f"set callbacks.model_checkpoint.mode={best} (early stopping follows it)"
            )


def _check_untrained_test(cfg: DictConfig) -> None:
    """train=false tests the initial weights: refuse when those would be a random net or when
    ckpt_path (which only resumes a fit) would be ignored."""
    evaluate_hint = "to score a checkpoint, run `python evaluate.py ckpt_path=<file>`"
    if cfg.get("ckpt_path"):
        raise FERUserError(f"train=false: ckpt_path only resumes training; {evaluate_hint}")
    if cfg.get("test") and not cfg.get("init_weights"):
        raise FERUserError(
            f"train=false test=true would test an untrained net; set init_weights=<file>, or "
            f"{evaluate_hint}"
        )


def build_data_and_system(cfg: DictConfig) -> tuple[pl.LightningDataModule, pl.LightningModule]:
    """The datamodule (data prepared and loaded) and the system, whose class weights and names
    come from the training split."""
    datamodule = hydra.utils.instantiate(cfg.data)
    if (
        isinstance(datamodule, SyntheticFER2013DataModule)
        and os.environ.get("FER2013_CSV")
        and rank_zero_only.rank == 0
    ):
        log.warning(
            "FER2013_CSV is set, but data=synthetic (the default) does not read it; add "
            "data=fer2013 to train on that csv"
        )
    datamodule.prepare_data()
    # a test-only run (train=false) needs no training targets, e.g. a distillation's teacher file
    datamodule.setup("fit" if cfg.get("train", True) else "test")
    system = hydra.utils.instantiate(
        cfg.model,
        class_weights=datamodule.class_weights(),
        class_names=list(datamodule.class_names),
    )
    return datamodule, system


def _write_test_report(
    cfg: DictConfig,
    trainer: pl.Trainer,
    system: pl.LightningModule,
    datamodule: pl.LightningDataModule,
    best_path: str,
    metrics: dict[str, float],
    loggers: list[Any],
    run_config: dict[str, Any],
) -> None:
    """metrics.json, the text report and the confusion matrix of the test split, in the run dir.

    The ``val`` block holds the PublicTest scores of the tested weights: those stored in best.ckpt
    when it was written, else the last epoch's (none without a fit).
    """
    if best_path:  # (empty for a checkpoint written before the scores were stored)
        best = torch.load(best_path, map_location="cpu", weights_only=True, mmap=True)
        val_metrics = best.get(VAL_METRICS_KEY, {})
    else:
        val_metrics = {
            key.removeprefix("val/"): value
            for key, value in metrics.items()
            if key.startswith("val/")
        }
    extra = {
        "split": "test",
        "best_checkpoint": _relative_to(best_path, cfg.paths.output_dir),
        "epochs_trained": trainer.current_epoch,
        "seed": cfg.get("seed"),
        "val": val_metrics,
    }
    report = publish_report(
        system.test_confusion.cpu().numpy(),
        datamodule.class_names,
        cfg.paths.output_dir,
        extra,
        title=f"Best checkpoint {best_path or '(current weights)'} on split 'test':",
    )
    final = {"hp/test_acc": report["accuracy"], "hp/test_f1_macro": report["f1_macro"]}
    final.update(
        {f"hp/val_{key}": val_metrics[key] for key in ("acc", "f1_macro") if key in val_metrics}
    )
    for logger in loggers:
        log_hparams_with_metrics(logger, run_config, final)


def resolved_run_config(cfg: DictConfig) -> dict[str, Any]:
    """The run's config as plain containers, without Hydra's own node (for checkpoints and logs)."""
    return {
        key: OmegaConf.to_container(cfg[key], resolve=True)
        if OmegaConf.is_config(cfg[key])
        else cfg[key]
        for key in cfg
        if key != "hydra"
    }


def _relative_to(path: str, folder: str) -> str:
    """``path`` relative to ``folder`` when inside it, so identical runs write identical reports."""
    try:
        return str(Path(path).relative_to(folder))
    except ValueError:
        return path


def _floats(metrics: dict[str, Any]) -> dict[str, float]:
    """Lightning's callback_metrics (scalar tensors) as plain floats."""
    return {key: float(value) for key, value in metrics.items()}


def train_for_sweep(cfg: DictConfig) -> float | None:
    """Train, then return the metric a sweep optimises (``optimized_metric``; None when unset,
    and outside a sweep, where nobody reads it: a run that fits nothing, e.g. ``train=false``,
    logs no ``val/acc_best``)."""
    metrics = train(cfg)
    return metric_value(metrics, cfg.get("optimized_metric")) if in_multirun() else None


def metric_value(metrics: dict[str, float], name: str | None) -> float | None:
    """The metric a sweep optimises; a missing name is a config mistake worth saying clearly."""
    if not name:
        return None
    if name not in metrics:
        raise FERUserError(
            f"optimized_metric={name!r} was not logged; "
            f"logged metrics: {', '.join(sorted(metrics))}"
        )
    return metrics[name]
