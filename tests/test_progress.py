"""Long loops outside Lightning show progress: a bar in a terminal, log lines elsewhere."""

from __future__ import annotations

import logging

from fer_lightning import progress
from fer_lightning.progress import tracked


def test_without_a_terminal_progress_is_logged_at_the_start_and_the_end(caplog, monkeypatch):
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.setattr(progress, "LOG_INTERVAL_S", 3600.0)  # no line in between
    with caplog.at_level(logging.INFO, logger="fer_lightning.progress"):
        items = list(tracked(["a", "b", "c"], "Predicting 3 images", unit="batches"))
    assert items == ["a", "b", "c"]
    lines = [record.getMessage() for record in caplog.records]
    assert lines[0] == "Predicting 3 images: 0/3 batches"
    assert lines[1].startswith("Predicting 3 images: 3/3 batches, ")
    assert len(lines) == 2


def test_without_a_terminal_a_slow_loop_logs_as_it_goes(caplog, monkeypatch):
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.setattr(progress, "LOG_INTERVAL_S", 0.0)  # every step is "slow"
    with caplog.at_level(logging.INFO, logger="fer_lightning.progress"):
        list(tracked(range(3), "Labelling", unit="batches"))
    done = [record.getMessage().split(": ")[1].split(" ")[0] for record in caplog.records]
    assert done == ["0/3", "1/3", "2/3", "3/3"]


def test_in_a_terminal_a_bar_is_drawn_on_stderr(capsys, caplog, monkeypatch):
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich then treats stderr as a terminal
    with caplog.at_level(logging.INFO, logger="fer_lightning.progress"):
        items = list(tracked(range(4), "Predicting 4 images", unit="batches"))
    assert items == [0, 1, 2, 3]
    err = capsys.readouterr().err
    assert "Predicting 4 images" in err and "4/4" in err and "batches" in err
    assert not caplog.records  # the bar, not log lines
