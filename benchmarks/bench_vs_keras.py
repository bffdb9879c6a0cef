"""Benchmark: a reference net trained side by side in Keras, in train.py and in a bare PyTorch loop.

    pip install -e '.[keras]'   # tensorflow-cpu + keras 3: benchmark-only
    python benchmarks/bench_vs_keras.py --csv ../shared/fer2013/fer2013.csv.gz --net baseline
    python benchmarks/bench_vs_keras.py --csv ... --net deep --precision bf16 --epochs 5

Three sides train the same net (``--net baseline``: the notebook CNN, ``deep``: the deep
concatenation net) on the same arrays, with the same batch size, optimizer (Adam 1e-3), balanced
class weights, no augmentation and the same number of threads:

- **train.py**: ``fer_lightning.training.train`` on the composed train config (``model=<net>
  data=fer2013 data.augment=null``), its loader, metrics, loggers and callbacks, with the CPU
  defaults of the config; checkpointing, early stopping, the progress bar and the model summary
  are left out. ``--precision bf16`` is ``trainer.precision=bf16-mixed``.
- **Keras**: ``keras_reference_nets`` on TensorFlow, ``model.fit(..., validation_data=...)`` one
  epoch at a time (the traced step functions are kept across calls); ``bf16`` is the
  ``mixed_bfloat16`` policy.
- **bare PyTorch**: the train.py net's initial weights in plain eager PyTorch (NCHW, no compile),
  a forward+backward+Adam loop over preloaded batches, validation under ``torch.inference_mode``;
  ``bf16`` runs under ``torch.autocast``.

The sides are interleaved, epoch by epoch: a callback inside train.py's fit runs one Keras epoch
and one bare epoch after each of train.py's epochs (alternating which goes first), so that the
drift of a shared CPU's speed hits all three alike. Every epoch trains on ``--train-batches``
batches of the training split and validates on the whole PublicTest split (or ``--val-batches``
batches of it). Training images/s is timed from the epoch's start to its validation's start,
validation images/s over the validation; the first epoch (tracing, allocator warm-up) is left
out, and the table shows medians over the other epochs and the ratios of those medians.
Hydra overrides for train.py follow ``--``, e.g. ``-- model.channels_last=false``. Without Keras
installed (or with ``--no-keras``) only the two PyTorch sides run, against the bare loop.
"""

from __future__ import annotations

import argparse
import copy
import os
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from quiet_run import train_with_callback

PRECISIONS = {"fp32": "32-true", "bf16": "bf16-mixed"}
SIDES = ("Keras", "train.py", "bare PyTorch")


@dataclass
class SideTimes:
    """Per-epoch training and validation seconds of one side, and its last validation accuracy."""

    train: list[float] = field(default_factory=list)
    val: list[float] = field(default_factory=list)
    val_acc: float = float("nan")


