"""The training task behind train.py: fit with checkpoint selection on val (PublicTest), then test
the best checkpoint once (PrivateTest)."""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import SIGTERMException
from torch.optim.lr_scheduler import ReduceLROnPlateau

from fer_lightning.builders import (
    build_trainer,
    check_runs_test_batches,
    check_setting_types,
    instantiate_group,
)
from fer_lightning.checkpoint import (
    TRAINING_STATE_KEYS,
    VAL_METRICS_KEY,
    StoreRunConfig,
    load_net_weights,
    load_weights,
    read_checkpoint,
    run_config,
)
from fer_lightning.cli import in_multirun
from fer_lightning.data import SyntheticFER2013DataModule
from fer_lightning.errors import FERUserError, check_whole_number
from fer_lightning.loggers import log_hparams_with_metrics
from fer_lightning.preemption import RunPreempted, last_checkpoint_path
from fer_lightning.report import publish_report

log = logging.getLogger(__name__)
# counters Lightning's ModelCheckpoint may monitor besides the logged metrics
EPOCH_COUNTERS = frozenset({"epoch", "step"})
# ckpt_path=auto resumes from the run folder's last.ckpt when there is one (a requeued job)
AUTO_RESUME = "auto"
# the test report's summary, one of the files a run leaves in its folder
REPORT_FILE = "metrics.json"


def train(cfg: DictConfig) -> dict[str, float]:
    """Train the configured system and return its metrics (val during fit, test after): the
    config is checked once, then build, fit, test and report."""
    check_train_config(cfg)
    ckpt_path = prepare_run_folder(cfg)
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)

    run_config = resolved_run_config(cfg)
    callbacks = [*instantiate_group(cfg.get("callbacks")), StoreRunConfig(run_config)]
    loggers = instantiate_group(cfg.get("logger"))
    trainer = build_trainer(cfg.trainer, callbacks, loggers)  # a missing GPU fails before data
    if cfg.get("test"):
        check_runs_test_batches(trainer, "; set test=false to skip the test")
    datamodule, system = build_data_and_system(cfg)
    if ckpt_path:
        check_resumable(ckpt_path, cfg, system)
    if cfg.get("init_weights"):
        load_net_weights(system, cfg.init_weights)
    if cfg.get("train"):
        check_monitors(callbacks, system)

    metrics: dict[str, float] = {}
    try:
        if cfg.get("train"):
            metrics.update(_fit(cfg, trainer, system, datamodule, ckpt_path))
        if cfg.get("test"):
            metrics.update(_test_and_report(cfg, trainer, system, datamodule, metrics, run_config))
    except SIGTERMException:
        raise RunPreempted(
            last_checkpoint_path(trainer), trainer.current_epoch, trainer.global_step
        ) from None
    return metrics


def check_train_config(cfg: DictConfig) -> None:
    """Every check of the config that needs no data, before anything runs or is written: the
    settings against the types their targets declare, then the combinations that would train
    nothing, or test weights nobody meant."""
    check_setting_types(cfg)
    if cfg.get("seed") is not None:
        check_whole_number("seed", cfg.seed, 0)
    if cfg.get("ckpt_path") and cfg.get("init_weights"):
        raise FERUserError(
            "set ckpt_path (resume a run) or init_weights (a new run from trained weights), "
            "not both"
        )
    if not cfg.get("train"):
        _check_untrained_test(cfg)
        return
    trainer = cfg.trainer
    if trainer.get("fast_dev_run"):
        return
    for key in ("max_epochs", "max_steps", "limit_train_batches"):
        if trainer.get(key) == 0:
            raise FERUserError(
                f"trainer.{key}=0 trains nothing (the test would score an untrained net); set it "
                "above 0, or test trained weights with train=false init_weights=<checkpoint>"
            )


def check_resumable(path: str, cfg: DictConfig, system: pl.LightningModule) -> None:
    """Fail in one line, before Lightning loads ``path`` to resume, when the file is unreadable,
    holds no training state (shipped or slimmed weights), holds another network than the one the
    config names (or one of another shape), or has done more epochs than trainer.max_epochs. The
    file's tensors are only mapped here: the fit reads them, once."""
    checkpoint = read_checkpoint(path, mmap=True)
    if not checkpoint.keys() >= TRAINING_STATE_KEYS:
        raise FERUserError(
            f"{path}: weights only, no training state to resume (ckpt_path resumes a run from its "
            "last.ckpt); start a new run from these weights with init_weights=<it> instead"
        )
    stored_net = run_config(checkpoint).model.net._target_
    if stored_net != cfg.model.net._target_:
        raise FERUserError(
            f"{path}: the checkpoint holds a {stored_net} net but the config names "
            f"model.net._target_={cfg.model.net._target_}; resume with the model it was trained "
            "with (e.g. model=...), or drop ckpt_path to start a new run"
        )
    expected = {name: tuple(value.shape) for name, value in system.state_dict().items()}
    stored = {name: tuple(value.shape) for name, value in checkpoint["state_dict"].items()}
    if stored != expected:
        differing = sorted(set(stored) ^ set(expected)) or sorted(
            name for name in stored if stored[name] != expected[name]
        )
        name = differing[0]
        raise FERUserError(
            f"{path}: its weights do not fit the network {type(system.net).__name__} ({name}: "
            f"{stored.get(name, 'missing')} in the checkpoint, {expected.get(name, 'none')} here)"
        )
    done = checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"]
    max_epochs = cfg.trainer.get("max_epochs")
    if max_epochs is not None and 0 <= max_epochs < done:
        raise FERUserError(
            f"{path}: the run has done {done} epochs, more than trainer.max_epochs={max_epochs}; "
            f"resume with trainer.max_epochs >= {done}, or start a new run from its weights with "
            "init_weights=<checkpoint>"
        )


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
    evaluate_hint = "to score a checkpoint, run `fer-lightning evaluate ckpt_path=<file>`"
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


