"""Hardening: bad input as one line, crash and resume, failing multirun jobs, determinism, and the
configs for scaling out (DDP, SLURM, GPU)."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra.errors import MissingConfigException
from hydra.utils import instantiate
from pytorch_lightning import Callback, Trainer

from fer_lightning.builders import build_trainer
from fer_lightning.checkpoint_io import AtomicCheckpointIO
from fer_lightning.cli import exit_on_user_error
from fer_lightning.data import fer2013_csv, load_fer2013_csv
from fer_lightning.data.synthetic import write_synthetic_fer2013_csv
from fer_lightning.errors import FERUserError
from fer_lightning.evaluation import evaluate
from fer_lightning.training import metric_value, train
from tests.conftest import (
    HEADER,
    PIXELS,
    ROOT,
    THREE_STEP_EPOCHS,
    TINY_SPLIT_SIZES,
    VALID_ROWS,
    compose_config,
    run_module,
    run_script,
    tiny_data_overrides,
    write_folders,
)

# one short epoch: enough to write best.ckpt and last.ckpt
SHORT_RUN = (
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.log_every_n_steps=1",
    "~callbacks.tensorboard_extras",
)


def sweep_data_overrides(csv_path: Path) -> list[str]:
    """`tiny_data_overrides` without the batch size, which the sweeps set."""
    return [item for item in tiny_data_overrides(csv_path) if "batch_size" not in item]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


# ------------------------------------------------------------------------------------- bad input

PIXELS_2303 = PIXELS.rsplit(" ", 1)[0]


def csv_with_row(bad_row: str) -> Callable[[Path], Path]:
    """A csv whose third line (second data row) is `bad_row`."""

    def write(folder: Path) -> Path:
        path = folder / "fer2013.csv"
        path.write_text("\n".join([HEADER, VALID_ROWS[0], bad_row, *VALID_ROWS]) + "\n")
        return path

    return write


def csv_with_text(text: str | bytes) -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        path = folder / "fer2013.csv"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return path

    return write


def truncated_gzip(folder: Path) -> Path:
    path = folder / "fer2013.csv.gz"
    rows = [HEADER, *VALID_ROWS * 20]
    path.write_bytes(gzip.compress(("\n".join(rows) + "\n").encode())[:-200])
    return path


# (case, writes the bad csv into a folder and returns its path, fragments of the one error line)
BAD_CSVS = [
    ("missing file", lambda folder: folder / "nowhere.csv", ["does not exist", "data=synthetic"]),
    ("empty file", csv_with_text(""), ["file is empty"]),
    ("missing column", csv_with_text("emotion,pixels\n"), [":1: header", "missing ['Usage']"]),
    ("wrong column", csv_with_text("emotion,pixel,Usage\n"), [":1: header", "'pixel'"]),
    ("extra column", csv_with_text(f"{HEADER},x\n"), [":1: header", "unexpected ['x']"]),
    ("extra field", csv_with_row(f"3,{PIXELS},Training,x"), [":3: row", "got 4"]),
    ("2,303 pixels", csv_with_row(f"3,{PIXELS_2303},Training"), [":3: field 'pixels'", "2303"]),
    ("2,305 pixels", csv_with_row(f"3,{PIXELS} 1,Training"), [":3: field 'pixels'", "2305"]),
    ("pixel 1.5", csv_with_row(f"3,1.5 {PIXELS_2303},Training"), [":3: field 'pixels'", "'1.5'"]),
    ("pixel 256", csv_with_row(f"3,256 {PIXELS_2303},Training"), [":3: field 'pixels'", "'256'"]),
    ("pixel -1", csv_with_row(f"3,-1 {PIXELS_2303},Training"), [":3: field 'pixels'", "'-1'"]),
    ("emotion 7", csv_with_row(f"7,{PIXELS},Training"), [":3: field 'emotion'", "'7'"]),
    ("emotion -1", csv_with_row(f"-1,{PIXELS},Training"), [":3: field 'emotion'", "'-1'"]),
    ("emotion happy", csv_with_row(f"happy,{PIXELS},Training"), [":3: field 'emotion'", "'happy'"]),
    ("unknown Usage", csv_with_row(f"3,{PIXELS},Dev"), [":3: field 'Usage'", "'Dev'"]),
    ("empty split", csv_with_text("\n".join([HEADER, *VALID_ROWS[:2]])), ["'PrivateTest'"]),
    ("truncated gzip", truncated_gzip, ["corrupt or truncated gzip"]),
    ("binary junk", csv_with_text(bytes(range(128, 256)) * 16), [":1: header", "not UTF-8"]),
    ("NUL bytes", csv_with_text(b"\0" * 4096), [":1: header", "NUL bytes"]),
]


def assert_one_error_line(stderr: str, fragments: list[str]) -> str:
    """Exactly one `error:` line holding every fragment, and no traceback."""
    assert "Traceback" not in stderr
    (line,) = error_lines(stderr)
    for fragment in fragments:
        assert fragment in line, line
    return line


@pytest.mark.parametrize(
    ("write_csv", "fragments"),
    [case[1:] for case in BAD_CSVS],
    ids=[case[0] for case in BAD_CSVS],
)
def test_bad_csv_is_one_line_and_writes_nothing(tmp_path, capsys, write_csv, fragments):
    csv_path = write_csv(tmp_path)
    cache, run_dir = tmp_path / "cache", tmp_path / "run"
    overrides = [*tiny_data_overrides(csv_path), f"data.cache_dir={cache}"]
    cfg = compose_config("train", run_dir, overrides)
    with pytest.raises(SystemExit) as exited:
        exit_on_user_error(train, cfg)
    assert exited.value.code == 2
    line = assert_one_error_line(capsys.readouterr().err, fragments)
    assert str(csv_path) in line
    assert not (cache.exists() and list(cache.iterdir()))
    assert not run_dir.exists()


def _fifo(folder: Path) -> Path:
    os.mkfifo(folder / "fer2013.csv")
    return folder / "fer2013.csv"


def _symlink_loop(folder: Path) -> Path:
    (folder / "fer2013.csv").symlink_to(folder / "fer2013.csv")
    return folder / "fer2013.csv"


@pytest.mark.parametrize(
    ("make", "reason"),
    [(_fifo, "is a named pipe (FIFO), not a regular file"), (_symlink_loop, "symbolic links")],
    ids=["fifo", "symlink-loop"],
)
def test_a_csv_path_that_is_no_regular_file_says_why(tmp_path, capsys, make, reason):
    path = make(tmp_path)
    with pytest.raises(SystemExit) as exited:
        exit_on_user_error(load_fer2013_csv, path)
    assert exited.value.code == 2
    line = assert_one_error_line(capsys.readouterr().err, [str(path), reason])
    assert "does not exist" not in line


def test_an_empty_fer2013_csv_env_says_it_is_empty(tmp_path, monkeypatch):
    monkeypatch.setenv("FER2013_CSV", "")
    result = run_script("train.py", "data=fer2013", "debug=fdr", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2
    line = assert_one_error_line(result.stderr, ["csv path is empty", "FER2013_CSV"])
    assert "is a directory" not in line


def test_a_checkpoint_error_has_no_terminal_escape_codes(tmp_path, train_cfg, capsys):
    """torch's weights_only refusal styles its message for a terminal."""
    checkpoint = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {}, "loader": SimpleNamespace()}, checkpoint)
    with pytest.raises(SystemExit):
        exit_on_user_error(train, train_cfg(f"ckpt_path={checkpoint}"))
    line = assert_one_error_line(capsys.readouterr().err, [str(checkpoint), "Weights only"])
    assert "\x1b" not in line


