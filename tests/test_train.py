"""End to end through the real configs: train -> checkpoints, report, TensorBoard -> evaluate."""

from __future__ import annotations

import csv
import functools
import json
import logging
import shutil
import threading
import traceback
import warnings
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from fer_lightning.callbacks import EMAWeights
from fer_lightning.checkpoint import (
    datamodule_from_checkpoint,
    load_net_weights,
    read_checkpoint,
    system_from_checkpoint,
)
from fer_lightning.classes import EMOTIONS
from fer_lightning.cli import exit_on_user_error
from fer_lightning.data import load_fer2013_csv
from fer_lightning.errors import FERUserError
from fer_lightning.evaluation import evaluate
from fer_lightning.pretrained.__main__ import ship
from fer_lightning.system import FERSystem
from fer_lightning.training import build_data_and_system, train
from tests.conftest import (
    LIMITED_RUN,
    THREE_STEP_EPOCHS,
    compose_config,
    run_script,
    tiny_data_overrides,
)


def test_vgg_recipe_trains_in_bf16_and_its_checkpoint_evaluates(tmp_path, tiny_csv):
    """experiment=vgg_fer2013 (bf16 autocast on the CPU, channels-last weights) end to end."""
    run_dir = tmp_path / "run"
    cfg = compose_config(
        "train",
        run_dir,
        [
            "experiment=vgg_fer2013",
            *tiny_data_overrides(tiny_csv),
            "model.net.widths=[8,16,32,64]",
            *LIMITED_RUN,
        ],
    )
    assert cfg.trainer.precision == "bf16-mixed" and cfg.model.channels_last
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = train(cfg)
    assert not [w for w in caught if "model summary" in str(w.message)]  # its 32 bits are right
    assert np.isfinite(metrics["train/loss"]) and 0.0 <= metrics["test/acc"] <= 1.0
    best = run_dir / "checkpoints" / "best.ckpt"
    stored = torch.load(best, weights_only=True)
    assert stored["hyper_parameters"]["channels_last"] is True
    assert all(
        value.dtype == torch.float32
        for value in stored["state_dict"].values()
        if value.is_floating_point()
    )
    report = evaluate(compose_config("evaluate", tmp_path / "eval", [f"ckpt_path={best}"]))
    assert report["accuracy"] == pytest.approx(
        json.loads((run_dir / "metrics.json").read_text())["accuracy"]
    )


@pytest.mark.parametrize(
    "backend",
    [
        # dynamo's graphs and AOTAutograd's forward and backward, run by torch's own kernels
        "aot_eager",
        # what model.compile_mode runs on: C++ code generated and compiled (minutes on 2 cores)
        pytest.param(
            "inductor",
            marks=[
                pytest.mark.slow,
                pytest.mark.skipif(
                    shutil.which("g++") is None, reason="torch.compile on a CPU needs g++"
                ),
            ],
        ),
    ],
)
def test_compiled_net_trains_as_the_eager_one_and_its_checkpoint_loads_eager(
    tmp_path, tiny_csv, monkeypatch, backend
):
    """model.compile_mode: the same seeded run, compiled, ends where the eager one does (with
    the EMA callback, whose copy of the net stays eager); the checkpoint keeps the eager keys,
    leaves compile_mode out of its hyper-parameters and evaluates without compiling."""
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend=backend))
    metrics, stored, compiled_graphs = {}, {}, {}
    for mode in ("null", "default"):
        run_dir = tmp_path / mode
        overrides = [
            f"model.compile_mode={mode}",
            "callbacks=[default,ema]",
            *LIMITED_RUN,
            "~callbacks.tensorboard_extras",
        ]
        cfg = compose_config("train", run_dir, [*tiny_data_overrides(tiny_csv), *overrides])
        torch._dynamo.reset()
        metrics[mode] = train(cfg)
        compiled_graphs[mode] = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        stored[mode] = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    assert compiled_graphs["null"] == 0 and compiled_graphs["default"] > 0
    for key in ("train/loss", "val/loss", "test/loss"):
        assert metrics["default"][key] == pytest.approx(metrics["null"][key], rel=1e-4)
    assert list(stored["default"]["state_dict"]) == list(stored["null"]["state_dict"])
    assert "compile_mode" not in stored["default"]["hyper_parameters"]
    best = tmp_path / "default" / "checkpoints" / "best.ckpt"
    assert system_from_checkpoint(stored["default"], best).compile_mode is None
    report = evaluate(compose_config("evaluate", tmp_path / "eval", [f"ckpt_path={best}"]))
    assert report["accuracy"] == pytest.approx(metrics["default"]["test/acc"])


