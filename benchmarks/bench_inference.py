"""Benchmark: inference images/s of each net at batch 1 and batch 256.

    python benchmarks/bench_inference.py --models baseline deep resnet --device cpu

Each net is built from conf/model/<name>.yaml (its own input channels), put in eval mode and run
under `torch.inference_mode()` on random 48x48 input; after --warmup calls, the median of --repeats
timed calls gives images/s. Prints a markdown table and this command line.
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


def images_per_second(
    net: torch.nn.Module, batch: torch.Tensor, warmup: int, repeats: int
) -> float:
    """Median throughput of `net` on `batch` over `repeats` timed calls."""
    synchronize = torch.cuda.synchronize if batch.is_cuda else (lambda: None)
    seconds = []
    with torch.inference_mode():
        for index in range(warmup + repeats):
            synchronize()
            start = time.perf_counter()
            net(batch)
            synchronize()
            if index >= warmup:
                seconds.append(time.perf_counter() - start)
    return batch.shape[0] / statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["baseline", "deep", "resnet"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 256])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()

    device = torch.device(args.device)
    rows = []
    with tempfile.TemporaryDirectory() as run_dir:
        for model in args.models:
            net_cfg = compose_config("train", run_dir, [f"model={model}"]).model.net
            net = hydra.utils.instantiate(net_cfg).to(device).eval()
            rates = []
            for batch_size in args.batch_sizes:
                batch = torch.randn(batch_size, net.in_channels, IMAGE_SIZE, IMAGE_SIZE)
                rates.append(images_per_second(net, batch.to(device), args.warmup, args.repeats))
            parameters = sum(parameter.numel() for parameter in net.parameters())
            rows.append((model, parameters, rates))

    print(f"`python {shlex.join(sys.argv)}`  ")
    print(
        f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"medians of {args.repeats} calls after {args.warmup} warm-up calls\n"
    )
    print("| model | parameters | " + " | ".join(f"batch {b} images/s" for b in args.batch_sizes))
    print("|---|---:|" + "---:|" * len(args.batch_sizes))
    for model, parameters, rates in rows:
        print(f"| {model} | {parameters:,} | " + " | ".join(f"{rate:,.0f}" for rate in rates))


if __name__ == "__main__":
    main()
