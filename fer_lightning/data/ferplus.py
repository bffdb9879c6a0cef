"""FER+ labels (Microsoft's re-annotation of FER2013 by 10 voters) on FER2013's pixels.

`fer2013new.csv` has one row per FER2013 row, in the same order: Usage, image name and the votes for
neutral, happiness, surprise, sadness, anger, disgust, fear, contempt, unknown and NF (not a face).
The "majority" protocol of FER+'s reference code: single votes are discarded as outliers, then a row
is kept when its top emotion has more than half of the remaining votes and is one of the eight
emotions (contempt included), not unknown or not-a-face; rows FER+ dropped (no image name) go too.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from fer_lightning.data.fer2013_csv import SPLITS, SplitArrays, load_fer2013_csv
from fer_lightning.errors import DataFormatError, FERUserError, first_line

FERPLUS_CLASSES: tuple[str, ...] = (
    "Neutral", "Happy", "Surprise", "Sad", "Angry", "Disgust", "Fear", "Contempt",
)  # fmt: skip
EMOTION_VOTES: tuple[str, ...] = (
    "neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt",
)  # fmt: skip
VOTE_COLUMNS: tuple[str, ...] = (*EMOTION_VOTES, "unknown", "NF")
NO_MAJORITY = -1


def majority_labels(votes: np.ndarray) -> np.ndarray:
    """Per row, the index of the emotion with more than half of the votes, else NO_MAJORITY.

    `votes` is (N, 10) in VOTE_COLUMNS order. As in FER+'s reference code, single votes are
    dropped first; a majority of unknown or NF also gives NO_MAJORITY.
    """
    votes = np.where(votes > 1, votes, 0)
    top = votes.argmax(axis=1)
    has_majority = 2 * votes.max(axis=1) > votes.sum(axis=1)
    return np.where(has_majority & (top < len(EMOTION_VOTES)), top, NO_MAJORITY)


def read_ferplus_votes(path: str | os.PathLike) -> pd.DataFrame:
    """The votes file, validated: its columns, non-negative integer votes, known Usage values."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FERUserError(
            f"FER+ votes file {path} does not exist: get fer2013new.csv from Microsoft's FERPlus "
            "repository and set data.ferplus_csv=... (or env FERPLUS_CSV)"
        )
    try:
        table = pd.read_csv(path, dtype={"Image name": str}, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataFormatError(f"{path}: not a readable FER+ votes csv ({first_line(err)})") from err
    expected = ["Usage", "Image name", *VOTE_COLUMNS]
    if list(table.columns) != expected:
        raise DataFormatError(
            f"{path}:1: header: expected {','.join(expected)} (got {','.join(table.columns)})"
        )
    unknown_usage = ~table["Usage"].isin(list(SPLITS))
    if unknown_usage.any():
        row = int(np.flatnonzero(unknown_usage)[0])
        raise DataFormatError(
            f"{path}:{row + 2}: field 'Usage': unknown split (got {table['Usage'][row]!r})"
        )
    for column in VOTE_COLUMNS:
        numbers = pd.to_numeric(table[column], errors="coerce")
        bad = numbers.isna() | (numbers < 0) | (numbers != numbers.round())
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataFormatError(
                f"{path}:{row + 2}: field '{column}': votes must be whole numbers >= 0 "
                f"(got {table[column][row]!r})"
            )
    return table


def load_ferplus(
    fer2013_csv: str | os.PathLike,
    ferplus_csv: str | os.PathLike,
    cache_dir: str | os.PathLike | None = None,
) -> dict[str, SplitArrays]:
    """FER2013 pixels with FER+ majority labels (FERPLUS_CLASSES order), unlabelled rows dropped."""
    pixels = load_fer2013_csv(fer2013_csv, cache_dir)
    votes = read_ferplus_votes(ferplus_csv)
    labels = majority_labels(votes[list(VOTE_COLUMNS)].to_numpy(dtype=np.int64))
    labels[(votes["Image name"] == "").to_numpy()] = NO_MAJORITY
    splits = {}
    for usage, split in SPLITS.items():
        in_split = (votes["Usage"] == usage).to_numpy()
        images = pixels[split].images
        if in_split.sum() != len(images):
            raise DataFormatError(
                f"{ferplus_csv}: {in_split.sum()} {usage} rows, but {fer2013_csv} has "
                f"{len(images)}: the two files do not describe the same images"
            )
        split_labels = labels[in_split]
        keep = split_labels != NO_MAJORITY
        splits[split] = SplitArrays(images=images[keep], labels=split_labels[keep])
    return splits
