"""Benchmark: images/s of train.py's real training loop vs a bare forward+backward+step loop.

    python benchmarks/bench_train_loop.py --csv ../shared/fer2013/fer2013.csv.gz --model baseline

The real loop is `fer_lightning.training.train` on the composed train config (its loader, the
batch augmentation after transfer, metrics, logging as configured); validation and the
end-of-epoch checkpoint are left out so that only training steps are timed. The bare loop is a
copy of the same net (same initial weights) with the same optimizer class and settings, stepping
forward+backward+step over preloaded, normalised batches: no augmentation, no DataLoader, no
metrics.

The two loops are interleaved in one process: after the warm-up, every `--block` real steps a
callback runs `--block` bare steps. This VM's CPU speed drifts by up to 2x within minutes, so
timing one loop after the other measured the drift, not the loops. The first `--settle` steps of
every block are left out (caches refill when the loops switch nets). The script prints the median
images/s of both loops, the ratio of those medians, the spread of the per-block ratios and its
own command line. Hydra overrides for the real loop follow `--`, e.g. `-- data.num_workers=1`;
with `trainer.precision=bf16-mixed` the bare loop runs under the same autocast. On a GPU
(`-- trainer=gpu`) the bare loop's batches are preloaded onto it and every step of both loops is
timed up to the moment the device has finished it.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import shlex
import statistics
import sys
import tempfile

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from quiet_run import device_clock

from fer_lightning.config import compose_config
from fer_lightning.training import train

AUTOCAST_DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


class InterleavedTimer(pl.Callback):
    """Times the real loop's steps and, every `block` of them, runs and times `block` bare steps.

    Real steps are timed end to end (data loading and transfer included) between consecutive
    `on_train_batch_end` calls. The latest instance is kept on the class because `train()`
    builds its callbacks from the config.
    """

    latest: InterleavedTimer | None = None

    def __init__(self, warmup: int, block: int, settle: int) -> None:
        self.warmup, self.block, self.settle = warmup, block, settle
        self.real_blocks: list[list[float]] = []
        self.bare_blocks: list[list[float]] = []
        self._last_end: float | None = None
        InterleavedTimer.latest = self

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Copy the net and optimizer settings; preload distinct, unshuffled, unaugmented batches.

        Distinct batches matter: stepping on one batch over and over overfits it within a
        hundred steps, and its vanishing gradients made the bare loop look slower than the real one.
        """
        self.net = copy.deepcopy(pl_module.net).train()  # keeps channels-last weights
        # the real loop's autocast (trainer.precision=bf16-mixed / 16-mixed), so both compute alike
        self.autocast_dtype = AUTOCAST_DTYPES.get(str(trainer.precision))
        self.device_type = pl_module.device.type
        real_optimizer = trainer.optimizers[0]
        self.optimizer = type(real_optimizer)(self.net.parameters(), **real_optimizer.defaults)
        batch_size = trainer.datamodule.hparams.batch_size
        loader = trainer.datamodule.dataloader("train", train=False)
        self.batches = [
            (images[rows].to(pl_module.device), labels[rows].to(pl_module.device))
            for images, labels in loader
            for rows in (
                slice(start, start + batch_size)
                for start in range(0, len(labels) - batch_size + 1, batch_size)
            )
        ]

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: object
    ) -> None:
        now = device_clock(pl_module)
        timed_steps = trainer.global_step - self.warmup  # this step included
        if timed_steps > 0:
            if (timed_steps - 1) % self.block == 0:
                self.real_blocks.append([])
            self.real_blocks[-1].append(now - self._last_end)
            if timed_steps % self.block == 0:
                self.bare_blocks.append(self._bare_block(pl_module, len(self.bare_blocks)))
        self._last_end = device_clock(pl_module)

    def _bare_block(self, pl_module: pl.LightningModule, index: int) -> list[float]:
        """`block` bare steps over the next batches; their durations."""
        durations = []
        with torch.enable_grad():
            for step in range(self.block):
                images, labels = self.batches[(index * self.block + step) % len(self.batches)]
                start = device_clock(pl_module)
                with torch.autocast(
                    self.device_type,
                    dtype=self.autocast_dtype,
                    enabled=self.autocast_dtype is not None,
                ):
                    loss = F.cross_entropy(self.net(images), labels)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                durations.append(device_clock(pl_module) - start)
        return durations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--csv", required=True, help="fer2013.csv or fer2013.csv.gz")
    parser.add_argument("--model", default="baseline", help="a conf/model/<name>.yaml")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=10, help="pairs of timed blocks")
    parser.add_argument("--block", type=int, default=20, help="steps per block")
    parser.add_argument("--settle", type=int, default=2, help="untimed steps per block")
    parser.add_argument("--warmup", type=int, default=10, help="untimed real steps first")
    args, extra = parser.parse_known_args()
    extra = [item for item in extra if item != "--"]
    if not 0 <= args.settle < args.block:
        parser.error("--settle must be at least 0 and less than --block")
    # both loops alike: denormal floats (tiny activations and gradients) slow x86 CPUs by a
    # varying amount that has nothing to do with the loop being measured
    torch.set_flush_denormal(True)

    timer = "+callbacks.interleaved_timer"
    with tempfile.TemporaryDirectory() as run_dir:
        cfg = compose_config(
            "train",
            run_dir,
            [
                f"model={args.model}",
                "data=fer2013",
                f"data.csv_path={args.csv}",
                f"data.batch_size={args.batch_size}",
                "trainer.max_epochs=1",
                f"trainer.limit_train_batches={args.warmup + args.blocks * args.block}",
                "trainer.limit_val_batches=0",
                "test=false",
                "~callbacks.model_checkpoint",
                "~callbacks.early_stopping",
                f"{timer}._target_={__name__}.InterleavedTimer",
                f"{timer}.warmup={args.warmup}",
                f"{timer}.block={args.block}",
                f"{timer}.settle={args.settle}",
                *extra,
            ],
        )
        train(cfg)
    timed = InterleavedTimer.latest
    real_blocks = [block[args.settle :] for block in timed.real_blocks]
    bare_blocks = [block[args.settle :] for block in timed.bare_blocks]
    real_rate = args.batch_size / statistics.median(list(itertools.chain(*real_blocks)))
    bare_rate = args.batch_size / statistics.median(list(itertools.chain(*bare_blocks)))
    block_ratios = sorted(
        statistics.median(bare) / statistics.median(real)
        for real, bare in zip(real_blocks, bare_blocks, strict=True)
    )

    print(f"`python {shlex.join(sys.argv)}`  ")
    print(
        f"model {args.model}, batch {args.batch_size}, precision {cfg.trainer.precision}, "
        f"{len(block_ratios)} interleaved pairs of "
        f"{args.block}-step blocks ({args.settle} settling steps each left out) after "
        f"{args.warmup} warm-up steps; torch {torch.__version__}, {torch.get_num_threads()} "
        "threads; medians of per-step times\n"
    )
    print("| loop | images/s |")
    print("|---|---:|")
    print(f"| bare forward+backward+step | {bare_rate:.0f} |")
    print(f"| train.py (augmentation, loader, metrics, logging) | {real_rate:.0f} |")
    print(f"| ratio train.py / bare | {real_rate / bare_rate:.2f} |")
    print(
        f"| per-block ratios: min / median / max | {block_ratios[0]:.2f} / "
        f"{statistics.median(block_ratios):.2f} / {block_ratios[-1]:.2f} |"
    )


if __name__ == "__main__":
    main()
