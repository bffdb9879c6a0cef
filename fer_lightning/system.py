"""The LightningModule that trains, evaluates and serves any FER classifier net."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.plugins.precision import MixedPrecision
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torchmetrics import MaxMetric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from fer_lightning.classes import EMOTIONS, IMAGE_SIZE
from fer_lightning.errors import FERUserError, first_line
from fer_lightning.report import SCORES
from fer_lightning.tta import tta_log_probabilities

SCHEDULER_INTERVALS = ("epoch", "step")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


# Labels are checked when the data is read; torchmetrics' own per-batch check of them (a
# torch.unique) would make the host wait for the GPU at every step.
UNCHECKED = {"validate_args": False}


def uses_channels_last(channels_last: bool | None, device: torch.device | str) -> bool:
    """Whether a net runs with NHWC weights: ``channels_last`` when set, else (None, the
    default) on a CPU, where oneDNN's NHWC convolutions trained the reference nets 1.4-1.6x and
    evaluated them 1.15-1.8x as fast as NCHW ones, with the same results
    (docs/speed-vs-keras.md)."""
    if channels_last is not None:
        return bool(channels_last)
    return torch.device(device).type == "cpu"


def prepare_for_inference(
    net: nn.Module, device: torch.device | str = "cpu", channels_last: bool | None = None
) -> nn.Module:
    """``net`` in eval mode, with NHWC weights where ``uses_channels_last`` says (by default on a
    CPU): the fast way to evaluate, predict and serve. In place; returns ``net``."""
    net.eval()
    if uses_channels_last(channels_last, device):
        net.to(memory_format=torch.channels_last)
    return net


def _summary_metrics(num_classes: int) -> MetricCollection:
    """Accuracy and macro-F1: cheap enough to track on every stage, including training."""
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro", **UNCHECKED),
            "f1_macro": MulticlassF1Score(num_classes, average="macro", **UNCHECKED),
        }
    )


def _detailed_metrics(num_classes: int) -> MetricCollection:
    """Summary metrics plus per-class precision/recall/F1 and the confusion matrix (val/test)."""
    metrics = _summary_metrics(num_classes)
    metrics.add_metrics(
        {
            "precision": MulticlassPrecision(num_classes, average=None, **UNCHECKED),
            "recall": MulticlassRecall(num_classes, average=None, **UNCHECKED),
            "f1": MulticlassF1Score(num_classes, average=None, **UNCHECKED),
            "confusion": MulticlassConfusionMatrix(num_classes, **UNCHECKED),
        }
    )
    return metrics


def _factory_argument(factory: Callable[..., Any], name: str) -> tuple[bool, Any]:
    """Whether ``factory`` (a function, class or partial) takes ``name``, and the value it will
    get: the one the partial binds, else the signature's default."""
    func = getattr(factory, "func", factory)
    parameter = inspect.signature(func).parameters.get(name)
    if parameter is None:
        return False, None
    return True, getattr(factory, "keywords", {}).get(name, parameter.default)


def _needs_total_steps(scheduler_factory: Callable[..., LRScheduler]) -> bool:
    """True when the scheduler takes ``total_steps`` (OneCycleLR) and the config left it unset."""
    takes, total_steps = _factory_argument(scheduler_factory, "total_steps")
    return takes and total_steps is None


def _check_one_cycle_warm_up(
    scheduler_factory: Callable[..., LRScheduler], total_steps: int
) -> None:
    """Refuse the one-cycle schedules torch's OneCycleLR divides by zero on: a warm-up of exactly
    one step (e.g. 5 steps with ``pct_start=0.2``) or of the whole run."""
    takes, pct_start = _factory_argument(scheduler_factory, "pct_start")
    if not takes or (pct_start * total_steps != 1 and pct_start != 1):
        return
    warm_up = "the whole run" if pct_start == 1 else "exactly 1 step"
    raise FERUserError(
        f"model.scheduler: a one-cycle schedule of {total_steps} steps with pct_start="
        f"{pct_start} warms up for {warm_up}, which OneCycleLR cannot run (it divides by zero); "
        "change pct_start or the number of steps"
    )


