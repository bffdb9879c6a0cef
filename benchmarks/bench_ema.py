"""Benchmark: one EMA update of each net's weights, Lightning's per-tensor update vs the fused one.

    python benchmarks/bench_ema.py --models baseline deep vgg --device cpu

`callbacks=[default,ema]` averages the weights after every optimizer step. Lightning's
EMAWeightAveraging hands torch's AveragedModel a per-tensor ``avg_fn``: three kernels and two
temporaries per parameter and buffer. `fer_lightning.callbacks.EMAWeights` applies the fused
``multi_avg_fn`` (one ``_foreach_lerp_`` per device and dtype) without reading its update counter
back. Each callback builds its average in its own fit ``setup``, over a FERSystem holding the net
from conf/model/<name>.yaml, and both are updated from the same moving copy of the weights. The
two are interleaved: each round times --updates updates of each after one untimed update. Prints
the median milliseconds per update, their ratio, and this command.
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
from pytorch_lightning.callbacks import EMAWeightAveraging
from torch.optim.swa_utils import AveragedModel

from fer_lightning.callbacks import EMAWeights
from fer_lightning.config import compose_config
from fer_lightning.system import FERSystem


def update_seconds(average: AveragedModel, model: torch.nn.Module) -> float:
    """Wall time of one update of ``average`` from ``model`` (the device waited for)."""
    synchronize = torch.cuda.synchronize if next(model.parameters()).is_cuda else (lambda: None)
    synchronize()
    start = time.perf_counter()
    average.update_parameters(model)
    synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["baseline", "deep", "vgg"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--updates", type=int, default=10, help="timed updates per round")
    args = parser.parse_args()

    torch.set_flush_denormal(True)  # as in training's steady state: tiny EMA terms stay fast
    device = torch.device(args.device)
    callbacks = {
        "Lightning (per tensor)": EMAWeightAveraging(device=device),
        "EMAWeights (fused)": EMAWeights(device=device),
    }
    print(f"`python {shlex.join(sys.argv)}`  ")
    print(
        f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads; medians "
        f"of {args.rounds} interleaved rounds of {args.updates} updates\n"
    )
    print("| model | tensors | per-tensor ms | fused ms | speed-up |")
    print("|---|---:|---:|---:|---:|")
    for model in args.models:
        with tempfile.TemporaryDirectory() as run_dir:
            model_cfg = compose_config("train", run_dir, [f"model={model}"]).model
        net = hydra.utils.instantiate(model_cfg.net)
        system = FERSystem(net).to(device)  # what the callbacks average in training
        averages = {}
        for name, callback in callbacks.items():
            callback.setup(None, system, "fit")  # builds the callback's AveragedModel
            averages[name] = callback._average_model
        seconds: dict[str, list[float]] = {name: [] for name in averages}
        for _ in range(args.rounds):
            with torch.no_grad():  # the net moves between updates, as training moves it
                for parameter in net.parameters():
                    parameter.add_(torch.randn_like(parameter), alpha=1e-3)
            for name, average in averages.items():
                update_seconds(average, system)
                seconds[name] += [update_seconds(average, system) for _ in range(args.updates)]
        per_tensor, fused = (statistics.median(seconds[name]) for name in averages)
        tensors = len([*system.parameters(), *system.buffers()])  # what each update averages
        print(
            f"| {model} | {tensors} | {per_tensor * 1e3:.2f} | {fused * 1e3:.2f} | "
            f"{per_tensor / fused:.2f}x |"
        )


if __name__ == "__main__":
    main()
