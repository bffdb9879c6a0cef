"""What the whole-run benchmarks share: their command line, one run of train.py with a measuring
callback added through the config and nothing else printed or tested, and that callback's clock and
device name."""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from fer_lightning.config import compose_config
from fer_lightning.training import train


def run_parser(description: str) -> argparse.ArgumentParser:
    """The arguments every whole-run benchmark takes: the csv and the experiment recipe."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--csv", required=True, help="fer2013.csv or fer2013.csv.gz")
    parser.add_argument(
        "--experiment", default="deep_fer2013", help="a conf/experiment/<name>.yaml recipe"
    )
    return parser


def parse_with_overrides(parser: argparse.ArgumentParser) -> tuple[argparse.Namespace, list[str]]:
    """The script's own arguments, and the Hydra overrides for the run (after ``--``)."""
    args, extra = parser.parse_known_args()
    return args, [item for item in extra if item != "--"]


def train_with_callback(
    name: str, callback: type, settings: dict[str, Any], overrides: list[str]
) -> DictConfig:
    """Run `fer_lightning.training.train` once in a temporary run dir, with ``callback(**settings)``
    added as ``callbacks.<name>`` and the test, progress bar and model summary left out; returns
    the composed config."""
    target = f"{callback.__module__}.{callback.__qualname__}"
    with tempfile.TemporaryDirectory() as run_dir:
        cfg = compose_config(
            "train",
            run_dir,
            [
                "test=false",
                "~callbacks.rich_progress_bar",
                "+trainer.enable_progress_bar=false",
                "+trainer.enable_model_summary=false",
                f"+callbacks.{name}._target_={target}",
                *(f"+callbacks.{name}.{key}={value}" for key, value in settings.items()),
                *overrides,
            ],
        )
        train(cfg)
    return cfg


def device_clock(pl_module: pl.LightningModule) -> float:
    """``time.perf_counter()`` once the module's device has finished its queued work."""
    if pl_module.device.type == "cuda":
        torch.cuda.synchronize(pl_module.device)
    return time.perf_counter()


def device_name(pl_module: pl.LightningModule) -> str:
    """The GPU's name, or "cpu, N threads"."""
    if pl_module.device.type == "cuda":
        return torch.cuda.get_device_name(pl_module.device)
    return f"{pl_module.device.type}, {torch.get_num_threads()} threads"