def test_training_with_mixup_and_cutmix(train_cfg, monkeypatch):
    targets_seen = []
    plain_loss = FERSystem.loss

    def recording_loss(self, logits, targets):
        targets_seen.append(targets.detach().clone())
        return plain_loss(self, logits, targets)

    monkeypatch.setattr(FERSystem, "loss", recording_loss)
    cfg = train_cfg("debug=fdr", "data.augment.mixup_alpha=0.4", "data.augment.cutmix_alpha=1.0")
    metrics = train(cfg)
    assert np.isfinite(metrics["train/loss"])
    # the training batch was mixed: soft targets, rows of class probabilities below 1
    mixed = targets_seen[0]
    assert mixed.ndim == 2 and mixed.shape[1] == 7
    assert torch.allclose(mixed.sum(1), torch.ones(len(mixed))) and mixed.max(1).values.min() < 1


def _test_loss(system, datamodule) -> float:
    trainer = pl.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    (results,) = trainer.test(system, dataloaders=datamodule.test_dataloader(), verbose=False)
    return results["test/loss"]


def test_ema_checkpoints_hold_the_average_and_train_tests_it(train_cfg):
    cfg = train_cfg(
        "callbacks=[default,ema]", "seed=0", *LIMITED_RUN, "~callbacks.tensorboard_extras"
    )
    trained = train(cfg)
    best = Path(cfg.paths.output_dir) / "checkpoints" / "best.ckpt"
    checkpoint = read_checkpoint(best)
    averaged, raw = checkpoint["state_dict"], checkpoint["current_model_state"]
    weight = "net.dense_1.weight"
    assert averaged.keys() == raw.keys() and not torch.equal(averaged[weight], raw[weight])
    system = system_from_checkpoint(checkpoint, best)  # what evaluate.py and predict load
    torch.testing.assert_close(system.state_dict()[weight], averaged[weight])
    datamodule = datamodule_from_checkpoint(checkpoint, {})
    # train.py's own test scored the averaged weights, not the raw ones
    assert _test_loss(system, datamodule) == pytest.approx(trained["test/loss"], rel=1e-5)
    system.load_state_dict(raw)
    assert _test_loss(system, datamodule) != pytest.approx(trained["test/loss"], rel=1e-5)


def test_ema_resume_continues_the_raw_weights_and_the_average(train_cfg, monkeypatch):
    """Resuming a fit with EMA from last.ckpt: the net goes on from the raw weights (not the
    average the checkpoint's state_dict holds) and the average goes on from the saved one."""
    one_epoch = ("callbacks=[default,ema]", "~callbacks.tensorboard_extras", *THREE_STEP_EPOCHS)
    train(train_cfg(*one_epoch, "trainer.max_epochs=1"))
    last = Path(train_cfg().paths.output_dir) / "checkpoints" / "last.ckpt"
    saved = read_checkpoint(last)
    assert saved["averaging_state"]["n_averaged"] == 3  # one update per step

    seen = {}

    def record_start(self, trainer, pl_module):
        seen["net"] = {name: value.clone() for name, value in pl_module.state_dict().items()}
        seen["average"] = {
            name: value.clone() for name, value in self._average_model.state_dict().items()
        }

    monkeypatch.setattr(EMAWeights, "on_train_start", record_start, raising=False)
    train(train_cfg(*one_epoch, "trainer.max_epochs=2", f"ckpt_path={last}"))
    for name, raw in saved["current_model_state"].items():
        torch.testing.assert_close(seen["net"][name], raw, msg=name)
        torch.testing.assert_close(seen["average"][f"module.{name}"], saved["state_dict"][name])
    weight = "net.dense_1.weight"
    assert not torch.equal(saved["current_model_state"][weight], saved["state_dict"][weight])
    assert seen["average"]["n_averaged"] == 3
    assert read_checkpoint(last)["averaging_state"]["n_averaged"] == 6  # 3 more updates


