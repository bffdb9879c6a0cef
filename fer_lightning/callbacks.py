"""Callbacks: TensorBoard extras (confusion-matrix and sample-prediction figures, the net's graph),
weight averaging that tests what it validated, and a progress bar safe in DDP runs."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, EMAWeightAveraging, RichProgressBar
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.trainer.states import TrainerFn
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.tensorboard import SummaryWriter

from fer_lightning.figures import plot_confusion_matrix, plot_sample_predictions


def _tensorboard_writer(trainer: pl.Trainer) -> SummaryWriter | None:
    """The SummaryWriter of the first TensorBoard logger, or None when there is none."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


class TensorBoardExtras(Callback):
    """After each validation run (not the sanity check), logs to TensorBoard the confusion-matrix
    figure and predictions on the first ``num_samples`` validation images, and once the net's
    graph; does nothing without a TensorBoardLogger.

    The graph is traced from the net alone, not the LightningModule, so the metric modules stay
    out of the trace. The sample predictions are made on the first validation batch, while the
    weights being validated (e.g. an EMA of them) are loaded; the figures are drawn in
    ``on_validation_end`` because Lightning calls callbacks' ``on_validation_epoch_end`` before
    the module's, i.e. before ``FERSystem.val_confusion`` holds the current epoch.
    """

    def __init__(
        self,
        num_samples: int = 32,
        log_confusion: bool = True,
        log_samples: bool = True,
        log_graph: bool = True,
    ) -> None:
        super().__init__()
        if num_samples < 1:
            raise ValueError(f"num_samples must be positive, got {num_samples}")
        self.num_samples = num_samples
        self.log_confusion = log_confusion
        self.log_samples = log_samples
        self.log_graph = log_graph
        self._samples: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        writer = _tensorboard_writer(trainer)
        if not self.log_graph or writer is None or not trainer.is_global_zero:
            return
        example = pl_module.example_input_array.to(pl_module.device)
        with warnings.catch_warnings():
            # TensorBoard's graph export has no replacement for the deprecated torch.jit.trace yet
            warnings.filterwarnings("ignore", r"`torch\.jit\.trace", FutureWarning)
            writer.add_graph(pl_module.net, example)

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: tuple[torch.Tensor, torch.Tensor],
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if (
            batch_idx != 0
            or dataloader_idx != 0
            or not self.log_samples
            or trainer.sanity_checking
            or _tensorboard_writer(trainer) is None
            or not trainer.is_global_zero
        ):
            return
        images, targets = (part[: self.num_samples] for part in batch)
        with torch.no_grad():
            probabilities = torch.softmax(pl_module(images), dim=1)
        self._samples = (images.cpu(), targets.cpu(), probabilities.cpu())

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        writer = _tensorboard_writer(trainer)
        if trainer.sanity_checking or writer is None or not trainer.is_global_zero:
            return
        class_names = list(pl_module.hparams.class_names)
        if self.log_confusion and pl_module.val_confusion is not None:
            figure = plot_confusion_matrix(pl_module.val_confusion.numpy(), class_names)
            writer.add_figure("val/confusion_matrix", figure, trainer.global_step, close=True)
        if self._samples is not None:
            figure = plot_sample_predictions(*self._samples, class_names)
            writer.add_figure("val/sample_predictions", figure, trainer.global_step, close=True)
            self._samples = None


class HostCountedAveragedModel(AveragedModel):
    """torch's ``AveragedModel`` with a fused ``multi_avg_fn``, whose updates never read the update
    counter back from the device.

    torch's ``update_parameters`` tests the ``n_averaged`` buffer twice per update: two host waits
    per training step on a GPU. Here a host copy of the count decides between the first update's
    copy and the average; the buffer still advances (on the device, without a read) so that
    checkpoints carry the count, and it is read once after a checkpoint has been loaded into it.
    """

    def __init__(
        self,
        model: nn.Module,
        multi_avg_fn: Callable[[list[torch.Tensor], list[torch.Tensor], torch.Tensor], None],
        device: torch.device | int | None = None,
        use_buffers: bool = False,
    ) -> None:
        super().__init__(model, device=device, multi_avg_fn=multi_avg_fn, use_buffers=use_buffers)
        self._host_count: int | None = 0

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._host_count = None  # the loaded count is read on the next update

    def _averaged_tensors(self, model: nn.Module) -> list[torch.Tensor]:
        buffers = [*model.buffers()] if self.use_buffers else []
        return [tensor.detach() for tensor in [*model.parameters(), *buffers]]

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        if self._host_count is None:
            self._host_count = int(self.n_averaged)
        averaged = self._averaged_tensors(self.module)
        current = [
            tensor.to(average.device)
            for average, tensor in zip(averaged, self._averaged_tensors(model), strict=True)
        ]
        if self._host_count == 0:
            for average, tensor in zip(averaged, current, strict=True):
                average.copy_(tensor)
        else:
            # the fused kernels take one device and dtype per call
            groups: dict[tuple[torch.device, torch.dtype], tuple[list, list]] = {}
            for average, tensor in zip(averaged, current, strict=True):
                group = groups.setdefault((average.device, average.dtype), ([], []))
                group[0].append(average)
                group[1].append(tensor)
            for group_averaged, group_current in groups.values():
                self.multi_avg_fn(group_averaged, group_current, self.n_averaged)
        if not self.use_buffers:  # as torch's: buffers that are not averaged follow the model
            for kept, buffer in zip(self.module.buffers(), model.buffers(), strict=True):
                kept.copy_(buffer.detach())
        self.n_averaged += 1
        self._host_count += 1


class EMAWeights(EMAWeightAveraging):
    """Lightning's EMA of the weights, updated with one fused ``_foreach_lerp_`` per device and
    dtype and no host wait, and a checkpoint loaded to test or predict keeps its averaged weights.

    Lightning passes torch's per-tensor ``avg_fn``: three kernels and two temporaries per
    parameter and buffer, every step (hundreds of kernel launches per step on a GPU). torch's
    ``multi_avg_fn`` computes the same average in place; benchmarks/bench_ema.py times both.
    `HostCountedAveragedModel` applies it without reading the update counter from the device.

    Checkpoints hold the average in ``state_dict`` (what validation scored and selected) and the
    raw weights in ``current_model_state``. The parent restores the raw weights on every load
    while it is attached, so ``trainer.test(ckpt_path="best")`` after ``fit`` would test weights
    that were never validated. Only resuming a fit needs the raw weights back.
    """

    def __init__(self, decay: float = 0.999, **kwargs: Any) -> None:
        super().__init__(decay=decay, **kwargs)
        self._kwargs.pop("avg_fn")
        self._kwargs["multi_avg_fn"] = get_ema_multi_avg_fn(decay)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # the parent's fit setup, building the averaged copy as a HostCountedAveragedModel
        if stage == "fit":
            self._average_model = HostCountedAveragedModel(
                pl_module,
                device=self._device or pl_module.device,
                use_buffers=self._use_buffers,
                **self._kwargs,
            )

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)


class DistributedRichProgressBar(RichProgressBar):
    """RichProgressBar that does not hang multi-process (DDP) runs.

    Only rank 0 shows a bar, and Lightning's bar computes the logged metrics only there; metrics
    logged with ``sync_dist=True`` then wait forever for the other ranks' all-reduce
    (Lightning issue #21264). Here every rank computes them at the same points.
    """

    def _update_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.world_size > 1:
            _ = trainer.progress_bar_metrics  # cached: the bar on rank 0 does not sync again
        super()._update_metrics(trainer, pl_module)
