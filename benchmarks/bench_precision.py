"""Benchmark: training-step images/s of each net in fp32 and bf16 autocast, NCHW and NHWC weights.

    python benchmarks/bench_precision.py --models baseline deep vgg --device cpu

The four settings are what `trainer.precision` (`32-true` / `bf16-mixed`) and
`model.channels_last` (false / true) choose in train.py. Each (net, setting) cell trains its own
copy of the net, built from conf/model/<name>.yaml with that config's optimizer, on a rotation of
--batches distinct random batches (one batch stepped on over and over is overfitted within a
hundred steps, and its vanishing gradients slow the step with denormal floats; denormals are
flushed as well). The cells are interleaved: each round runs --steps timed steps of every cell
after one untimed step, so a drift of the machine's speed over minutes (this VM's drifts up to 2x)
hits every cell alike. Prints the medians over --rounds rounds after --warmup rounds as a
markdown table, with each setting's speed-up over fp32 NCHW, and this command line.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

import hydra
import torch
import torch.nn.functional as F

from fer_lightning.classes import IMAGE_SIZE
from fer_lightning.config import compose_config

# (name in the table, bf16 autocast, channels-last weights); the first is the reference
SETTINGS = (
    ("fp32", False, False),
    ("fp32 + channels_last", False, True),
    ("bf16-mixed", True, False),
    ("bf16-mixed + channels_last", True, True),
)


class Cell:
    """One net in one setting: its own weights, optimizer and rotation of batches."""

    def __init__(
        self,
        net: torch.nn.Module,
        optimizer_factory: Callable[..., torch.optim.Optimizer],
        batches: list[tuple[torch.Tensor, torch.Tensor]],
        bf16: bool,
        channels_last: bool,
    ) -> None:
        self.net = copy.deepcopy(net).train()
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.optimizer = optimizer_factory(self.net.parameters())
        self.batches = itertools.cycle(batches)
        self.bf16 = bf16
        self.device_type = batches[0][0].device.type

    def step_seconds(self) -> float:
        """Wall time of one forward+backward+step."""
        images, labels = next(self.batches)
        synchronize = torch.cuda.synchronize if images.is_cuda else (lambda: None)
        synchronize()
        start = time.perf_counter()
        with torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=self.bf16):
            loss = F.cross_entropy(self.net(images), labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        synchronize()
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["baseline", "deep", "vgg"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=8, help="distinct batches per cell")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per cell and round")
    args = parser.parse_args()

    torch.set_flush_denormal(True)
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    cells: dict[tuple[str, str], Cell] = {}
    with tempfile.TemporaryDirectory() as run_dir:
        for model in args.models:
            model_cfg = compose_config("train", run_dir, [f"model={model}"]).model
            net = hydra.utils.instantiate(model_cfg.net).to(device)
            optimizer_factory = hydra.utils.instantiate(model_cfg.optimizer)
            shape = (args.batch_size, net.in_channels, IMAGE_SIZE, IMAGE_SIZE)
            batches = [
                (
                    torch.randn(shape, generator=generator).to(device),
                    torch.randint(0, net.num_classes, (args.batch_size,), generator=generator).to(
                        device
                    ),
                )
                for _ in range(args.batches)
            ]
            for name, bf16, channels_last in SETTINGS:
                cells[model, name] = Cell(net, optimizer_factory, batches, bf16, channels_last)

    seconds: dict[tuple[str, str], list[float]] = {key: [] for key in cells}
    for round_index in range(args.warmup + args.rounds):
        for key, cell in cells.items():
            cell.step_seconds()  # the switch from the previous cell's net refills the caches
            times = [cell.step_seconds() for _ in range(args.steps)]
            if round_index >= args.warmup:
                seconds[key] += times

    print(f"`python {shlex.join(sys.argv)}`  ")
    print(
        f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"batch {args.batch_size}; medians of {args.rounds} interleaved rounds of {args.steps} "
        f"steps per cell after {args.warmup} warm-up round(s)\n"
    )
    print("| model | setting | images/s | speed-up vs fp32 |")
    print("|---|---|---:|---:|")
    for model in args.models:
        reference = statistics.median(seconds[model, SETTINGS[0][0]])
        for name, _, _ in SETTINGS:
            median = statistics.median(seconds[model, name])
            rate, speed_up = args.batch_size / median, reference / median
            print(f"| {model} | {name} | {rate:,.0f} | {speed_up:.2f}x |")


if __name__ == "__main__":
    main()