class SideBySide(pl.Callback):
    """Times train.py's epochs and runs one Keras and one bare PyTorch epoch after each of them.

    The latest instance is kept on the class because ``train()`` builds its callbacks from the
    config; the Keras model (or None) is handed over the same way, through ``keras_factory``.
    """

    latest: SideBySide | None = None
    keras_factory = None

    def __init__(self, precision: str, train_batches: int, val_batches: int | None) -> None:
        self.precision = precision
        self.train_batches, self.val_batches = train_batches, val_batches
        self.times = {side: SideTimes() for side in SIDES}
        self._start = 0.0
        SideBySide.latest = self

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Take the arrays train.py normalised (unshuffled training split cut to the batches an
        epoch trains on, the validation split) and build the other two sides."""
        datamodule = trainer.datamodule
        self.batch_size = datamodule.hparams.batch_size
        self.eval_batch_size = datamodule.hparams.eval_batch_size or self.batch_size
        self.train_x, self.train_y = _split_tensors(
            datamodule, "train", self.train_batches * self.batch_size
        )
        val_images = None if self.val_batches is None else self.val_batches * self.eval_batch_size
        self.val_x, self.val_y = _split_tensors(datamodule, "val", val_images)
        self.class_weights = pl_module.loss_weights.detach().cpu().clone()
        # the plain eager net a PyTorch user writes: same initial weights, NCHW, no compile
        self.bare_net = copy.deepcopy(pl_module.net).to(memory_format=torch.contiguous_format)
        self.bare_optimizer = torch.optim.Adam(self.bare_net.parameters(), lr=1e-3)
        self.keras = None
        if SideBySide.keras_factory is not None:
            self.keras = SideBySide.keras_factory(self.precision, pl_module.net.in_channels)
            self.keras_data = _keras_arrays(
                self.train_x, self.train_y, self.val_x, self.val_y, len(self.class_weights)
            )

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            now = time.perf_counter()
            self.times["train.py"].train.append(now - self._start)
            self._start = now

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.times["train.py"].val.append(time.perf_counter() - self._start)
            self.times["train.py"].val_acc = float(trainer.callback_metrics["val/acc"])

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        others = [self._keras_epoch, self._bare_epoch] if self.keras else [self._bare_epoch]
        if trainer.current_epoch % 2:
            others.reverse()
        for run_epoch in others:
            run_epoch()

    def _keras_epoch(self) -> None:
        """One ``fit`` epoch with validation, timed by a Keras callback."""
        import keras

        times = self.times["Keras"]

        class KerasTimer(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
                self.start = time.perf_counter()

            def on_test_begin(self, logs: dict | None = None) -> None:
                self.val_start = time.perf_counter()
                times.train.append(self.val_start - self.start)

            def on_test_end(self, logs: dict | None = None) -> None:
                times.val.append(time.perf_counter() - self.val_start)

        train_x, train_y, val_x, val_y = self.keras_data
        history = self.keras.fit(
            train_x,
            train_y,
            batch_size=self.batch_size,
            epochs=1,
            validation_data=(val_x, val_y),
            validation_batch_size=self.eval_batch_size,
            class_weight=dict(enumerate(self.class_weights.tolist())),
            callbacks=[KerasTimer()],
            verbose=0,
        )
        times.val_acc = float(history.history["val_accuracy"][-1])

    def _bare_epoch(self) -> None:
        """One shuffled epoch of forward+backward+step, then validation, in plain eager PyTorch."""
        times = self.times["bare PyTorch"]
        autocast = torch.autocast("cpu", torch.bfloat16, enabled=self.precision == "bf16")
        net = self.bare_net.train()
        start = time.perf_counter()
        order = torch.randperm(len(self.train_y))
        for first in range(0, len(order), self.batch_size):
            rows = order[first : first + self.batch_size]
            with autocast:
                loss = F.cross_entropy(
                    net(self.train_x[rows]), self.train_y[rows], weight=self.class_weights
                )
            self.bare_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.bare_optimizer.step()
        val_start = time.perf_counter()
        times.train.append(val_start - start)
        net.eval()
        correct = 0
        with torch.inference_mode(), autocast:
            for first in range(0, len(self.val_y), self.eval_batch_size):
                logits = net(self.val_x[first : first + self.eval_batch_size])
                correct += int((logits.argmax(1) == self.val_y[first : first + len(logits)]).sum())
        times.val.append(time.perf_counter() - val_start)
        times.val_acc = correct / len(self.val_y)


def _split_tensors(
    datamodule: pl.LightningDataModule, split: str, images: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The normalised (N, C, 48, 48) images and labels of ``split`` in file order, the first
    ``images`` of them (all for None)."""
    batches = list(datamodule.dataloader(split))
    x = torch.cat([images for images, _ in batches])[:images]
    y = torch.cat([labels for _, labels in batches])[:images]
    return x.contiguous(), y


def _keras_arrays(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    num_classes: int,
) -> tuple[np.ndarray, ...]:
    """The same images as NHWC float32 arrays and one-hot labels, as the notebook feeds Keras."""
    eye = np.eye(num_classes, dtype=np.float32)
    return (
        np.ascontiguousarray(train_x.permute(0, 2, 3, 1).numpy()),
        eye[train_y.numpy()],
        np.ascontiguousarray(val_x.permute(0, 2, 3, 1).numpy()),
        eye[val_y.numpy()],
    )


