"""Benchmark: which CPU settings train and evaluate a net fastest (eager, channels-last, compiled).

    python benchmarks/bench_cpu_settings.py --net baseline
    python benchmarks/bench_cpu_settings.py --net deep --precision bf16 --eval-batch-sizes 256 1024

Each setting gets its own copy of one net (same initial weights): ``eager`` (NCHW), ``channels
last`` (NHWC weights, as ``model.channels_last=true``), ``compiled`` (``torch.compile``) and both.
A round times, for every setting in turn, ``--steps`` training steps (forward, class-weighted
cross-entropy, backward, Adam) at batch ``--batch-size`` and the evaluation of ``--eval-images``
images under ``torch.inference_mode`` at each of ``--eval-batch-sizes``. Rounds interleave the
settings, so a shared CPU's drift hits them alike; the table shows medians over the rounds after
the first (compilation, warm-up) and the first round's extra seconds, what compiling costs a
short run. The images are random normalised pixels: speed does not depend on their content.
"""

from __future__ import annotations

import argparse
import copy
import shlex
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from fer_lightning.classes import IMAGE_SIZE, NUM_CLASSES
from fer_lightning.models import BaselineCNN, DeepConcatNet

NETS: dict[str, Callable[[], nn.Module]] = {
    "baseline": lambda: BaselineCNN(in_channels=1),
    "deep": lambda: DeepConcatNet(in_channels=3),
}
SETTINGS = {
    "eager": (False, False),
    "channels last": (True, False),
    "compiled": (False, True),
    "compiled + channels last": (True, True),
}


class Setting:
    """One net copy run one way: its training step and its evaluation forward."""

    def __init__(self, net: nn.Module, channels_last: bool, compiled: bool, bf16: bool) -> None:
        self.net = net.to(memory_format=torch.channels_last) if channels_last else net
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=1e-3)
        self.forward = torch.compile(self.net) if compiled else self.net
        self.bf16 = bf16

    def train_steps(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
        self.net.train()
        start = time.perf_counter()
        for images, labels in batches:
            with torch.autocast("cpu", torch.bfloat16, enabled=self.bf16):
                loss = F.cross_entropy(self.forward(images), labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        return time.perf_counter() - start

    def evaluate(self, images: torch.Tensor, batch_size: int) -> float:
        self.net.eval()
        start = time.perf_counter()
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=self.bf16):
            for first in range(0, len(images), batch_size):
                self.forward(images[first : first + batch_size]).float().softmax(1)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--net", choices=tuple(NETS), default="baseline")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--rounds", type=int, default=5, help="the first one is not in the medians")
    parser.add_argument("--steps", type=int, default=20, help="training steps per round")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--eval-images", type=int, default=2048)
    parser.add_argument("--eval-batch-sizes", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--settings", nargs="+", choices=tuple(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.rounds < 2:
        parser.error("--rounds must be at least 2 (the first one is not timed)")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = NETS[args.net]()
    shape = (net.in_channels, IMAGE_SIZE, IMAGE_SIZE)
    batches = [
        (torch.randn(args.batch_size, *shape), torch.randint(0, NUM_CLASSES, (args.batch_size,)))
        for _ in range(args.steps)
    ]
    eval_images = torch.randn(args.eval_images, *shape)
    bf16 = args.precision == "bf16"
    settings = {
        name: Setting(copy.deepcopy(net), *SETTINGS[name], bf16=bf16) for name in args.settings
    }
    train_times: dict[str, list[float]] = {name: [] for name in settings}
    eval_times = {(name, size): [] for name in settings for size in args.eval_batch_sizes}
    for _ in range(args.rounds):
        for name, setting in settings.items():
            train_times[name].append(setting.train_steps(batches))
            for size in args.eval_batch_sizes:
                eval_times[name, size].append(setting.evaluate(eval_images, size))

    train_images = args.steps * args.batch_size
    print(f"`python {shlex.join(sys.argv)}`  ")
    print(
        f"net {args.net}, {args.precision}, training batch {args.batch_size}, {args.threads} "
        f"threads, torch {torch.__version__}; medians of rounds 2-{args.rounds} "
        f"({train_images} training and {args.eval_images} evaluated images each), interleaved\n"
    )
    eval_columns = [f"eval images/s at batch {size}" for size in args.eval_batch_sizes]
    print(f"| setting | training images/s | {' | '.join(eval_columns)} | first round's extra s |")
    print("|---|---:|" + "---:|" * len(eval_columns) + "---:|")
    for name in settings:
        rates = [train_images / statistics.median(train_times[name][1:])]
        rates += [
            args.eval_images / statistics.median(eval_times[name, size][1:])
            for size in args.eval_batch_sizes
        ]
        first = train_times[name][0] + sum(
            eval_times[name, size][0] for size in args.eval_batch_sizes
        )
        rest = statistics.median(train_times[name][1:]) + sum(
            statistics.median(eval_times[name, size][1:]) for size in args.eval_batch_sizes
        )
        cells = " | ".join(f"{rate:,.0f}" for rate in rates)
        print(f"| {name} | {cells} | {first - rest:.1f} |")


if __name__ == "__main__":
    main()