def test_bad_csv_from_the_command_line(tmp_path):
    csv_path = csv_with_row(f"3,{PIXELS_2303},Training")(tmp_path)
    cache = tmp_path / "cache"
    result = run_script(
        "train.py",
        "data=fer2013",
        f"data.csv_path={csv_path}",
        f"data.cache_dir={cache}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert result.returncode == 2
    line = assert_one_error_line(result.stderr, [f"{csv_path}:3: field 'pixels'", "got 2303"])
    assert line.startswith("error: ")
    assert not (cache.exists() and list(cache.iterdir()))
    assert not (tmp_path / "run" / "metrics.json").exists()


def folders_with_unknown_class(root: Path) -> None:
    (root / "train" / "contempt").mkdir()


def folders_with_unreadable_image(root: Path) -> None:
    (root / "test" / "happy" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")


@pytest.mark.parametrize(
    ("break_folders", "fragments"),
    [
        (folders_with_unknown_class, ["contempt", "unknown class folder 'contempt'"]),
        (folders_with_unreadable_image, ["broken.png", "unreadable image"]),
    ],
    ids=["unknown class folder", "unreadable image"],
)
def test_bad_image_folder_is_one_line(tmp_path, capsys, break_folders, fragments):
    root = tmp_path / "folders"
    write_folders(root, per_class=1)
    break_folders(root)
    cfg = compose_config(
        "train",
        tmp_path / "run",
        ["data=fer2013_folders", f"data.root={root}", "data.num_workers=0"],
    )
    with pytest.raises(SystemExit) as exited:
        exit_on_user_error(train, cfg)
    assert exited.value.code == 2
    assert_one_error_line(capsys.readouterr().err, fragments)


def test_config_mistake_inside_instantiation_is_one_line(train_cfg, capsys):
    """Hydra wraps errors raised in constructors; the user still gets the one line."""
    with pytest.raises(SystemExit) as exited:
        exit_on_user_error(train, train_cfg("data.batch_size=0"))
    assert exited.value.code == 2
    assert_one_error_line(capsys.readouterr().err, ["data.batch_size", "got 0"])


def test_a_required_setting_left_out_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        exit_on_user_error(evaluate, compose_config("evaluate", tmp_path, []))
    assert exited.value.code == 2
    assert_one_error_line(capsys.readouterr().err, ["ckpt_path is required", "ckpt_path=..."])


def test_predict_without_a_source_is_one_line(tmp_path):
    result = run_module("fer_lightning.predict", "ckpt_path=x.ckpt", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2
    assert_one_error_line(result.stderr, ["source is required"])


def test_unknown_model_name_is_hydras_message(tmp_path):
    with pytest.raises(MissingConfigException, match="Could not find 'model/nope'") as caught:
        compose_config("train", tmp_path, ["model=nope"])
    assert "baseline" in caught.value.options


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"", "not a readable checkpoint"),
        (b"PK\x03\x04 truncated zip", "not a readable checkpoint"),
        # a text file reaches torch's legacy unpickler, which fails with IndexError / KeyError
        (b"hello", "not a readable checkpoint"),
        (b"emotion,pixels,Usage\n0,1 2 3,Training\n", "not a readable checkpoint"),
        (None, "does not exist"),
        ("folder", "is a directory"),
    ],
    ids=["empty", "corrupt", "text", "csv", "missing", "folder"],
)
def test_resume_from_a_bad_checkpoint_is_one_line(tmp_path, train_cfg, capsys, content, fragment):
    checkpoint = tmp_path / "last.ckpt"
    if content == "folder":
        checkpoint.mkdir()
    elif content is not None:
        checkpoint.write_bytes(content)
    with pytest.raises(SystemExit):
        exit_on_user_error(train, train_cfg(f"ckpt_path={checkpoint}"))
    assert_one_error_line(capsys.readouterr().err, [str(checkpoint), fragment])