def _keras_factory(threads: int):
    """The Keras net builder with TensorFlow held to ``threads`` threads, or None without Keras."""
    try:
        import tensorflow as tf
        from keras_reference_nets import KERAS_NETS
    except ImportError:
        return None
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    return KERAS_NETS


def _rate(images: int, seconds: list[float]) -> float:
    return images / statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--csv", required=True, help="fer2013.csv or fer2013.csv.gz")
    parser.add_argument("--net", choices=("baseline", "deep"), default="baseline")
    parser.add_argument("--precision", choices=tuple(PRECISIONS), default="fp32")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per side, the first untimed")
    parser.add_argument("--train-batches", type=int, default=100, help="training batches/epoch")
    parser.add_argument("--val-batches", type=int, default=None, help="default: all of PublicTest")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-keras", action="store_true", help="the two PyTorch sides only")
    args, extra = parser.parse_known_args()
    extra = [item for item in extra if item != "--"]
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first one is not timed)")
    torch.set_num_threads(args.threads)
    nets = None if args.no_keras else _keras_factory(args.threads)
    SideBySide.keras_factory = None if nets is None else nets[args.net]

    cfg = train_with_callback(
        "side_by_side",
        SideBySide,
        {
            "precision": args.precision,
            "train_batches": args.train_batches,
            "val_batches": "null" if args.val_batches is None else args.val_batches,
        },
        [
            f"model={args.net}",
            "data=fer2013",
            f"data.csv_path={args.csv}",
            f"data.batch_size={args.batch_size}",
            "data.augment=null",
            "data.class_weighting=balanced",
            f"trainer.precision={PRECISIONS[args.precision]}",
            f"trainer.max_epochs={args.epochs}",
            f"trainer.limit_train_batches={args.train_batches}",
            f"trainer.limit_val_batches={args.val_batches or 'null'}",
            "+trainer.num_sanity_val_steps=0",
            "~callbacks.model_checkpoint",
            "~callbacks.early_stopping",
            *extra,
        ],
    )
    timed = SideBySide.latest
    train_images, val_images = len(timed.train_y), len(timed.val_y)
    sides = [side for side in SIDES if timed.times[side].train]
    rates = {
        side: (
            _rate(train_images, timed.times[side].train[1:]),
            _rate(val_images, timed.times[side].val[1:]),
        )
        for side in sides
    }
    reference = "Keras" if "Keras" in rates else "bare PyTorch"

    print(f"`python {shlex.join(sys.argv)}`  ")
    versions = f"torch {torch.__version__}, Lightning {pl.__version__}"
    if "Keras" in rates:
        import keras
        import tensorflow as tf

        versions += f", Keras {keras.__version__} on TensorFlow {tf.__version__}"
    print(
        f"net {args.net}, {args.precision} (train.py trainer.precision={cfg.trainer.precision}, "
        f"channels_last={cfg.model.channels_last}), batch {args.batch_size}, validation batch "
        f"{timed.eval_batch_size}, {train_images} training and {val_images} validation images "
        f"per epoch, {args.threads} threads, {os.cpu_count()} CPUs; {versions}; medians of "
        f"epochs 2-{args.epochs}, interleaved\n"
    )
    print(
        f"| side | training images/s | validation images/s | training vs {reference} | "
        f"validation vs {reference} | last val acc |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for side in sorted(sides, key=lambda side: side != reference):  # the reference first
        train_rate, val_rate = rates[side]
        print(
            f"| {side} | {train_rate:,.0f} | {val_rate:,.0f} | "
            f"{train_rate / rates[reference][0]:.2f} | {val_rate / rates[reference][1]:.2f} | "
            f"{timed.times[side].val_acc:.3f} |"
        )


if __name__ == "__main__":
    main()
