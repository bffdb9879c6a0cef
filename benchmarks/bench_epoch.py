"""Benchmark: wall time of whole epochs of train.py's real run (training, validation, checkpoint).

    python benchmarks/bench_epoch.py --csv ../shared/fer2013/fer2013.csv.gz -- trainer=gpu

Runs `fer_lightning.training.train` on the composed experiment (`--experiment`, by default
deep_fer2013) for `--epochs` epochs on the full splits, with the test, the progress bar and the
model summary left out, and times every epoch from its start to the start of the next (the last
one to the end of fit): training steps, batch augmentation, validation on PublicTest, metrics,
logging and the checkpoint writes all count, as in a user's run. On a GPU the clock waits for the
device before each reading. The first epoch carries one-off costs (cuDNN autotuning, allocator
warm-up, lazy initialisation), so the script reports it apart from the median of the rest. Hydra
overrides for the run follow `--` (`trainer=gpu`, `data.batch_size=128`).
"""

from __future__ import annotations

import itertools
import shlex
import statistics
import sys

import pytorch_lightning as pl
import torch
from quiet_run import (
    device_clock,
    device_name,
    parse_with_overrides,
    run_parser,
    train_with_callback,
)


class EpochTimer(pl.Callback):
    """Records epoch boundaries, validation durations (the loop, its metrics and logging) and
    training images per epoch.

    The latest instance is kept on the class because `train()` builds its callbacks from the
    config.
    """

    latest: EpochTimer | None = None

    def __init__(self) -> None:
        self.boundaries: list[float] = []
        self.validation_seconds: list[float] = []
        self.training_images: list[int] = []
        self.device = "cpu"
        self._validation_start = 0.0
        EpochTimer.latest = self

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.device = device_name(pl_module)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.boundaries.append(device_clock(pl_module))
        self.training_images.append(0)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        self.training_images[-1] += len(batch[-1])

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._validation_start = device_clock(pl_module)

    # on_validation_end, not on_validation_epoch_end: Lightning calls callbacks' epoch-end hooks
    # before the system's, which computes and logs the metrics. Checkpoint writes, which
    # Lightning runs after every other callback, count with the training share.
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.validation_seconds.append(device_clock(pl_module) - self._validation_start)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.boundaries.append(device_clock(pl_module))

    @property
    def epoch_seconds(self) -> list[float]:
        """Wall time of each epoch, validation and checkpoint included."""
        return [end - start for start, end in itertools.pairwise(self.boundaries)]


def main() -> None:
    parser = run_parser(__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs to time, the first included")
    args, extra = parse_with_overrides(parser)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch is warm-up")

    run = [f"experiment={args.experiment}", f"data.csv_path={args.csv}"]
    cfg = train_with_callback(
        "epoch_timer", EpochTimer, {}, [*run, f"trainer.max_epochs={args.epochs}", *extra]
    )
    timer = EpochTimer.latest
    epochs = timer.epoch_seconds
    later = epochs[1:]
    median = statistics.median(later)
    median_validation = statistics.median(timer.validation_seconds[1:])
    images = timer.training_images[-1]

    print(f"`python {shlex.join(sys.argv)}`  ")
    print(
        f"experiment {args.experiment}, batch {cfg.data.batch_size}, {images:,} training images "
        f"per epoch; {timer.device}; torch {torch.__version__}\n"
    )
    print("| epoch | wall s | of which validation s | training images/s |")
    print("|---|---:|---:|---:|")
    for number, (seconds, validation) in enumerate(
        zip(epochs, timer.validation_seconds, strict=True), start=1
    ):
        label = f"{number} (warm-up)" if number == 1 else str(number)
        rate = timer.training_images[number - 1] / (seconds - validation)
        print(f"| {label} | {seconds:.2f} | {validation:.2f} | {rate:,.0f} |")
    print(
        f"| **median of epochs 2-{len(epochs)}** | **{median:.2f}** | {median_validation:.2f} | "
        f"{images / (median - median_validation):,.0f} |"
    )


if __name__ == "__main__":
    main()
