"""Maintainer tool: ship a training checkpoint as `pretrained:<name>`.

    python -m fer_lightning.pretrained <run>/checkpoints/best.ckpt <name> --tta <mode> [--fp16]

Writes fer_lightning/pretrained/<name>.pt (atomically; ``--out DIR`` writes DIR/<name>.pt instead,
e.g. weights to bring back from another machine) and prints its size and sha256. ``--tta`` is the
test-time augmentation chosen on PublicTest (``evaluate.py split=val tta=...``); evaluate and
predict use it unless told otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path
from typing import Any

import torch

from fer_lightning.checkpoint import PRETRAINED_DIR, RUN_CONFIG_KEY, TTA_KEY, read_checkpoint
from fer_lightning.cli import exit_on_user_error
from fer_lightning.errors import FERUserError
from fer_lightning.files import write_atomically
from fer_lightning.tta import TTA_MODES, check_tta_mode


def slim(checkpoint: dict[str, Any], tta: str, half: bool) -> dict[str, Any]:
    """A Lightning checkpoint without optimizer/loop state, carrying its TTA mode; float weights
    in fp16 if `half` (refused when a value does not fit fp16, e.g. a BatchNorm running variance
    above 65,504)."""
    state = {
        key: _to_half(key, value) if half and value.is_floating_point() else value
        for key, value in checkpoint["state_dict"].items()
    }
    return {
        "state_dict": state,
        "hyper_parameters": checkpoint["hyper_parameters"],
        RUN_CONFIG_KEY: checkpoint[RUN_CONFIG_KEY],
        TTA_KEY: check_tta_mode(tta),
    }


def _to_half(key: str, value: torch.Tensor) -> torch.Tensor:
    """``value`` in fp16, or a user error naming ``key`` when fp16 cannot hold it."""
    half = value.half()
    if not torch.isfinite(half).all() and torch.isfinite(value).all():
        raise FERUserError(
            f"{key}: values up to {value.abs().max().item():.4g} overflow fp16 "
            f"(max {torch.finfo(torch.float16).max:,.0f}); ship these weights without --fp16"
        )
    return half


def ship(
    ckpt: str, name: str, tta: str, half: bool, out: Path | None = None, force: bool = False
) -> None:
    """Write the slimmed checkpoint into the package (or `out`) and print its size and digest;
    existing weights (the shipped ones, whose digests manifest.json states) are replaced only with
    `force`."""
    shipped = slim(read_checkpoint(ckpt), tta, half)
    target = (PRETRAINED_DIR if out is None else out) / f"{name}.pt"
    if target.exists() and not force:
        raise FERUserError(f"{target} exists; pass --force to replace it")
    write_atomically(target, lambda file: torch.save(shipped, file))
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    print(f"{target} {target.stat().st_size:,} bytes sha256 {digest}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ckpt", help="a training checkpoint (e.g. <run>/checkpoints/best.ckpt)")
    parser.add_argument("name", help="ships as fer_lightning/pretrained/<name>.pt")
    parser.add_argument(
        "--tta",
        required=True,
        choices=TTA_MODES,
        help="the test-time augmentation chosen on PublicTest (evaluate.py split=val tta=...)",
    )
    parser.add_argument("--fp16", action="store_true", help="store float weights in fp16")
    parser.add_argument(
        "--out", type=Path, help="write <out>/<name>.pt instead, outside the package"
    )
    parser.add_argument("--force", action="store_true", help="replace an existing <name>.pt")
    args = parser.parse_args()
    exit_on_user_error(ship, args.ckpt, args.name, args.tta, args.fp16, args.out, args.force)


if __name__ == "__main__":
    main()