# what makes the host wait for a GPU: reading a value, copying to the host, or an op whose output
# size depends on the values (nonzero, unique, boolean masks)
HOST_READS = {"item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__"}
DATA_DEPENDENT = {"nonzero", "argwhere", "unique", "unique_consecutive", "masked_select"}
CPP_HOST_READS = {"_local_scalar_dense", "nonzero"}  # what C++ code calls for the same


def _where_called(name: str) -> str:
    return name + "\n" + "".join(traceback.format_stack(limit=12)[:-2])


class _CppHostReads(TorchDispatchMode):
    """Records the CPP_HOST_READS calls that reach the dispatcher, from C++ code too."""

    def __init__(self, reads: list[str]) -> None:
        super().__init__()
        self.reads = reads

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.__name__.split(".")[0] in CPP_HOST_READS:
            self.reads.append(_where_called(func.__name__))
        return func(*args, **(kwargs or {}))


class _HostReads(TorchFunctionMode):
    """Records the host's reads of tensor values between `start` and `stop`: every Python-level
    call in HOST_READS or DATA_DEPENDENT, every boolean-mask index, and `_CppHostReads`."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []
        self._cpp_reads = _CppHostReads(self.reads)
        self.active = False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        index = args[1] if name == "__getitem__" else ()
        items = index if isinstance(index, tuple) else (index,)
        if name in HOST_READS | DATA_DEPENDENT or any(
            isinstance(item, torch.Tensor) and item.dtype == torch.bool for item in items
        ):
            self.reads.append(_where_called(name))
        return func(*args, **(kwargs or {}))

    def start(self) -> None:
        self.__enter__()
        self._cpp_reads.__enter__()
        self.active = True

    def stop(self) -> None:
        if self.active:
            self._cpp_reads.__exit__(None, None, None)
            self.__exit__(None, None, None)
            self.active = False


def test_training_steps_read_nothing_back_from_the_device(train_cfg, monkeypatch):
    """The deep recipe's training steps on the GPU trainer's bf16 autocast (batch transfer and
    augmentation, forward, backward, gradient clipping, optimizer, EMA update, metrics and their
    `self.log`, the progress bar) make none of the host reads that wait for a GPU, between two
    logger writes. SGD with Nesterov momentum stands in for AdamW, whose CPU implementation reads
    its step counters (on a GPU they stay on the host; its fused form refuses gradient clipping).
    A device-to-host copy by `.to()` is not told apart from a host-to-device one here;
    `torch.cuda.set_sync_debug_mode` on a GPU would."""
    STEPS = 4  # the reads of 3 whole steps
    reads = _HostReads()

    def count_between_first_and_last_step(self, outputs, batch, batch_idx) -> None:
        # the system's hook runs after the callbacks' (the EMA update, the progress bar), so from
        # the end of the first step to the end of the last one covers whole steps, each batch's
        # transfer and augmentation included; the epoch's end (checkpoints, epoch logs) reads
        if batch_idx == 0:
            reads.start()
        elif batch_idx == STEPS - 1:
            reads.stop()

    monkeypatch.setattr(FERSystem, "on_train_batch_end", count_between_first_and_last_step)
    cfg = train_cfg(
        "experiment=deep_fer2013",
        "trainer.precision=bf16-mixed",
        "model.optimizer._target_=torch.optim.SGD",
        "+model.optimizer.momentum=0.9",
        "+model.optimizer.nesterov=true",
        "test=false",
        "data.batch_size=8",  # the same calls as a batch of 32, on a quarter of the pixels
        "data.eval_batch_size=8",
        "~callbacks.tensorboard_extras",  # (epoch-end figures: outside the steps watched)
        "trainer.max_epochs=1",
        f"trainer.limit_train_batches={STEPS}",
        "trainer.limit_val_batches=1",
        f"trainer.log_every_n_steps={STEPS}",
    )
    assert cfg.callbacks.ema
    try:
        train(cfg)
    finally:
        reads.stop()
    assert reads.reads == [], reads.reads[0]


def test_run_dir_layout(trained_run):
    assert (trained_run / "checkpoints" / "best.ckpt").is_file()
    assert (trained_run / "checkpoints" / "last.ckpt").is_file()
    assert list((trained_run / "tensorboard").glob("events.out.tfevents.*"))
    for name in (
        "metrics.json",
        "classification_report.txt",
        "confusion_matrix.png",
        "confusion_matrix.csv",
    ):
        assert (trained_run / name).is_file(), name


def test_train_metrics_json_is_the_test_report(trained_run, tiny_csv):
    metrics = json.loads((trained_run / "metrics.json").read_text())
    test_labels = load_fer2013_csv(tiny_csv)["test"].labels
    assert metrics["split"] == "test"
    assert metrics["best_checkpoint"].endswith("best.ckpt")
    assert {name: metrics["per_class"][name]["support"] for name in EMOTIONS} == {
        name: int((test_labels == label).sum()) for label, name in enumerate(EMOTIONS)
    }
    assert 0.0 <= metrics["val"]["acc_best"] <= 1.0


def test_report_quotes_the_val_scores_of_the_tested_checkpoint(train_cfg, tmp_path):
    # "best" = the lowest epoch number (Lightning's checkpoint can monitor `epoch`): the first
    # epoch is tested, so its val scores, not the last epoch's, belong in the report
    cfg = train_cfg(
        "seed=0",
        *LIMITED_RUN,
        "trainer.max_epochs=3",
        "callbacks.model_checkpoint.monitor=epoch",
        "callbacks.model_checkpoint.mode=min",
        "~callbacks.early_stopping",
        "~callbacks.tensorboard_extras",
    )
    train(cfg)
    rows = [
        row
        for row in csv.DictReader((tmp_path / "run" / "csv" / "metrics.csv").open())
        if row["val/loss"]
    ]
    chosen = rows[0]
    assert float(chosen["val/loss"]) != float(rows[-1]["val/loss"]), "setup: the net must learn"
    report = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert report["val"]["acc"] == pytest.approx(float(chosen["val/acc"]))
    assert report["val"]["f1_macro"] == pytest.approx(float(chosen["val/f1_macro"]))
    assert report["val"]["loss"] == pytest.approx(float(chosen["val/loss"]))


def test_checkpoint_loads_with_weights_only(trained_run):
    checkpoint = torch.load(trained_run / "checkpoints" / "best.ckpt", weights_only=True)
    assert "fer_run_config" in checkpoint
    assert checkpoint["hyper_parameters"]["class_names"] == list(EMOTIONS)


def _read_confusion(path: Path) -> np.ndarray:
    return np.loadtxt(path, delimiter=",", skiprows=1, usecols=range(1, len(EMOTIONS) + 1))


def test_evaluate_round_trip_reproduces_the_test_report(trained_run, tmp_path, tiny_csv):
    cfg = compose_config(
        "evaluate", tmp_path, [f"ckpt_path={trained_run / 'checkpoints' / 'best.ckpt'}"]
    )
    report = evaluate(cfg)
    trained = json.loads((trained_run / "metrics.json").read_text())
    assert report["accuracy"] == pytest.approx(trained["accuracy"])
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["accuracy"] == pytest.approx(report["accuracy"])
    assert set(written["per_class"]["Happy"]) >= {"precision", "recall", "f1", "support"}
    confusion = _read_confusion(tmp_path / "confusion_matrix.csv")
    assert confusion.sum() == len(load_fer2013_csv(tiny_csv)["test"].labels)
    np.testing.assert_array_equal(confusion, _read_confusion(trained_run / "confusion_matrix.csv"))


def test_evaluate_overrides_the_stored_evaluation_batch_size(trained_run, tmp_path):
    best = trained_run / "checkpoints" / "best.ckpt"
    for overrides, expected in (([], 256), (["data.eval_batch_size=7"], 7)):
        cfg = compose_config("evaluate", tmp_path, [f"ckpt_path={best}", *overrides])
        datamodule = datamodule_from_checkpoint(read_checkpoint(best), cfg.data)
        assert datamodule.test_dataloader().batch_size == expected


def test_evaluate_cli_on_the_val_split(trained_run, tmp_path, tiny_csv):
    result = run_script(
        "evaluate.py",
        f"ckpt_path={trained_run / 'checkpoints' / 'best.ckpt'}",
        "split=val",
        f"data.csv_path={tiny_csv}",
        f"hydra.run.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr
    val_labels = load_fer2013_csv(tiny_csv)["val"].labels
    for line in (
        "precision",
        "recall",
        "f1-score",
        "support",
        "accuracy",
        "macro avg",
        "weighted avg",
    ):
        assert line in result.stdout
    happy_row = next(row for row in result.stdout.splitlines() if row.strip().startswith("Happy"))
    assert happy_row.split()[-1] == str(int((val_labels == EMOTIONS.index("Happy")).sum()))
    assert json.loads((tmp_path / "metrics.json").read_text())["split"] == "val"
    # nothing a user cannot act on: Lightning's advert and its internal deprecation are muted
    output = result.stdout + result.stderr
    assert "Tip" not in output and "LeafSpec" not in output and "Warning" not in output


def test_tensorboard_has_scalars_figures_graph_and_hparams(trained_run):
    events = EventAccumulator(
        str(trained_run / "tensorboard"), size_guidance={"images": 0, "scalars": 0}
    )
    events.Reload()
    tags = events.Tags()
    for scalar in (
        "train/loss",
        "train/acc",
        "val/loss",
        "val/acc",
        "val/f1_macro",
        "val/acc_best",
        "val/f1/Happy",
        "val/precision/Disgust",
        "val/recall/Neutral",
        "lr-Adam",
        "test/acc",
    ):
        assert scalar in tags["scalars"], scalar
    assert {"val/confusion_matrix", "val/sample_predictions"} <= set(tags["images"])
    assert len(events.Images("val/confusion_matrix")) == 2  # one per validation epoch
    assert tags["graph"]
    hparams_runs = list((trained_run / "tensorboard").rglob("events.out.tfevents.*"))
    assert any(b"hparams" in path.read_bytes() for path in hparams_runs)


def test_cli_multirun_over_both_models(tmp_path, tiny_csv):
    result = run_script(
        "train.py",
        "-m",
        "model=baseline,deep",
        "debug=fdr",
        "data=fer2013",
        f"data.csv_path={tiny_csv}",
        "data.cache_dir=null",
        "~callbacks.rich_progress_bar",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for job in ("0", "1"):
        assert json.loads((tmp_path / job / "metrics.json").read_text())["split"] == "test"
    assert "DeepConcatNet" in (tmp_path / "1" / ".hydra" / "config.yaml").read_text()


def test_cli_optuna_search_returns_the_optimised_metric(tmp_path, tiny_csv):
    result = run_script(
        "train.py",
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.n_startup_trials=1",
        "data=fer2013",
        f"data.csv_path={tiny_csv}",
        "data.cache_dir=null",
        "data.num_workers=0",
        "~callbacks.rich_progress_bar",
        f"hydra.sweep.dir={tmp_path}",
        *LIMITED_RUN,
        "~callbacks.tensorboard_extras",  # (LIMITED_RUN sets its num_samples)
        "trainer.max_epochs=1",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = (tmp_path / "optimization_results.yaml").read_text()
    assert "best_value" in results and "model.optimizer.lr" in results
    # trials never touch PrivateTest: no test report anywhere in the sweep
    assert (tmp_path / "0" / "checkpoints" / "best.ckpt").is_file()
    assert not list(tmp_path.rglob("metrics.json"))


def test_cli_missing_csv_explains_where_data_comes_from(tmp_path):
    missing = tmp_path / "nowhere" / "fer2013.csv"
    result = run_script(
        "train.py", "data=fer2013", f"data.csv_path={missing}", f"hydra.run.dir={tmp_path}"
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert str(missing) in result.stderr and "data=synthetic" in result.stderr


@pytest.mark.parametrize(
    ("content", "expected", "command_line"),
    [
        (None, "does not exist", False),
        (b"not a checkpoint at all", "not a readable checkpoint", True),
    ],
)
def test_cli_evaluate_bad_checkpoint_is_one_line(tmp_path, capsys, content, expected, command_line):
    """The unreadable file through the real command line; the missing one through the same
    handling of user errors in this process (a fresh interpreter costs seconds of imports)."""
    checkpoint = tmp_path / "model.ckpt"
    if content is not None:
        checkpoint.write_bytes(content)
    if command_line:
        result = run_script(
            "evaluate.py", f"ckpt_path={checkpoint}", f"hydra.run.dir={tmp_path / 'eval'}"
        )
        returncode, stderr = result.returncode, result.stderr
    else:
        cfg = compose_config("evaluate", tmp_path / "eval", [f"ckpt_path={checkpoint}"])
        with pytest.raises(SystemExit) as exited:
            exit_on_user_error(evaluate, cfg)
        returncode, stderr = exited.value.code, capsys.readouterr().err
    assert returncode == 2
    assert "Traceback" not in stderr
    (error_line,) = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert str(checkpoint) in error_line and expected in error_line
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_checkpoint_without_run_config_is_rejected(tmp_path):
    checkpoint = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, checkpoint)
    with pytest.raises(FERUserError, match="not a fer-lightning checkpoint"):
        read_checkpoint(checkpoint)


def test_evaluate_rejects_an_unknown_split(trained_run, tmp_path):
    cfg = compose_config(
        "evaluate",
        tmp_path,
        [f"ckpt_path={trained_run / 'checkpoints' / 'best.ckpt'}", "split=dev"],
    )
    with pytest.raises(FERUserError, match="split must be one of"):
        evaluate(cfg)


def test_init_weights_starts_a_new_run_from_the_net_weights(trained_run, train_cfg, tiny_csv):
    best = trained_run / "checkpoints" / "best.ckpt"
    trained = json.loads((trained_run / "metrics.json").read_text())
    # no training: the test then scores the initial weights, which are the trained run's net
    cfg = train_cfg(f"init_weights={best}", "train=false", "data.class_weighting=balanced")
    datamodule, system = build_data_and_system(cfg)
    metrics = train(cfg)
    assert metrics["test/acc"] == pytest.approx(trained["accuracy"])
    # the new run keeps its own loss weights (balanced), not the checkpoint's (none)
    load_net_weights(system, best)
    torch.testing.assert_close(system.loss_weights, torch.tensor(datamodule.class_weights()))
    assert not torch.equal(system.loss_weights, torch.ones(len(EMOTIONS)))


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (("ckpt_path=last.ckpt",), "ckpt_path only resumes training"),
        ((), "would test an untrained net"),
    ],
)
def test_train_false_refuses_to_test_weights_it_did_not_mean(train_cfg, overrides, expected):
    # refused before the data is read: the csv path does not exist
    cfg = train_cfg("train=false", "data.csv_path=/nonexistent.csv", *overrides)
    with pytest.raises(FERUserError, match=expected):
        train(cfg)


def test_init_weights_errors_are_one_line(trained_run, train_cfg):
    best = trained_run / "checkpoints" / "best.ckpt"
    with pytest.raises(FERUserError, match="not both"):
        train(train_cfg(f"init_weights={best}", f"ckpt_path={best}"))
    with pytest.raises(
        FERUserError,
        match=r"best\.ckpt: the checkpoint holds a \S+BaselineCNN net but the config trains a "
        r"DeepConcatNet; start from it with the model it was trained with",
    ):
        train(train_cfg(f"init_weights={best}", "model=deep", "train=false"))
    # the same net in another shape: torch's first mismatch, not its bare header line
    with pytest.raises(
        FERUserError,
        match=r"best\.ckpt: its weights do not fit the network BaselineCNN \(size mismatch for",
    ):
        train(train_cfg(f"init_weights={best}", "model.net.in_channels=3", "train=false"))


@pytest.mark.parametrize("weights", ["pretrained:baseline", "slimmed"])
def test_resuming_from_weights_without_training_state_is_one_line(
    weights, trained_checkpoint, train_cfg, tmp_path
):
    """ckpt_path resumes a fit; shipped or slimmed weights hold no optimizer or loop state, so
    Lightning would fail deep inside (a missing-file or KeyError traceback): say what to use."""
    if weights == "slimmed":
        ship(str(trained_checkpoint), "slimmed", "none", half=False, out=tmp_path)
        weights = str(tmp_path / "slimmed.pt")
    cfg = train_cfg(f"ckpt_path={weights}", *LIMITED_RUN)
    with pytest.raises(FERUserError, match=r"no training state to resume.*init_weights="):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_test_limited_to_no_batch_is_refused_before_training(train_cfg, trained_run, tmp_path):
    """limit_test_batches=0 leaves no confusion matrix to report: refused before the fit (not
    after hours of training), and by evaluate.py before loading anything."""
    cfg = train_cfg(*LIMITED_RUN, "~callbacks.tensorboard_extras", "trainer.limit_test_batches=0")
    with pytest.raises(FERUserError, match=r"limit_test_batches=0 runs no test batch.*test=false"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()
    cfg.test = False  # what the message advises
    assert "val/acc" in train(cfg)
    evaluate_cfg = compose_config(
        "evaluate",
        tmp_path / "eval",
        [f"ckpt_path={trained_run / 'checkpoints' / 'best.ckpt'}", "trainer.limit_test_batches=0"],
    )
    with pytest.raises(FERUserError, match="limit_test_batches=0 runs no test batch"):
        evaluate(evaluate_cfg)


def test_a_run_leaves_no_tensorboard_writer_open(train_cfg):
    """The final HPARAMS write reopens TensorBoard's event file after Lightning closed it; left
    open, each run (each multirun job) would leave a writer thread behind."""
    before = set(threading.enumerate())
    train(train_cfg(*LIMITED_RUN))
    left = [thread for thread in set(threading.enumerate()) - before if thread.is_alive()]
    assert not left, left


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["callbacks.model_checkpoint.monitor=val/accuracy"],
            r"ModelCheckpoint\.monitor='val/accuracy' is not a metric this run logs; "
            r"choose one of .*val/acc, val/acc_best",
        ),
        (
            [
                "model.scheduler={_target_:torch.optim.lr_scheduler.ReduceLROnPlateau,"
                "_partial_:true}",
                "model.scheduler_monitor=val/accuracy",
            ],
            r"model\.scheduler_monitor='val/accuracy'",
        ),
        (
            ["callbacks.model_checkpoint.monitor=val/loss"],  # mode stays max
            r"monitor='val/loss' with mode='max' would keep the worst epoch; "
            r"set callbacks\.model_checkpoint\.mode=min",
        ),
        (["seed=-1"], r"seed must be a whole number >= 0, got -1"),
        (["model.optimizer.lr=-1"], r"model\.optimizer: Invalid learning rate: -1"),
    ],
    ids=["unlogged-monitor", "unlogged-scheduler-monitor", "loss-maximised", "seed", "lr"],
)
def test_fit_settings_that_would_fail_late_are_refused_up_front(
    train_cfg, tmp_path, overrides, expected
):
    """Mistakes Lightning or torch would report with a traceback (after an epoch, or at the
    first step) or not at all (a loss maximised keeps the worst checkpoint): one line first."""
    with pytest.raises(FERUserError, match=expected):
        train(train_cfg(*LIMITED_RUN, *overrides))
    assert not list((tmp_path / "run").glob("checkpoints/*.ckpt"))


def test_a_loss_monitored_with_mode_min_trains(train_cfg):
    """The checks above pass what is right: a loss minimised, and no scheduler monitor at all
    when no ReduceLROnPlateau reads it."""
    metrics = train(
        train_cfg(
            *LIMITED_RUN,
            "~callbacks.tensorboard_extras",
            "callbacks.model_checkpoint.monitor=val/loss",
            "callbacks.model_checkpoint.mode=min",
            "model.scheduler_monitor=null",
            "test=false",
        )
    )
    assert "val/loss" in metrics


def test_train_false_with_init_weights_tests_them_and_exits_cleanly(
    trained_checkpoint, tiny_csv, tmp_path
):
    """The command train=false's own error suggests: it reports the test and exits 0 (no
    sweep metric is asked of a single run that fitted nothing)."""
    result = run_script(
        "train.py",
        "train=false",
        f"init_weights={trained_checkpoint}",
        *tiny_data_overrides(tiny_csv),
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["split"] == "test"


def test_training_on_synthetic_data_says_it_ignores_fer2013_csv(tmp_path, monkeypatch, caplog):
    """FER2013_CSV is read by data=fer2013 only: a plain `python train.py` with it exported
    trains on synthetic faces, and says so (evaluating a synthetic run does not)."""
    cfg = compose_config(
        "train",
        tmp_path / "run",
        [f"data.data_dir={tmp_path}", "data.num_train=70", "data.num_val=14", "data.num_test=14"],
    )
    notice = "FER2013_CSV is set, but data=synthetic (the default) does not read it"
    monkeypatch.delenv("FER2013_CSV", raising=False)  # (CI sets it for the real-data tests)
    with caplog.at_level(logging.WARNING, logger="fer_lightning.training"):
        build_data_and_system(cfg)
        assert notice not in caplog.text
        monkeypatch.setenv("FER2013_CSV", str(tmp_path / "fer2013.csv"))
        build_data_and_system(cfg)
    assert notice in caplog.text and "add data=fer2013" in caplog.text
