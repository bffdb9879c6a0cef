"""What the whole-run benchmarks share: their command line, and one run of train.py with a
measuring callback added through the config and nothing else printed or tested."""

from __future__ import annotations

import argparse
import tempfile
from typing import Any

from omegaconf import DictConfig

from fer_lightning.config import compose_config
from fer_lightning.training import train


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