def _fit(
    cfg: DictConfig,
    trainer: pl.Trainer,
    system: pl.LightningModule,
    datamodule: pl.LightningDataModule,
    ckpt_path: str | None,
) -> dict[str, float]:
    """Fit (resuming from ``ckpt_path`` if set) and return the logged metrics."""
    log.info("Training %s on %s", cfg.model.net._target_, cfg.data._target_)
    with warnings.catch_warnings():
        if ckpt_path:  # resuming in its own run folder: expected there
            warnings.filterwarnings("ignore", r"Checkpoint directory .* is not empty")
        # mixed precision keeps fp32 weights: the summary's 32-bit fallback is the right size
        warnings.filterwarnings("ignore", r"Precision \S+-mixed is not supported by the model")
        trainer.fit(system, datamodule=datamodule, ckpt_path=ckpt_path)
    return _floats(trainer.callback_metrics)


def _test_and_report(
    cfg: DictConfig,
    trainer: pl.Trainer,
    system: pl.LightningModule,
    datamodule: pl.LightningDataModule,
    metrics: dict[str, float],
    run_config: dict[str, Any],
) -> dict[str, float]:
    """Test the best checkpoint (the current weights when none was saved) and write the report:
    metrics.json, the text report and the confusion matrix of the test split, in the run dir.

    The best checkpoint is read once: its weights are tested, and its ``val`` block holds the
    PublicTest scores stored in it when it was written (the last epoch's scores without one; none
    without a fit).
    """
    best_path = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if best_path:
        best = read_checkpoint(best_path)
        load_weights(system, best, best_path)
        val_metrics = best.get(VAL_METRICS_KEY, {})
    else:
        log.warning("No best checkpoint was saved; testing the current weights")
        val_metrics = {
            key.removeprefix("val/"): value
            for key, value in metrics.items()
            if key.startswith("val/")
        }
    trainer.test(system, datamodule=datamodule, verbose=False)
    tested = _floats(trainer.callback_metrics)
    if not trainer.is_global_zero:
        return tested
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
    for logger in trainer.loggers:
        log_hparams_with_metrics(logger, run_config, final)
    return tested


def prepare_run_folder(cfg: DictConfig) -> str | None:
    """The checkpoint this run resumes from (``ckpt_path``; ``auto``: the run folder's last.ckpt
    if there is one, else none), after refusing a run folder that already holds a run unless the
    command resumes it or says ``overwrite=true`` (which removes that run's checkpoints, logs
    and report first), so that two runs never mix their checkpoints and logs."""
    output_dir = Path(cfg.paths.output_dir)
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path == AUTO_RESUME:
        last = _last_checkpoint_file(cfg)
        ckpt_path = str(last) if last.is_file() else None
        log.info("ckpt_path=auto: %s", f"resuming from {last}" if ckpt_path else "no last.ckpt")
    if rank_zero_only.rank != 0:  # the other processes of a multi-process run start later
        return ckpt_path
    held = [path for path in _run_outputs(cfg) if _holds_files(path)]
    if not held or ckpt_path:
        return ckpt_path
    if not cfg.get("overwrite"):
        names = ", ".join(str(path.relative_to(output_dir)) for path in held)
        raise FERUserError(
            f"run folder {output_dir} already holds a run ({names}); resume it with "
            "ckpt_path=auto, replace it with overwrite=true, or choose another hydra.run.dir"
        )
    log.warning("overwrite=true: removing the earlier run in %s", output_dir)
    for path in held:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    return None


def _last_checkpoint_file(cfg: DictConfig) -> Path:
    """Where the last_checkpoint callback writes last.ckpt."""
    last = (cfg.get("callbacks") or {}).get("last_checkpoint")
    if last is None:
        return Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    return Path(last.dirpath) / f"{last.filename}{ModelCheckpoint.FILE_EXTENSION}"


def _run_outputs(cfg: DictConfig) -> list[Path]:
    """What a run writes into its folder: checkpoint folders, logger folders and the report."""
    output_dir = Path(cfg.paths.output_dir)
    paths = {output_dir / REPORT_FILE}
    for callback in (cfg.get("callbacks") or {}).values():
        if callback is not None and callback.get("dirpath"):
            paths.add(Path(callback.dirpath))
    for logger in (cfg.get("logger") or {}).values():
        if logger is not None and logger.get("save_dir") and logger.get("name"):
            paths.add(Path(logger.save_dir) / logger.name)
    return sorted(path for path in paths if path.is_relative_to(output_dir))


def _holds_files(path: Path) -> bool:
    """A file, or a folder holding files at any depth."""
    if path.is_dir():
        return any(item.is_file() for item in path.rglob("*"))
    return path.exists()


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


def run_training(cfg: DictConfig) -> float | None:
    """Train (every run, single or a job of a sweep), then return the metric a sweep optimises
    (``optimized_metric``; None when unset, and outside a sweep, where nobody reads it: a run that
    fits nothing, e.g. ``train=false``, logs no ``val/acc_best``)."""
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