@pytest.mark.parametrize(
    ("override", "fragments"),
    [
        ("model=deep", ["holds a fer_lightning.models.BaselineCNN net", "DeepConcatNet"]),
        ("model.net.in_channels=3", ["do not fit"]),
    ],
    ids=["another-architecture", "another-net-shape"],
)
def test_resume_with_another_net_is_one_line(
    train_cfg, trained_checkpoint, capsys, override, fragments
):
    with pytest.raises(SystemExit) as exited:
        exit_on_user_error(train, train_cfg(override, f"ckpt_path={trained_checkpoint}"))
    assert exited.value.code == 2
    assert_one_error_line(capsys.readouterr().err, [str(trained_checkpoint), *fragments])


def test_resume_with_another_one_cycle_length_is_one_line(train_cfg, capsys):
    # OneCycleLR's restored state keeps its total_steps: a longer run would crash at step 4 of 3
    short_run = ("experiment=baseline_fer2013", *THREE_STEP_EPOCHS)
    train(train_cfg(*short_run, "trainer.max_epochs=1"))
    last = Path(train_cfg().paths.output_dir) / "checkpoints" / "last.ckpt"
    with pytest.raises(SystemExit) as caught:
        exit_on_user_error(
            train, train_cfg(*short_run, "trainer.max_epochs=2", f"ckpt_path={last}")
        )
    assert caught.value.code == 2
    assert_one_error_line(
        capsys.readouterr().err,
        [str(last), "spans 3 optimizer steps but this run makes 6", "init_weights="],
    )
    # resumed as trained, the schedule fits: the run completes (its one epoch was already done)
    resumed = train(train_cfg(*short_run, "trainer.max_epochs=1", f"ckpt_path={last}"))
    assert resumed == {}  # nothing left to train, nothing logged
    assert torch.load(last, weights_only=True)["global_step"] == 3


# -------------------------------------------------------------------------- atomic file writes