class FERSystem(pl.LightningModule):
    """Cross-entropy training of ``net`` with per-stage metrics; the net itself is pluggable.

    Only primitive hyper-parameters are saved, so checkpoints load with torch's default
    ``weights_only=True`` via ``FERSystem.load_from_checkpoint(path, net=<net>)``.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., Optimizer] | None = None,
        scheduler: Callable[..., LRScheduler] | None = None,
        scheduler_interval: str = "epoch",
        scheduler_monitor: str | None = "val/loss",
        class_weights: list[float] | None = None,
        label_smoothing: float = 0.0,
        class_names: Sequence[str] = EMOTIONS,
        channels_last: bool | None = None,
        compile_mode: str | None = None,
    ) -> None:
        super().__init__()
        # Plain lists/floats (not tuples or Hydra ListConfigs) keep checkpoints weights_only-safe.
        class_names = [str(name) for name in class_names]
        class_weights = None if class_weights is None else [float(w) for w in class_weights]
        label_smoothing = float(label_smoothing)
        num_classes = len(class_names)
        self._validate_args(
            net, num_classes, scheduler_interval, class_weights, label_smoothing, compile_mode
        )
        # compile_mode says how to run the net, not what it is: evaluation loads it eager
        self.save_hyperparameters(
            ignore=["net", "optimizer", "scheduler", "compile_mode"], logger=False
        )
        self.compile_mode = compile_mode

        # NHWC weights make oneDNN (CPU) and cuDNN (tensor cores) pick faster convolution kernels;
        # the inputs need not be converted, the first convolution follows its weights. None
        # decides in `setup`, once the device is known.
        self.channels_last = channels_last
        self.net = net.to(memory_format=torch.channels_last) if channels_last else net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        # the total_steps this fit gives a OneCycleLR; a resumed one must have been built with it
        self._scheduler_total_steps: int | None = None
        self.example_input_array = torch.zeros(1, net.in_channels, IMAGE_SIZE, IMAGE_SIZE)
        weights = torch.ones(num_classes) if class_weights is None else torch.tensor(class_weights)
        self.register_buffer("loss_weights", weights, persistent=True)

        self.train_metrics = _summary_metrics(num_classes).clone(prefix="train/")
        detailed = _detailed_metrics(num_classes)
        self.val_metrics = detailed.clone(prefix="val/")
        self.test_metrics = detailed.clone(prefix="test/")
        # best-so-far scores travel in checkpoints, so a resumed run keeps its earlier epochs' best
        self.val_acc_best = MaxMetric()
        self.val_f1_macro_best = MaxMetric()
        for best in (self.val_acc_best, self.val_f1_macro_best):
            best.persistent(True)
        # K x K int64, rows = true class; set after each val / test epoch for reports and plots.
        self.val_confusion: torch.Tensor | None = None
        self.test_confusion: torch.Tensor | None = None
        # test-time augmentation for test/predict; an evaluation choice, so not a hyper-parameter
        self.tta = "none"

    @staticmethod
    def _validate_args(
        net: nn.Module,
        num_classes: int,
        scheduler_interval: str,
        class_weights: list[float] | None,
        label_smoothing: float,
        compile_mode: str | None,
    ) -> None:
        """Reject config mistakes up front, with one line naming the field and its value."""
        net_classes = getattr(net, "num_classes", num_classes)
        if net_classes != num_classes:
            raise FERUserError(
                f"model.net.num_classes={net_classes} does not match {num_classes} class_names"
            )
        if scheduler_interval not in SCHEDULER_INTERVALS:
            raise FERUserError(
                f"model.scheduler_interval={scheduler_interval!r} must be one of "
                f"{SCHEDULER_INTERVALS}"
            )
        if class_weights is not None and (
            len(class_weights) != num_classes or any(w < 0 for w in class_weights)
        ):
            raise FERUserError(
                f"model.class_weights={class_weights} must be {num_classes} non-negative numbers"
            )
        if not 0.0 <= label_smoothing < 1.0:
            raise FERUserError(f"model.label_smoothing={label_smoothing} must be in [0, 1)")
        if compile_mode is not None and compile_mode not in COMPILE_MODES:
            raise FERUserError(
                f"model.compile_mode={compile_mode!r} must be null or one of {COMPILE_MODES}"
            )

    def logged_metric_names(self) -> set[str]:
        """The metrics a fit logs, which callbacks and schedulers may monitor: each stage's loss,
        accuracy and macro-F1, val's best-so-far scores and per-class scores."""
        summary = [name.removeprefix("train/") for name in self.train_metrics]
        names = {f"{stage}/{name}" for stage in ("train", "val") for name in ("loss", *summary)}
        names |= {f"val/{name}_best" for name in summary}
        names |= {f"val/{metric}/{name}" for metric in SCORES for name in self.hparams.class_names}
        return names

    def setup(self, stage: str) -> None:
        """Lay the weights out as ``channels_last`` says for this run's device (None: NHWC on a
        CPU), for training and evaluation alike; evaluate.py sets it for a loaded checkpoint."""
        nhwc = uses_channels_last(self.channels_last, self.trainer.strategy.root_device)
        self.net.to(memory_format=torch.channels_last if nhwc else torch.contiguous_format)

    def on_fit_start(self) -> None:
        """With ``compile_mode`` set, compile the net for this fit (torch.compile, in place: the
        state_dict keys stay the net's own, so checkpoints load into an eager net). Lightning runs
        this after the callbacks' ``on_fit_start``, whose graph trace and model summary need the
        eager net; an EMA copy, taken at setup, stays eager too."""
        if self.compile_mode is not None:
            self.net.compile(mode=self.compile_mode)

    def on_train_start(self) -> None:
        """A resumed OneCycleLR keeps the length it was built with (its state holds total_steps):
        resumed with settings that make the run longer, it would crash stepping past its end;
        shorter, it would stop before it anneals. Lightning has restored it by now."""
        planned = self._scheduler_total_steps
        for config in self.trainer.lr_scheduler_configs:
            stored = getattr(config.scheduler, "total_steps", None)
            if planned is not None and stored is not None and stored != planned:
                unit = "optimizer steps" if config.interval == "step" else "epochs"
                raise FERUserError(
                    f"{self.trainer.ckpt_path}: its one-cycle schedule spans {stored} {unit} but "
                    f"this run makes {planned}; resume with the settings it was trained with "
                    "(trainer.max_epochs, trainer.limit_train_batches, data.batch_size, "
                    "trainer.accumulate_grad_batches), or start a new run from its weights "
                    "with init_weights=<checkpoint>"
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the net, shape (N, num_classes)."""
        return self.net(x)

    def evaluation_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits for test/predict: the net's own, or log mean probabilities over TTA views."""
        if self.tta == "none":
            return self(images)
        return tta_log_probabilities(self, images, self.tta)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Class-weighted, optionally label-smoothed cross-entropy; ``targets`` are class
        indices (B,) or, after mixup/cutmix, class probabilities (B, K)."""
        return F.cross_entropy(
            logits,
            targets,
            weight=self.loss_weights,
            label_smoothing=self.hparams.label_smoothing,
        )

    def _shared_step(
        self,
        batch: tuple[torch.Tensor, torch.Tensor],
        stage: str,
        metrics: MetricCollection,
        forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Forward (the net's, or `forward`), loss and metric update; logs the epoch-mean loss."""
        images, targets = batch
        logits = (forward or self)(images)
        loss = self.loss(logits, targets)
        # mixed targets count as their dominant class in the metrics
        metrics.update(logits, targets.argmax(dim=1) if targets.ndim == 2 else targets)
        self.log(
            f"{stage}/loss",
            loss,
            on_step=False,
            on_epoch=True,
            sync_dist=True,
            prog_bar=stage != "test",
            batch_size=targets.shape[0],
        )
        return loss

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        return self._shared_step(batch, "train", self.train_metrics)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "val", self.val_metrics)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "test", self.test_metrics, self.evaluation_logits)

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Softmax probabilities; accepts ``images`` or ``(images, labels)`` batches."""
        images = batch[0] if isinstance(batch, list | tuple) else batch
        return torch.softmax(self.evaluation_logits(images), dim=1)

    def on_train_epoch_end(self) -> None:
        self.log_dict(self.train_metrics.compute())
        self.train_metrics.reset()

    def on_validation_epoch_end(self) -> None:
        values = self._log_detailed(self.val_metrics, "val")
        self.val_confusion = values["val/confusion"]
        if self.trainer.sanity_checking:  # the sanity check's scores are not a "best"
            return
        self.val_acc_best.update(values["val/acc"])
        self.val_f1_macro_best.update(values["val/f1_macro"])
        self.log("val/acc_best", self.val_acc_best.compute())
        self.log("val/f1_macro_best", self.val_f1_macro_best.compute())

    def on_test_epoch_end(self) -> None:
        self.test_confusion = self._log_detailed(self.test_metrics, "test")["test/confusion"]

    def _log_detailed(self, metrics: MetricCollection, stage: str) -> dict[str, torch.Tensor]:
        """Compute (DDP-synced), log summary and per-class scalars, reset; returns the values."""
        values = metrics.compute()
        metrics.reset()
        self.log_dict(
            {
                f"{stage}/acc": values[f"{stage}/acc"],
                f"{stage}/f1_macro": values[f"{stage}/f1_macro"],
            },
            prog_bar=stage == "val",
            sync_dist=True,  # already synced by torchmetrics; says so to Lightning
        )
        per_class = {
            f"{stage}/{metric}/{name}": values[f"{stage}/{metric}"][index]
            for metric in SCORES
            for index, name in enumerate(self.hparams.class_names)
        }
        self.log_dict(per_class, sync_dist=True)
        values[f"{stage}/confusion"] = values[f"{stage}/confusion"].detach().to("cpu", torch.int64)
        return values

    def _scheduler_steps(self, interval: str) -> int:
        """How often the scheduler steps in the whole run: optimizer steps or epochs."""
        if interval == "step":
            return int(self.trainer.estimated_stepping_batches)
        if self.trainer.max_epochs is None or self.trainer.max_epochs < 1:
            raise FERUserError(
                "a one-cycle schedule stepped per epoch needs trainer.max_epochs >= 1 "
                "(or set its total_steps)"
            )
        return self.trainer.max_epochs

    def _fused_default(self) -> dict[str, bool]:
        """``fused=True`` for an optimizer that takes ``fused`` (Adam, AdamW, SGD) when the config
        leaves it unset and the run is on a CPU: one kernel per tensor instead of about ten ops
        made Adam's update 4-9x faster on the reference nets, with the same weights to 1e-8
        (``model.optimizer.fused=false`` turns it off). Lightning cannot clip the gradients of a
        fused optimizer under mixed precision, so such runs keep torch's default."""
        takes, fused = _factory_argument(self.optimizer_factory, "fused")
        if self._trainer is None:
            return {}
        clipped_mixed = bool(self.trainer.gradient_clip_val) and isinstance(
            self.trainer.precision_plugin, MixedPrecision
        )
        if not takes or fused is not None or self.device.type != "cpu" or clipped_mixed:
            return {}
        return {"fused": True}

    def configure_optimizers(self) -> dict[str, Any]:
        """Build the optimizer (and optional scheduler) from the Hydra partials."""
        if self.optimizer_factory is None:
            raise FERUserError(
                "model.optimizer is not set: training needs an optimizer "
                "(a system without one can only evaluate or predict)"
            )
        try:
            optimizer = self.optimizer_factory(params=self.parameters(), **self._fused_default())
        except ValueError as err:  # torch's checks of lr, betas, weight_decay, ...
            raise FERUserError(f"model.optimizer: {first_line(err)}") from err
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        interval = self.hparams.scheduler_interval
        scheduler_kwargs = {}
        if _needs_total_steps(self.scheduler_factory):
            self._scheduler_total_steps = self._scheduler_steps(interval)
            scheduler_kwargs["total_steps"] = self._scheduler_total_steps
            _check_one_cycle_warm_up(self.scheduler_factory, self._scheduler_total_steps)
        scheduler = self.scheduler_factory(optimizer=optimizer, **scheduler_kwargs)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": scheduler,
                "interval": interval,
                "monitor": self.hparams.scheduler_monitor,
            },
        }
