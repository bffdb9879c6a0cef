"""Choose an ensemble on PublicTest: score every subset of the candidate checkpoints.

    python tools/choose_ensemble.py pretrained:vgg pretrained:deep <run>/checkpoints/best.ckpt \\
        --csv ../shared/fer2013/fer2013.csv.gz [--ferplus-csv ...] [--min-size 2]

Each candidate's class probabilities on the val split (PublicTest) are computed once, with the TTA
mode it carries, as ``evaluate.py`` computes them; every subset of at least ``--min-size`` members
is then scored as the mean of its members' probabilities. The table is ranked by accuracy,
macro-F1 breaking ties, then the smaller set; the last line is the ``evaluate.py`` command that
reports the winner on PrivateTest. The test split (PrivateTest) is never used.
"""

from __future__ import annotations

import argparse
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from omegaconf import OmegaConf

from fer_lightning.cli import exit_on_user_error, hydra_quoted
from fer_lightning.config import compose_config
from fer_lightning.ensemble import MeanEnsemble, describe_members
from fer_lightning.loader import load_model
from fer_lightning.report import classification_report, confusion_matrix

SELECTION_SPLIT = "val"
# override values Hydra reads as they are; anything else (spaces, commas, quotes, a ~ for the home
# folder) is printed quoted
PLAIN_VALUE = re.compile(r"[\w./:+-]+")


@dataclass(frozen=True)
class Scored:
    """One candidate set and its PublicTest scores."""

    members: tuple[str, ...]
    accuracy: float
    f1_macro: float

    def rank(self) -> tuple[float, float, int]:
        return self.accuracy, self.f1_macro, -len(self.members)


def val_probabilities(
    candidates: Sequence[str], data_files: dict[str, str | None]
) -> tuple[dict[str, torch.Tensor], torch.Tensor, list[str]]:
    """Each candidate's val-split probabilities (its own TTA and input channels), the labels and
    the class names the candidates must share. The data are the first candidate's, with
    evaluate.py's data settings (this project's parse cache) and the non-null ``data_files``
    (``csv_path``, ``ferplus_csv``) of this machine."""
    model = load_model(list(candidates), exported=False)
    evaluate_data = OmegaConf.to_container(compose_config("evaluate", ".").data, resolve=True)
    overrides = {**evaluate_data, **data_files, "in_channels": MeanEnsemble.in_channels}
    batches = list(model.datamodule(overrides).dataloader(SELECTION_SPLIT))
    labels = torch.cat([targets for _, targets in batches])
    probabilities = {}
    for path, system, mode in zip(candidates, model.systems, model.tta_modes, strict=True):
        member = MeanEnsemble([system.net], [mode])
        with torch.inference_mode():
            probabilities[path] = torch.cat([member(images).exp() for images, _ in batches])
        print(f"{describe_members([path], member.tta_modes)}: done", flush=True)
    return probabilities, labels, model.class_names


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


def choose(
    candidates: Sequence[str], data_files: dict[str, str | None], min_size: int
) -> list[Scored]:
    """Score the subsets of ``candidates`` on PublicTest, print them best first and the command
    that reports the best on PrivateTest; returns the ranking."""
    probabilities, labels, class_names = val_probabilities(candidates, data_files)
    ranked = score_subsets(probabilities, labels, class_names, min_size)
    print(f"\nPublicTest ({SELECTION_SPLIT}, {len(labels)} images), best first:")
    print(f"{'accuracy':>8}  {'macro-F1':>8}  members")
    for scored in ranked:
        print(f"{scored.accuracy:8.4f}  {scored.f1_macro:8.4f}  {' + '.join(scored.members)}")
    print(f"\nchosen: {evaluate_command(ranked[0].members, data_files)}")
    return ranked


def evaluate_command(members: Sequence[str], data_files: dict[str, str | None]) -> str:
    """The evaluate.py command for ``members`` on PrivateTest, its values quoted for Hydra
    where they hold characters its override grammar would read."""

    def value(text: str) -> str:
        return text if PLAIN_VALUE.fullmatch(text) else hydra_quoted(text)

    listed = ",".join(value(member) for member in members)
    files = "".join(f" data.{key}={value(path)}" for key, path in data_files.items() if path)
    return f"python evaluate.py ckpt_path=[{listed}]{files}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("candidates", nargs="+", help="checkpoints or pretrained:<name>")
    parser.add_argument("--csv", help="the fer2013 csv on this machine (default: the stored one)")
    parser.add_argument(
        "--ferplus-csv", help="FER+ candidates: the votes file on this machine (fer2013new.csv)"
    )
    parser.add_argument("--min-size", type=int, default=2, help="smallest ensemble scored")
    args = parser.parse_args(argv)
    candidates = list(dict.fromkeys(args.candidates))  # each once
    if len(candidates) < args.min_size:
        parser.error(
            f"{len(candidates)} distinct candidate(s) cannot make a set of --min-size "
            f"{args.min_size}; name more, or lower --min-size"
        )
    if args.min_size < 1:
        parser.error("--min-size must be at least 1")
    data_files = {"csv_path": args.csv, "ferplus_csv": args.ferplus_csv}
    exit_on_user_error(choose, candidates, data_files, args.min_size)


if __name__ == "__main__":
    main()
