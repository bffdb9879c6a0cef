"""The remote-GPU payload carries Training and PublicTest exactly, and nothing of PrivateTest."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from fer_lightning.data import load_fer2013_csv
from fer_lightning.data.ferplus import load_ferplus
from tests.conftest import ROOT, write_ferplus_votes

pytestmark = pytest.mark.bench  # tools/remote_gpu, a development tool


def _payload_module():
    path = ROOT / "tools" / "remote_gpu" / "payload.py"
    spec = importlib.util.spec_from_file_location("remote_gpu_payload", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_payload_round_trip_keeps_training_and_publictest_and_drops_privatetest(
    tiny_csv: Path, tmp_path: Path
) -> None:
    payload = _payload_module()
    votes = write_ferplus_votes(tiny_csv, tmp_path / "fer2013new.csv")
    payload.pack(tiny_csv, tmp_path / "payload", votes)
    payload.unpack(tmp_path / "payload", tmp_path / "there")

    original, carried = load_fer2013_csv(tiny_csv), load_fer2013_csv(tmp_path / "there/fer2013.csv")
    for split in ("train", "val"):
        np.testing.assert_array_equal(carried[split].images, original[split].images)
        np.testing.assert_array_equal(carried[split].labels, original[split].labels)
    # PrivateTest is one mid-gray placeholder, none of the real rows
    assert carried["test"].images.shape == (1, 48, 48)
    assert (carried["test"].images == 128).all()
    assert len(original["test"].labels) > 1

    original_plus = load_ferplus(tiny_csv, votes)
    carried_plus = load_ferplus(tmp_path / "there/fer2013.csv", tmp_path / "there/fer2013new.csv")
    for split in ("train", "val"):
        np.testing.assert_array_equal(carried_plus[split].images, original_plus[split].images)
        np.testing.assert_array_equal(carried_plus[split].labels, original_plus[split].labels)
    assert len(carried_plus["test"].labels) == 1
    for packed in ("rows.csv.gz", "fer2013new.csv.gz"):
        with gzip.open(tmp_path / "payload" / packed, "rt") as text:
            assert "PrivateTest" not in text.read()