def test_interrupted_checkpoint_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.ckpt"
    checkpoint_io = AtomicCheckpointIO()
    checkpoint_io.save_checkpoint({"global_step": 1, "weights": torch.arange(4.0)}, path)

    def interrupted_save(obj: object, file) -> None:
        file.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", interrupted_save)
    with pytest.raises(OSError, match="No space left"):
        checkpoint_io.save_checkpoint({"global_step": 2}, path)
    monkeypatch.undo()
    assert checkpoint_io.load_checkpoint(path, weights_only=True)["global_step"] == 1
    assert os.listdir(path.parent) == ["last.ckpt"]


def test_unwritable_cache_dir_is_one_line(tmp_path, tiny_csv, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit) as exited:
        exit_on_user_error(load_fer2013_csv, tiny_csv, blocker / "cache")
    assert exited.value.code == 2
    assert_one_error_line(
        capsys.readouterr().err,
        ["cannot write the parse cache", "a_file", "data.cache_dir", "FER_LIGHTNING_CACHE"],
    )


def test_unwritable_synthetic_data_dir_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    module = instantiate(
        compose_config("train", tmp_path, ["data=synthetic", f"data.data_dir={blocker}/data"]).data
    )
    with pytest.raises(SystemExit) as exited:
        exit_on_user_error(module.prepare_data)
    assert exited.value.code == 2
    assert_one_error_line(
        capsys.readouterr().err, ["cannot write the synthetic data", "a_file", "data.data_dir"]
    )
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a_file"]


