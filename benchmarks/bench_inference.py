"""Benchmark: inference images/s of each net at batch 1 and batch 256.

    python benchmarks/bench_inference.py --models baseline deep resnet --device cpu

Each net is built from conf/model/<name>.yaml (its own input channels), put in eval mode and run
under `torch.inference_mode()` on random 48x48 input. The calls are interleaved: each round calls
every (net, batch size) pair once, so that a drift of the machine's speed over minutes (this VM's
drifts up to 2x) affects every pair alike. After --warmup rounds, the median of --repeats timed
calls per pair gives images/s. Prints a markdown table and this command line.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import tempfile
import time

import hydra
import torch

from fer_lightning.classes import IMAGE_SIZE
from fer_lightning.config import compose_config


def call_seconds(net: torch.nn.Module, batch: torch.Tensor) -> float:
    """Wall time of one inference call of `net` on `batch`."""
    synchronize = torch.cuda.synchronize if batch.is_cuda else (lambda: None)
    with torch.inference_mode():
        synchronize()
        start = time.perf_counter()
        net(batch)
        synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["baseline", "deep", "resnet"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 256])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()

    device = torch.device(args.device)
    nets, parameters = {}, {}
    with tempfile.TemporaryDirectory() as run_dir:
        for model in args.models:
            net_cfg = compose_config("train", run_dir, [f"model={model}"]).model.net
            nets[model] = hydra.utils.instantiate(net_cfg).to(device).eval()
            parameters[model] = sum(parameter.numel() for parameter in nets[model].parameters())
    batches = {
        (model, size): torch.randn(size, net.in_channels, IMAGE_SIZE, IMAGE_SIZE, device=device)
        for model, net in nets.items()
        for size in args.batch_sizes
    }
    seconds: dict[tuple[str, int], list[float]] = {pair: [] for pair in batches}
    for round_index in range(args.warmup + args.repeats):
        for (model, size), batch in batches.items():
            elapsed = call_seconds(nets[model], batch)
            if round_index >= args.warmup:
                seconds[model, size].append(elapsed)

    print(f"`python {shlex.join(sys.argv)}`  ")
    print(
        f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"medians of {args.repeats} interleaved rounds after {args.warmup} warm-up rounds\n"
    )
    print("| model | parameters | " + " | ".join(f"batch {b} images/s" for b in args.batch_sizes))
    print("|---|---:|" + "---:|" * len(args.batch_sizes))
    for model in args.models:
        rates = [size / statistics.median(seconds[model, size]) for size in args.batch_sizes]
        print(f"| {model} | {parameters[model]:,} | " + " | ".join(f"{r:,.0f}" for r in rates))


if __name__ == "__main__":
    main()
