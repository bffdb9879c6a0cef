"""Choose an ensemble on PublicTest: score every subset of the candidate checkpoints.

    python tools/choose_ensemble.py pretrained:vgg pretrained:deep <run>/checkpoints/best.ckpt \\
        --csv ../shared/fer2013/fer2013.csv.gz

Each candidate's class probabilities on the val split (PublicTest) are computed once, with the TTA
mode it carries, as ``evaluate.py`` computes them; every subset of at least ``--min-size`` members
is then scored as the mean of its members' probabilities. The table is ranked by accuracy,
macro-F1 breaking ties, then the smaller set; the last line is the ``evaluate.py`` command that
reports the winner on PrivateTest. The test split (PrivateTest) is never used.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from fer_lightning.checkpoint import (
    datamodule_from_checkpoint,
    read_checkpoint,
    stored_tta,
    system_from_checkpoint,
)
from fer_lightning.cli import exit_on_user_error
from fer_lightning.ensemble import MeanEnsemble, describe_members
from fer_lightning.report import classification_report, confusion_matrix

SELECTION_SPLIT = "val"


@dataclass(frozen=True)
class Scored:
    """One candidate set and its PublicTest scores."""

    members: tuple[str, ...]
    accuracy: float
    f1_macro: float

    def rank(self) -> tuple[float, float, int]:
        return self.accuracy, self.f1_macro, -len(self.members)


def val_probabilities(
    candidates: Sequence[str], csv_path: str | None
) -> tuple[dict[str, torch.Tensor], torch.Tensor, list[str]]:
    """Each candidate's val-split probabilities (its own TTA and input channels), the labels and
    the class names; the data are the first candidate's (``csv_path`` overrides its csv)."""
    checkpoints = {path: read_checkpoint(path) for path in candidates}
    overrides = {"in_channels": MeanEnsemble.in_channels, "csv_path": csv_path}
    first = checkpoints[candidates[0]]
    datamodule = datamodule_from_checkpoint(first, overrides)
    batches = list(datamodule.dataloader(SELECTION_SPLIT))
    labels = torch.cat([targets for _, targets in batches])
    probabilities = {}
    for path, checkpoint in checkpoints.items():
        system = system_from_checkpoint(checkpoint, path)
        member = MeanEnsemble([system.net], [stored_tta(checkpoint)])
        with torch.inference_mode():
            probabilities[path] = torch.cat([member(images).exp() for images, _ in batches])
        print(f"{describe_members([path], member.tta_modes)}: done", flush=True)
    return probabilities, labels, list(datamodule.class_names)


def score_subsets(
    probabilities: dict[str, torch.Tensor],
    labels: torch.Tensor,
    class_names: list[str],
    min_size: int,
) -> list[Scored]:
    """Every subset of at least ``min_size`` candidates, best first."""
    scored = []
    for size in range(min_size, len(probabilities) + 1):
        for members in itertools.combinations(probabilities, size):
            mean = torch.stack([probabilities[member] for member in members]).mean(dim=0)
            predictions = mean.argmax(dim=1).numpy()
            confusion = confusion_matrix(labels.numpy(), predictions, len(class_names))
            report = classification_report(confusion, class_names)
            scored.append(Scored(members, report["accuracy"], report["f1_macro"]))
    return sorted(scored, key=Scored.rank, reverse=True)


def choose(candidates: Sequence[str], csv_path: str | None, min_size: int) -> list[Scored]:
    """Score the subsets of ``candidates`` on PublicTest, print them best first and the command
    that reports the best on PrivateTest; returns the ranking."""
    probabilities, labels, class_names = val_probabilities(candidates, csv_path)
    ranked = score_subsets(probabilities, labels, class_names, min_size)
    print(f"\nPublicTest ({SELECTION_SPLIT}, {len(labels)} images), best first:")
    print(f"{'accuracy':>8}  {'macro-F1':>8}  members")
    for scored in ranked:
        print(f"{scored.accuracy:8.4f}  {scored.f1_macro:8.4f}  {' + '.join(scored.members)}")
    csv = f" data.csv_path={csv_path}" if csv_path else ""
    print(f"\nchosen: python evaluate.py ckpt_path=[{','.join(ranked[0].members)}]{csv}")
    return ranked


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("candidates", nargs="+", help="checkpoints or pretrained:<name>")
    parser.add_argument("--csv", help="the fer2013 csv on this machine (default: the stored one)")
    parser.add_argument("--min-size", type=int, default=2, help="smallest ensemble scored")
    args = parser.parse_args(argv)
    candidates = list(dict.fromkeys(args.candidates))  # each once
    if not 1 <= args.min_size <= len(candidates):
        parser.error(f"--min-size must be between 1 and {len(candidates)}")
    exit_on_user_error(choose, candidates, args.csv, args.min_size)


if __name__ == "__main__":
    main()
