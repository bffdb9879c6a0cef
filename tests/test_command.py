"""The `fer-lightning <task> [hydra overrides]` command (`python -m fer_lightning` in a clone)."""

from __future__ import annotations

import pytest

from fer_lightning import __main__ as command
from tests.conftest import run_module


def test_help_lists_every_task(capsys):
    with pytest.raises(SystemExit) as stop:
        command.main(["--help"])
    assert stop.value.code == 0
    listed = capsys.readouterr().out
    assert "fer-lightning <task>" in listed
    for task in ("train", "evaluate", "predict", "export", "explore", "distill", "serve"):
        assert f"  {task} " in listed


def test_no_task_prints_the_tasks_and_fails(capsys):
    with pytest.raises(SystemExit) as stop:
        command.main([])
    assert stop.value.code == 2
    listed = capsys.readouterr().err
    assert all(f"  {task} " in listed for task in command.TASKS)


def test_unknown_task_is_one_line(capsys):
    with pytest.raises(SystemExit) as stop:
        command.main(["trian", "model=deep"])
    assert stop.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: unknown task 'trian'") and "train" in line


def test_a_task_whose_module_is_absent_is_one_line(monkeypatch, capsys):
    monkeypatch.setitem(command.TASKS, "serve", ("fer_lightning.no_such_module", "the web app"))
    with pytest.raises(SystemExit) as stop:
        command.main(["serve"])
    assert stop.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: the serve task") and "fer_lightning.no_such_module" in line


def test_the_task_gets_the_other_arguments_as_its_hydra_overrides(tmp_path):
    result = run_module("fer_lightning", "evaluate", "split=val", "--cfg", "job", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "split: val" in result.stdout.splitlines()
    assert "ckpt_path: ???" in result.stdout.splitlines()
    assert not (tmp_path / "logs").exists()  # --cfg only prints
