"""Trained weights shipped inside the package, loaded offline as `ckpt_path=pretrained:<name>`.

Each `<name>.pt` is a slimmed checkpoint: the system's state dict (fp32, or fp16 with `--fp16` when
the weights fit and accuracy moves < 0.1 pt), its primitive hyper-parameters, the TTA mode chosen
on PublicTest and the training run's resolved config, so the normal checkpoint loader rebuilds it
with torch's `weights_only` loader and no other file.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import ListConfig

from fer_lightning.errors import FERUserError

PREFIX = "pretrained:"
WEIGHTS_DIR = Path(__file__).resolve().parent


def available() -> list[str]:
    """Names of the shipped weights."""
    return sorted(path.stem for path in WEIGHTS_DIR.glob("*.pt"))


def is_shipped(ckpt_path: str | os.PathLike) -> bool:
    """Whether `ckpt_path` names shipped weights (`pretrained:<name>`) rather than a file."""
    return str(ckpt_path).startswith(PREFIX)


def resolve(ckpt_path: str | os.PathLike | list[str]) -> Path:
    """`pretrained:<name>` as the shipped file's path; any other value as a plain path."""
    if isinstance(ckpt_path, ListConfig | list | tuple):  # an ensemble's members, not one model
        raise FERUserError(
            f"got a list of checkpoints ({list(ckpt_path)}); only evaluate.py and predict take "
            "one (an ensemble), here name a single checkpoint"
        )
    text = str(ckpt_path)
    if not is_shipped(text):
        return Path(text).expanduser()
    name = text.removeprefix(PREFIX)
    path = WEIGHTS_DIR / f"{name}.pt"
    if not path.is_file():
        shipped = ", ".join(available()) or "none yet"
        raise FERUserError(f"no pretrained weights named {name!r} are shipped (shipped: {shipped})")
    return path