def test_full_disk_during_a_cache_write_is_one_line_and_leaves_no_file(
    tmp_path, tiny_csv, monkeypatch
):
    def full_disk_savez(file, **arrays) -> None:
        file.write(b"PK\x03\x04 half an npz")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fer2013_csv.np, "savez", full_disk_savez)
    with pytest.raises(FERUserError, match="No space left on device"):
        load_fer2013_csv(tiny_csv, cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_interrupted_cache_write_leaves_no_file(tmp_path, tiny_csv, monkeypatch):
    cache = tmp_path / "cache"

    def interrupted_savez(file, **arrays) -> None:
        file.write(b"PK\x03\x04 half an npz")
        raise KeyboardInterrupt

    monkeypatch.setattr(fer2013_csv.np, "savez", interrupted_savez)
    with pytest.raises(KeyboardInterrupt):
        load_fer2013_csv(tiny_csv, cache_dir=cache)
    assert list(cache.iterdir()) == []
    monkeypatch.undo()
    load_fer2013_csv(tiny_csv, cache_dir=cache)
    (cache_file,) = cache.iterdir()
    assert cache_file.suffix == ".npz"
    test_labels = load_fer2013_csv(tiny_csv, cache_dir=cache)["test"].labels
    assert len(test_labels) == TINY_SPLIT_SIZES["num_test"]


# ------------------------------------------------------------------------------ crash and resume


def test_kill_9_then_resume_finishes_the_configured_epochs(tmp_path, tiny_csv):
    """SIGKILL a training run after its first epoch, resume it from last.ckpt into the same run
    dir: it ends after max_epochs in total, and its csv log goes on from the killed run."""
    run_dir, max_epochs, steps_per_epoch = tmp_path / "run", 3, 9  # 280 images / 32
    last = run_dir / "checkpoints" / "last.ckpt"
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        *tiny_data_overrides(tiny_csv),
        f"trainer.max_epochs={max_epochs}",
        "callbacks.step_checkpoint.every_n_train_steps=2",
        "~callbacks.tensorboard_extras",
        f"hydra.run.dir={run_dir}",
    ]
    log_path = tmp_path / "killed.log"
    deadline = time.monotonic() + 240
    with log_path.open("w") as log:
        killed = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        killed_at_step, seen = 0, None
        try:
            while killed.poll() is None and killed_at_step <= steps_per_epoch:
                assert time.monotonic() < deadline, "no checkpoint after the first epoch"
                time.sleep(0.02)
                stamp = last.stat().st_mtime_ns if last.exists() else None
                if stamp != seen:  # atomic writes: a present last.ckpt is always complete
                    seen, killed_at_step = stamp, torch.load(last, weights_only=True)["global_step"]
        finally:
            killed.kill()  # SIGKILL
            killed.wait()
    stderr = log_path.read_text()
    assert killed.returncode == -signal.SIGKILL, stderr[-2000:]
    assert steps_per_epoch < killed_at_step < max_epochs * steps_per_epoch

    resumed = run_script("train.py", *command[2:], f"ckpt_path={last}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Restored all states from the checkpoint" in resumed.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs_trained"] == max_epochs
    assert torch.load(last, weights_only=True)["global_step"] == max_epochs * steps_per_epoch
    rows = (run_dir / "csv" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    val_epochs = [
        int(row.split(",")[header.index("epoch")])
        for row in rows[1:]
        if row.split(",")[header.index("val/acc")]
    ]
    assert val_epochs == list(range(max_epochs))  # epoch 0 from the killed run, once


def sigterm_once_training(command: list[str], csv_log: Path, log_path: Path) -> int:
    """Run ``command``, send it SIGTERM once its csv log shows a training step (mid-epoch), and
    return its exit status."""
    deadline = time.monotonic() + 240
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        try:
            while process.poll() is None and not csv_log.is_file():
                assert time.monotonic() < deadline, "no training step logged"
                time.sleep(0.02)
            process.send_signal(signal.SIGTERM)
            return process.wait(timeout=120)
        finally:
            process.kill()
            process.wait()


# epochs of 20 steps (batches of 4); the csv log is written at every step, and last.ckpt only at
# epoch ends or when SIGTERM stops the run
SIGTERM_RUN = (
    "data.batch_size=4",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=20",
    "trainer.limit_val_batches=2",
    "trainer.log_every_n_steps=1",
    "+logger.csv.flush_logs_every_n_steps=1",
    "callbacks.step_checkpoint.every_n_train_steps=0",
    "~callbacks.tensorboard_extras",
)


def test_sigterm_mid_epoch_saves_last_ckpt_exits_143_and_resumes(tmp_path, tiny_csv):
    """SIGTERM in the middle of the first epoch: last.ckpt holds the step it stopped at, the run
    says in one line how to resume and exits 143; the command it gives finishes the run."""
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    overrides = [*tiny_data_overrides(tiny_csv), *SIGTERM_RUN, f"hydra.run.dir={run_dir}"]
    command = [sys.executable, str(ROOT / "train.py"), *overrides]
    status = sigterm_once_training(command, run_dir / "csv" / "metrics.csv", tmp_path / "log")
    stderr = (tmp_path / "log").read_text()
    assert status == 143, stderr[-3000:]
    assert "Traceback" not in stderr
    (line,) = [line for line in stderr.splitlines() if line.startswith("preempted:")]
    assert "stopped by SIGTERM at epoch 0" in line and f"ckpt_path={last}" in line
    assert 0 < torch.load(last, weights_only=True)["global_step"] < 20
    assert not (run_dir / "metrics.json").exists()

    resumed = run_script("train.py", *overrides, line.split("plus ")[1])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Restored all states from the checkpoint" in resumed.stderr
    assert json.loads((run_dir / "metrics.json").read_text())["epochs_trained"] == 2
    assert torch.load(last, weights_only=True)["global_step"] == 2 * 20


class SubmititExit(Callback):
    """Exits at step 2, as submitit's signal handler does after requeueing the job."""

    def on_train_batch_end(self, trainer: Trainer, *args: object) -> None:
        if trainer.global_step == 2:
            sys.exit(-1)


def test_submitits_requeue_exit_mid_epoch_saves_last_ckpt_at_that_step(train_cfg, tmp_path):
    """On its signal before the time limit, submitit requeues the job and exits (SystemExit)
    wherever training is: last.ckpt is saved at that step for the requeued job to resume."""
    exit_at_step_2 = f"+callbacks.submitit._target_={__name__}.SubmititExit"
    cfg = train_cfg(*THREE_STEP_EPOCHS, "trainer.max_epochs=1", exit_at_step_2)
    with pytest.raises(SystemExit):
        train(cfg)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 2


@pytest.mark.slow
def test_sigterm_in_a_multirun_marks_the_job_preempted_and_the_sweep_resumes(tmp_path, tiny_csv):
    """The preempted job is recorded as such, the sweep stops with 143 and says so; the same
    sweep with ckpt_path=auto resumes that job and runs the rest."""
    sweep = [
        "-m",
        "seed=1,2",
        *sweep_data_overrides(tiny_csv),
        *SIGTERM_RUN,
        "trainer.max_epochs=1",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]
    command = [sys.executable, str(ROOT / "train.py"), *sweep]
    csv_log = tmp_path / "sweep" / "0" / "csv" / "metrics.csv"
    status = sigterm_once_training(command, csv_log, tmp_path / "log")
    stderr = (tmp_path / "log").read_text()
    assert status == 143, stderr[-3000:]
    (line,) = [line for line in stderr.splitlines() if line.startswith("preempted:")]
    assert "job 0 (seed=1" in line and "the sweep stops here" in line and "ckpt_path=auto" in line
    marker = tmp_path / "sweep" / "0" / "PREEMPTED"
    assert "stopped by SIGTERM" in marker.read_text()
    assert not (tmp_path / "sweep" / "1").exists()

    resumed = run_script("train.py", *sweep, "ckpt_path=auto")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not list((tmp_path / "sweep").rglob("PREEMPTED"))
    for job in ("0", "1"):
        assert json.loads((tmp_path / "sweep" / job / "metrics.json").read_text())["split"]


# ---------------------------------------------------------------------------------- run folders


def test_a_run_folder_holding_a_run_is_refused_unless_resumed_or_overwritten(tmp_path, tiny_csv):
    """A second run into the folder of a finished one: refused in one line, the first run's
    files untouched; overwrite=true replaces it (its csv log starts over); ckpt_path=auto
    resumes from its last.ckpt, or starts where there is none."""
    run_dir = tmp_path / "run"
    overrides = [*tiny_data_overrides(tiny_csv), *SHORT_RUN]
    train(compose_config("train", run_dir, overrides))
    best = run_dir / "checkpoints" / "best.ckpt"
    written = best.stat().st_mtime_ns

    again = run_script("train.py", *overrides, f"hydra.run.dir={run_dir}")
    assert again.returncode == 2
    assert_one_error_line(
        again.stderr,
        [f"run folder {run_dir} already holds a run", "checkpoints", "ckpt_path=auto"],
    )
    assert best.stat().st_mtime_ns == written

    train(compose_config("train", run_dir, [*overrides, "overwrite=true", "seed=5"]))
    assert best.stat().st_mtime_ns != written
    rows = (run_dir / "csv" / "metrics.csv").read_text().splitlines()
    val_acc = rows[0].split(",").index("val/acc")
    assert len([row for row in rows[1:] if row.split(",")[val_acc]]) == 1  # one run's epoch

    two_epochs = [*overrides, "trainer.max_epochs=2", "ckpt_path=auto"]
    assert train(compose_config("train", run_dir, two_epochs))["val/acc_best"] >= 0
    assert json.loads((run_dir / "metrics.json").read_text())["epochs_trained"] == 2
    fresh = tmp_path / "fresh"
    train(compose_config("train", fresh, two_epochs))  # nothing to resume: a new run
    assert json.loads((fresh / "metrics.json").read_text())["epochs_trained"] == 2


def test_a_run_that_would_train_nothing_is_refused_from_the_command_line(tmp_path, tiny_csv):
    result = run_script(
        "train.py",
        *tiny_data_overrides(tiny_csv),
        "trainer.limit_train_batches=0",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert result.returncode == 2
    assert_one_error_line(result.stderr, ["trainer.limit_train_batches=0 trains nothing"])
    assert sorted(path.name for path in (tmp_path / "run").iterdir()) == [".hydra", "train.log"]


@pytest.mark.parametrize("override", ["trainer.max_epochs=0", "+trainer.max_steps=0"])
def test_settings_that_train_nothing_are_one_line(train_cfg, capsys, override):
    with pytest.raises(SystemExit) as exited:
        exit_on_user_error(train, train_cfg(override))
    assert exited.value.code == 2
    assert_one_error_line(capsys.readouterr().err, [f"{override.lstrip('+')} trains nothing"])


# -------------------------------------------------------------------------------- config values


@pytest.mark.parametrize(
    ("override", "fragments"),
    [
        ("trainer.max_epochs=abc", ["trainer.max_epochs='abc' is not a valid value", "int"]),
        ("model.optimizer.lr=abc", ["model.optimizer.lr='abc' is not a valid value", "float"]),
        ("trainer.precision=8", ["trainer.precision=8 is not a valid value", "bf16-mixed"]),
        ("+model.net.width=3", ["model.net.width is not a setting of", "in_channels"]),
        ("callbacks.early_stopping.patience=[1]", ["callbacks.early_stopping.patience=[1]"]),
    ],
    ids=["max_epochs", "lr", "precision", "unknown-key", "patience"],
)
def test_settings_of_the_wrong_type_are_one_line_before_any_folder(
    train_cfg, tmp_path, capsys, override, fragments
):
    with pytest.raises(SystemExit) as exited:
        exit_on_user_error(train, train_cfg(override))
    assert exited.value.code == 2
    assert_one_error_line(capsys.readouterr().err, fragments)
    assert not (tmp_path / "run").exists()


def test_a_wrong_type_from_the_command_line_is_one_line(tmp_path, tiny_csv):
    run_dir = tmp_path / "run"
    result = run_script(
        "train.py",
        *tiny_data_overrides(tiny_csv),
        "trainer.max_epochs=abc",
        f"hydra.run.dir={run_dir}",
    )
    assert result.returncode == 2
    assert_one_error_line(result.stderr, ["trainer.max_epochs='abc'", "Optional[int]"])
    assert sorted(path.name for path in run_dir.iterdir()) == [".hydra", "train.log"]


def test_resuming_with_fewer_epochs_than_done_is_one_line(trained_run, train_cfg, capsys):
    last = trained_run / "checkpoints" / "last.ckpt"  # after 2 epochs
    with pytest.raises(SystemExit) as exited:
        exit_on_user_error(train, train_cfg("trainer.max_epochs=1", f"ckpt_path={last}"))
    assert exited.value.code == 2
    assert_one_error_line(
        capsys.readouterr().err, [str(last), "has done 2 epochs", "trainer.max_epochs=1"]
    )


def test_a_run_folder_under_a_file_is_one_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = run_script("train.py", "debug=fdr", f"hydra.run.dir={blocker}/run")
    assert result.returncode == 2
    assert_one_error_line(result.stderr, ["hydra.run.dir=", f"{blocker} is a file, not a folder"])


# ------------------------------------------------------------------------------------- multirun


def test_multirun_goes_on_after_a_failed_job_and_names_it(tmp_path, tiny_csv):
    result = run_script(
        "train.py",
        "-m",
        "data.batch_size=32,0,32",
        "debug=fdr",
        *sweep_data_overrides(tiny_csv),
        f"hydra.sweep.dir={tmp_path}",
    )
    assert result.returncode == 1
    for job in ("0", "2"):
        assert json.loads((tmp_path / job / "metrics.json").read_text())["split"] == "test"
        assert not (tmp_path / job / "FAILED").exists()
    failed = (tmp_path / "1" / "FAILED").read_text()
    assert "data.batch_size=0" in failed and "got 0" in failed.splitlines()[1]
    assert not (tmp_path / "1" / "metrics.json").exists()
    summary = result.stderr[result.stderr.index("error: 1 multirun job(s) failed") :]
    assert "job 1 (data.batch_size=0" in summary and str(tmp_path / "1" / "FAILED") in summary


def test_failed_markers_of_an_earlier_sweep_do_not_fail_the_next_one(tmp_path, tiny_csv):
    """A sweep into a folder where an earlier sweep's job failed: its FAILED markers are
    cleared, so a sweep whose jobs all succeed exits 0."""
    for job in ("0", "1"):  # the job this sweep reruns, and one it does not
        (tmp_path / job).mkdir()
        (tmp_path / job / "FAILED").write_text("job 0 (data.batch_size=0)\nbatch_size=0\n")
    result = run_script(
        "train.py",
        "-m",
        "data.batch_size=32",
        "debug=fdr",
        *sweep_data_overrides(tiny_csv),
        f"hydra.sweep.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "0" / "metrics.json").read_text())["split"] == "test"
    assert not list(tmp_path.rglob("FAILED"))
    assert "failed" not in result.stderr


def test_optimized_metric_that_was_not_logged_is_a_user_error():
    """A sweep's optimized_metric must be one the run logged; the error lists those it did."""
    logged = {"val/acc": 0.5, "train/loss": 1.2}
    assert metric_value(logged, "val/acc") == 0.5
    assert metric_value(logged, None) is None
    with pytest.raises(
        FERUserError,
        match=r"optimized_metric='val/f1' was not logged; logged metrics: train/loss, val/acc$",
    ):
        metric_value(logged, "val/f1")


def test_optuna_sweep_marks_a_failed_trial_and_goes_on(tmp_path, tiny_csv):
    result = run_script(
        "train.py",
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.seed=0",
        'hydra.sweeper.params={data.batch_size: "choice(0, 32)"}',
        "debug=fdr",
        "test=true",  # the study's config leaves PrivateTest alone; this sweep asks for it
        "optimized_metric=test/acc",
        *sweep_data_overrides(tiny_csv),
        f"hydra.sweep.dir={tmp_path}",
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert sorted(path.parent.name for path in tmp_path.glob("*/FAILED")) == ["0"]
    assert (tmp_path / "1" / "metrics.json").is_file()
    assert "best_value" in (tmp_path / "optimization_results.yaml").read_text()


# ---------------------------------------------------------------------------------- determinism


def metrics_json_of_run(run_dir: Path, tiny_csv: Path, *overrides: str) -> bytes:
    """Train briefly (augmentation on) and return the bytes of the run's metrics.json."""
    overrides = (
        *tiny_data_overrides(tiny_csv),
        *SHORT_RUN,
        "trainer.limit_train_batches=4",
        *overrides,
    )
    train(compose_config("train", run_dir, overrides))
    return (run_dir / "metrics.json").read_bytes()


def test_same_seed_and_config_give_identical_metrics_json(tmp_path, tiny_csv):
    """Augmentation on, data in the main process; a different seed gives other numbers."""
    first = metrics_json_of_run(tmp_path / "a", tiny_csv, "seed=3")
    assert metrics_json_of_run(tmp_path / "b", tiny_csv, "seed=3") == first
    assert metrics_json_of_run(tmp_path / "c", tiny_csv, "seed=4") != first
    assert str(tmp_path) not in first.decode()


def test_same_seed_with_worker_processes_gives_identical_metrics_json(tmp_path, tiny_csv):
    """Augmentation runs in two worker processes, seeded from `seed` by Lightning."""
    overrides = ("seed=3", "data.num_workers=2")
    first = metrics_json_of_run(tmp_path / "a", tiny_csv, *overrides)
    assert metrics_json_of_run(tmp_path / "b", tiny_csv, *overrides) == first


# ------------------------------------------------------------------------------ past one machine


def test_ddp_on_two_cpu_processes(tmp_path):
    """trainer=ddp with two gloo processes: metrics synced over both, one report in which every
    test image counts once (an odd split: no padding by repeated images), and the checkpoint
    evaluates on one device to the same scores."""
    sizes = {**TINY_SPLIT_SIZES, "num_test": TINY_SPLIT_SIZES["num_test"] + 1}
    csv_path = write_synthetic_fer2013_csv(tmp_path / "ddp.csv", seed=5, **sizes)
    run_dir = tmp_path / "run"
    result = run_script(
        "train.py",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        *tiny_data_overrides(csv_path)[:-1],  # keeps the (DDP-safe) progress bar
        *SHORT_RUN,
        f"hydra.run.dir={run_dir}",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "GLOBAL_RANK: 1" in result.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert sizes["num_test"] % 2 == 1 and metrics["support"] == sizes["num_test"]
    report = evaluate(
        compose_config(
            "evaluate", tmp_path / "eval", [f"ckpt_path={run_dir / 'checkpoints' / 'best.ckpt'}"]
        )
    )
    assert report["accuracy"] == pytest.approx(metrics["accuracy"])
    assert report["per_class"] == metrics["per_class"]


def test_multi_node_and_slurm_launcher_configs_compose(tmp_path, tiny_csv):
    plain = compose_config("train", tmp_path, ["hydra/launcher=submitit_slurm"])
    assert plain.hydra.launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    cfg = compose_config(
        "train",
        tmp_path,
        [
            "hydra/launcher=slurm_gpu",
            "trainer=ddp",
            "trainer.devices=4",
            "trainer.num_nodes=2",
            "hydra.launcher.partition=gpu",
        ],
    )
    launcher = cfg.hydra.launcher
    assert launcher._target_ == plain.hydra.launcher._target_
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)
    assert instantiate(launcher).params["partition"] == "gpu"
    assert launcher.max_num_timeout > 0 and launcher.signal_delay_s > 0  # requeued by submitit
    two_nodes = compose_config(
        "train", tmp_path, ["trainer=ddp", "trainer.accelerator=cpu", "trainer.num_nodes=2"]
    )
    cpu_nodes = build_trainer(two_nodes.trainer, [], False)
    assert (cpu_nodes.num_nodes, cpu_nodes.world_size) == (2, 4)


needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@needs_gpu
def test_gpus_alias_trains_on_one_gpu(train_cfg):
    metrics = train(train_cfg("trainer.gpus=1", "trainer.fast_dev_run=true"))
    assert np.isfinite(metrics["train/loss"]) and 0.0 <= metrics["test/acc"] <= 1.0


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("model", ["baseline", "deep"])
def test_gpu_trainer_with_bf16_mixed_precision(train_cfg, model):
    cfg = train_cfg("trainer=gpu", f"model={model}", "trainer.fast_dev_run=true")
    assert cfg.trainer.precision == "bf16-mixed"
    metrics = train(cfg)
    assert np.isfinite(metrics["train/loss"]) and 0.0 <= metrics["test/acc"] <= 1.0
