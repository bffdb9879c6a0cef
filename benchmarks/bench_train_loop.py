"""Benchmark: images/s of train.py's real training loop vs a bare forward+backward+step loop.

    python benchmarks/bench_train_loop.py --csv ../shared/fer2013/fer2013.csv.gz --model baseline

Both loops run in one process with the same net (conf/model/<model>.yaml), batch size and optimizer.
The bare loop steps over preloaded, normalised batches: no augmentation, no DataLoader, no
metrics. The real loop is `fer_lightning.training.train` on the composed train config (its
loader, the batch augmentation after transfer, metrics, logging as configured); validation and the
end-of-epoch checkpoint are left out so that only training steps are timed. A callback records
per-step wall times after --warmup steps; the script prints the median images/s of both loops,
their ratio and its own command line. Hydra overrides for the real loop follow `--`, e.g.
`-- data.num_workers=1`.
"""

from __future__ import annotations

import argparse
import itertools
import shlex
import statistics
import sys
import tempfile
import time

import hydra
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from fer_lightning.config import compose_config
from fer_lightning.training import build_data_and_system, train


class StepTimer(pl.Callback):
    """Wall time at the end of every training step (data loading included); the latest
    instance is kept on the class because `train()` builds its callbacks from the config."""

    latest: StepTimer | None = None

    def __init__(self) -> None:
        self.ends: list[float] = []
        StepTimer.latest = self

    def on_train_batch_end(self, *args: object) -> None:
        self.ends.append(time.perf_counter())


def step_seconds(ends: list[float], warmup: int) -> list[float]:
    """Durations between consecutive step ends, the first `warmup` steps left out."""
    timed = ends[warmup:]
    return [later - earlier for earlier, later in itertools.pairwise(timed)]


def bare_loop(cfg: DictConfig, steps: int, warmup: int) -> list[float]:
    """Forward+backward+step of the same net and optimizer over preloaded, distinct batches.

    Distinct batches matter: stepping on one batch over and over overfits it within a hundred
    steps, and its vanishing gradients made the bare loop look slower than the real one.
    """
    datamodule, _ = build_data_and_system(cfg)
    loader = datamodule.dataloader("train", train=False)  # unshuffled, not augmented
    batch_size = cfg.data.batch_size
    batches = [
        (images[start : start + batch_size], labels[start : start + batch_size])
        for images, labels in loader
        for start in range(0, len(labels) - batch_size + 1, batch_size)
    ][: warmup + steps]
    net = hydra.utils.instantiate(cfg.model.net).train()
    optimizer = hydra.utils.instantiate(cfg.model.optimizer)(params=net.parameters())
    ends = [time.perf_counter()]
    for images, labels in batches:
        loss = F.cross_entropy(net(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        ends.append(time.perf_counter())
    return step_seconds(ends, warmup)


def real_loop(cfg: DictConfig, steps: int, warmup: int) -> list[float]:
    """`train()` itself for warmup + steps training batches, timed by StepTimer."""
    train(cfg)
    return step_seconds(StepTimer.latest.ends, warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--csv", required=True, help="fer2013.csv or fer2013.csv.gz")
    parser.add_argument("--model", default="baseline", help="a conf/model/<name>.yaml")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100, help="timed steps per loop")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    args, extra = parser.parse_known_args()
    extra = [item for item in extra if item != "--"]
    # both loops alike: denormal floats (tiny activations and gradients) slow x86 CPUs by a
    # varying amount that has nothing to do with the loop being measured
    torch.set_flush_denormal(True)

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
                f"trainer.limit_train_batches={args.warmup + args.steps + 1}",
                "trainer.limit_val_batches=0",
                "test=false",
                "~callbacks.model_checkpoint",
                "~callbacks.early_stopping",
                f"+callbacks.step_timer._target_={__name__}.StepTimer",
                *extra,
            ],
        )
        real = real_loop(cfg, args.steps, args.warmup)
        bare = bare_loop(cfg, args.steps, args.warmup)

    real_rate = args.batch_size / statistics.median(real)
    bare_rate = args.batch_size / statistics.median(bare)
    print(f"`python {shlex.join(sys.argv)}`  ")
    print(
        f"model {args.model}, batch {args.batch_size}, {args.steps} timed steps after "
        f"{args.warmup} warm-up steps; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; medians of per-step times\n"
    )
    print("| loop | images/s |")
    print("|---|---:|")
    print(f"| bare forward+backward+step | {bare_rate:.0f} |")
    print(f"| train.py (augmentation, loader, metrics, logging) | {real_rate:.0f} |")
    print(f"| ratio train.py / bare | {real_rate / bare_rate:.2f} |")


if __name__ == "__main__":
    main()
