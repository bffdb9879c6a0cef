"""Profile: where the time of train.py's training steps goes, host against device, op by op.

    python benchmarks/profile_steps.py --csv ../shared/fer2013/fer2013.csv.gz -- trainer=gpu

Runs `fer_lightning.training.train` on the composed experiment (`--experiment`, by default
deep_fer2013) and records steps `--skip` + 1 to `--skip` + `--steps` of its first epoch with
torch.profiler (the CPU, and CUDA when the run is on a GPU): the whole step as a user's run makes
it (batch transfer and augmentation, forward, backward, optimizer, EMA, metrics, logging). The
first steps are skipped: they carry one-off costs (cuDNN heuristics, allocator warm-up, lazy
initialisation). Prints, per step: wall time, the device's busy time (on a GPU; far below the wall
time means the host is the bottleneck), kernel launches, the `.item()` reads and synchronizes
(each a host wait on a GPU) and the aten op calls; then the ops that cost most. `--trace FILE`
also writes a Chrome trace (chrome://tracing, Perfetto). Hydra overrides for the run follow `--`.
"""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Sequence

import pytorch_lightning as pl
import torch
from quiet_run import (
    device_clock,
    device_name,
    parse_with_overrides,
    run_parser,
    train_with_callback,
)
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

# host-side events: a kernel launch each, and the calls that make the host wait for the device
LAUNCHES = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx")
HOST_WAITS = ("aten::_local_scalar_dense", "cudaStreamSynchronize", "cudaDeviceSynchronize")


class StepProfiler(pl.Callback):
    """Profiles training steps ``skip`` to ``skip + steps - 1`` (0-based) of the first epoch.

    The latest instance is kept on the class because `train()` builds its callbacks from the
    config.
    """

    latest: StepProfiler | None = None

    def __init__(self, skip: int, steps: int) -> None:
        self.skip = skip
        self.steps = steps
        self.profiler: profile | None = None
        self.wall_seconds = 0.0
        self.device = "cpu"
        self.on_gpu = False
        self._start = 0.0
        StepProfiler.latest = self

    def _record(self, pl_module: pl.LightningModule) -> None:
        """Start the profiler and the clock, once the device has finished the work so far."""
        self.on_gpu = pl_module.device.type == "cuda"
        self.device = device_name(pl_module)
        activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if self.on_gpu else [])]
        self.profiler = profile(activities=activities)
        device_clock(pl_module)
        self.profiler.start()
        self._start = time.perf_counter()

    # Lightning fetches, moves and augments a batch before on_train_batch_start: the window opens
    # at the end of the step before the first recorded one, so each recorded step has its batch.
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == 0 and self.skip == 0:
            self._record(pl_module)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        if trainer.current_epoch != 0:
            return
        if batch_idx == self.skip - 1:
            self._record(pl_module)
        elif self.profiler is not None and batch_idx == self.skip + self.steps - 1:
            self.wall_seconds = device_clock(pl_module) - self._start
            self.profiler.stop()


def count(events: Sequence, names: Sequence[str]) -> int:
    """How many times the events named in ``names`` ran."""
    return sum(event.count for event in events if event.key in names)


def main() -> None:
    parser = run_parser(__doc__.split("\n")[0])
    parser.add_argument("--skip", type=int, default=20, help="steps left out before recording")
    parser.add_argument("--steps", type=int, default=20, help="steps recorded")
    parser.add_argument("--rows", type=int, default=25, help="ops listed")
    parser.add_argument("--trace", help="also write a Chrome trace of the recorded steps here")
    args, extra = parse_with_overrides(parser)
    if args.skip < 0 or args.steps < 1:
        parser.error("--skip must be >= 0 and --steps >= 1")

    run = [f"experiment={args.experiment}", f"data.csv_path={args.csv}"]
    limits = [
        "trainer.max_epochs=1",
        f"trainer.limit_train_batches={args.skip + args.steps}",
        "trainer.limit_val_batches=1",
    ]
    settings = {"skip": args.skip, "steps": args.steps}
    cfg = train_with_callback("step_profiler", StepProfiler, settings, [*run, *limits, *extra])
    recorder = StepProfiler.latest
    if recorder is None or recorder.wall_seconds == 0.0:
        sys.exit(f"the run had fewer than {args.skip + args.steps} training steps")
    events = recorder.profiler.key_averages()
    if args.trace:
        recorder.profiler.export_chrome_trace(args.trace)

    on_gpu = recorder.on_gpu
    steps = args.steps
    rows = {"wall ms": f"{recorder.wall_seconds * 1e3 / steps:.2f}"}
    if on_gpu:
        busy_ms = device_busy_us(events) / 1e3
        rows["device busy ms"] = f"{busy_ms / steps:.2f}"
        rows["kernel launches"] = f"{count(events, LAUNCHES) / steps:.1f}"
    rows["`.item()` reads and synchronizes (host waits on a GPU)"] = (
        f"{count(events, HOST_WAITS) / steps:.1f}"
    )
    rows["aten op calls (nested ones too)"] = f"{count(events, aten_ops(events)) / steps:.1f}"
    print(f"`python {shlex.join(sys.argv)}`  ")
    print(
        f"experiment {args.experiment}, batch {cfg.data.batch_size}, steps {args.skip + 1}-"
        f"{args.skip + steps} of the first epoch; {recorder.device}; torch {torch.__version__}\n"
    )
    print("| per step | value |")
    print("|---|---:|")
    for name, value in rows.items():
        print(f"| {name} | {value} |")
    sort_by = "self_device_time_total" if on_gpu else "self_cpu_time_total"
    print(f"\nops by {sort_by}, all {steps} steps:\n")
    print("```")
    print(events.table(sort_by=sort_by, row_limit=args.rows))
    print("```")


def device_busy_us(events: Sequence) -> float:
    """The kernels' own time. Only the device's events count: the profiler also credits each
    kernel's time to the CPU op that launched it, so summing every event counts it twice."""
    return sum(
        event.self_device_time_total
        for event in events
        if event.device_type == DeviceType.CUDA and not event.is_user_annotation
    )


def aten_ops(events: Sequence) -> list[str]:
    """The names of the aten ops among the profiled events."""
    return [event.key for event in events if event.key.startswith("aten::")]


if __name__ == "__main__":
    main()
