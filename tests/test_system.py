"""Behaviour of FERSystem (training, metrics, checkpoints, schedulers) and TensorBoard extras."""

from __future__ import annotations

import copy
import math
from functools import partial
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EMAWeightAveraging, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, TensorDataset

from fer_lightning import callbacks
from fer_lightning.callbacks import (
    EMAWeights,
    HostCountedAveragedModel,
    TensorBoardExtras,
)
from fer_lightning.classes import EMOTIONS, IMAGE_SIZE, NUM_CLASSES
from fer_lightning.errors import FERUserError
from fer_lightning.loggers import log_hparams_with_metrics
from fer_lightning.system import FERSystem

# Tiny in-memory loaders cannot use worker processes usefully; Lightning's advice does not apply.
pytestmark = pytest.mark.filterwarnings("ignore:The '\\w+_dataloader' does not have many workers")

BATCH_SIZE = 4
NUM_TRAIN, NUM_VAL = 16, 10
MAX_EPOCHS = 2
SGD = partial(torch.optim.SGD, lr=0.05)


class TinyNet(nn.Module):
    """A few-parameter classifier with the attributes FERSystem expects of every net."""

    def __init__(self, in_channels: int = 1, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, 4, kernel_size=3),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _random_dataset(size: int, seed: int) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(size, 1, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    labels = torch.randint(0, NUM_CLASSES, (size,), generator=generator)
    return TensorDataset(images, labels)


class TinyDataModule(pl.LightningDataModule):
    """Random 48x48 images; validation doubles as test set."""

    def __init__(self) -> None:
        super().__init__()
        self.train_set = _random_dataset(NUM_TRAIN, seed=0)
        self.val_set = _random_dataset(NUM_VAL, seed=1)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=BATCH_SIZE, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=BATCH_SIZE)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        return self.val_dataloader()


def _trainer(tmp_path: Path, **overrides) -> pl.Trainer:
    settings = {
        "accelerator": "cpu",
        "max_epochs": MAX_EPOCHS,
        "limit_train_batches": 2,
        "log_every_n_steps": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": tmp_path,
    }
    return pl.Trainer(**(settings | overrides))


def _system(**kwargs) -> FERSystem:
    torch.manual_seed(0)
    return FERSystem(net=TinyNet(), optimizer=SGD, **kwargs)


def _expected_metric_names(stage: str) -> set[str]:
    names = {f"{stage}/loss", f"{stage}/acc", f"{stage}/f1_macro"}
    if stage != "train":
        names |= {
            f"{stage}/{score}/{name}"
            for score in ("precision", "recall", "f1")
            for name in EMOTIONS
        }
    return names


def test_fit_and_test_log_all_metrics_and_keep_confusion(tmp_path: Path) -> None:
    system, data = _system(), TinyDataModule()
    trainer = _trainer(tmp_path)
    trainer.fit(system, datamodule=data)

    logged = set(trainer.callback_metrics)
    expected = _expected_metric_names("train") | _expected_metric_names("val")
    assert expected | {"val/acc_best", "val/f1_macro_best"} <= logged
    assert trainer.callback_metrics["val/acc_best"] >= trainer.callback_metrics["val/acc"]
    assert system.val_confusion.shape == (NUM_CLASSES, NUM_CLASSES)
    assert system.val_confusion.dtype == torch.int64
    assert int(system.val_confusion.sum()) == NUM_VAL
    assert system.test_confusion is None

    results = trainer.test(system, datamodule=data, verbose=False)[0]
    assert _expected_metric_names("test") <= set(results)
    assert int(system.test_confusion.sum()) == NUM_VAL
    assert results["test/acc"] == pytest.approx(float(system.test_confusion.diag().sum()) / NUM_VAL)


class RecordBestAfterSanityCheck(pl.Callback):
    """Remembers whether the best-score trackers had been updated when the sanity check ended."""

    def on_sanity_check_end(self, trainer: pl.Trainer, pl_module: FERSystem) -> None:
        self.updated = pl_module.val_acc_best.update_called


class RecordValAcc(pl.Callback):
    """The val accuracy of every real validation epoch."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def on_validation_end(self, trainer: pl.Trainer, pl_module: FERSystem) -> None:
        if not trainer.sanity_checking:
            self.values.append(float(trainer.callback_metrics["val/acc"]))


def test_best_metrics_ignore_the_sanity_check_and_survive_a_reload(tmp_path: Path) -> None:
    system = _system()
    sanity, epochs = RecordBestAfterSanityCheck(), RecordValAcc()
    _trainer(tmp_path, num_sanity_val_steps=2, callbacks=[sanity, epochs]).fit(
        system, datamodule=TinyDataModule()
    )
    assert sanity.updated is False
    assert float(system.val_acc_best.compute()) == pytest.approx(max(epochs.values))
    restored = _system()
    restored.load_state_dict(system.state_dict())
    assert float(restored.val_acc_best.max_value) == pytest.approx(max(epochs.values))


def test_checkpoint_loads_with_weights_only(tmp_path: Path) -> None:
    weights = [1.0, 5.0, 1.0, 0.5, 1.0, 1.0, 2.0]
    system = _system(class_weights=weights, label_smoothing=0.1)
    assert "loss_weights" in system.state_dict()
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "checkpoints")
    trainer = _trainer(tmp_path, max_epochs=1, enable_checkpointing=True, callbacks=[checkpoint])
    trainer.fit(system, datamodule=TinyDataModule())

    raw = torch.load(checkpoint.best_model_path, weights_only=True)
    assert raw["hyper_parameters"]["class_names"] == list(EMOTIONS)
    assert raw["state_dict"]["loss_weights"].tolist() == weights

    restored = FERSystem.load_from_checkpoint(checkpoint.best_model_path, net=TinyNet())
    assert restored.hparams.class_weights == weights
    assert restored.hparams.label_smoothing == pytest.approx(0.1)
    assert restored.optimizer_factory is None
    restored_state = restored.state_dict()
    for key, value in system.state_dict().items():
        assert torch.equal(restored_state[key], value), key


def _manual_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, smoothing: float
) -> float:
    """Cross-entropy written out: per-sample smoothed NLL, weighted by the true class's weight."""
    total, weight_sum = 0.0, 0.0
    for row, target in zip(logits.tolist(), targets.tolist(), strict=True):
        log_norm = math.log(sum(math.exp(value) for value in row))
        log_probs = [value - log_norm for value in row]
        weighted_nll = sum(
            weights[k] * ((1 - smoothing) * (k == target) + smoothing / len(row)) * -log_probs[k]
            for k in range(len(row))
        )
        total += float(weighted_nll)
        weight_sum += float(weights[target])
    return total / weight_sum


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("weighted", [False, True])
def test_loss_applies_class_weights_and_label_smoothing(smoothing: float, weighted: bool) -> None:
    weights = [2.0, 0.0, 1.0, 3.0, 1.0, 0.5, 1.0] if weighted else None
    system = _system(class_weights=weights, label_smoothing=smoothing)
    logits = torch.linspace(-2.0, 2.0, 3 * NUM_CLASSES).reshape(3, NUM_CLASSES)
    targets = torch.tensor([0, 3, 5])
    expected = _manual_cross_entropy(
        logits, targets, torch.tensor(weights or [1.0] * NUM_CLASSES), smoothing
    )
    assert float(system.loss(logits, targets)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")  # no trainer: by design
def test_probability_targets_train_and_count_as_their_dominant_class() -> None:
    system = _system(label_smoothing=0.1)
    logits = torch.linspace(-2.0, 2.0, 3 * NUM_CLASSES).reshape(3, NUM_CLASSES)
    labels = torch.tensor([0, 3, 5])
    one_hot = torch.nn.functional.one_hot(labels, NUM_CLASSES).float()
    torch.testing.assert_close(system.loss(logits, one_hot), system.loss(logits, labels))
    mixed = 0.7 * one_hot + 0.3 * one_hot.roll(1, dims=0)  # what mixup makes of a batch
    images = torch.rand(3, 1, IMAGE_SIZE, IMAGE_SIZE)
    loss = system.training_step((images, mixed), 0)
    assert loss.ndim == 0 and torch.isfinite(loss)
    predicted = system(images).argmax(dim=1)
    expected = (predicted == labels).float().mean()
    torch.testing.assert_close(system.train_metrics.compute()["train/acc"], expected)


def test_zero_class_weight_ignores_that_class() -> None:
    logits = torch.tensor(
        [[3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0]]
    )
    only_happy = [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    loss_all = _system().loss(logits, torch.tensor([1, 3]))
    loss_happy_only = _system(class_weights=only_happy).loss(logits, torch.tensor([1, 3]))
    happy_alone = _system().loss(logits[1:], torch.tensor([3]))
    assert float(loss_happy_only) == pytest.approx(float(happy_alone))
    assert float(loss_all) > float(loss_happy_only)


# Lightning asks whether a per-epoch one-cycle schedule was meant; here it was
@pytest.mark.filterwarnings("ignore:A `OneCycleLR` scheduler is using 'interval'")
@pytest.mark.parametrize(
    ("interval", "total_steps"),
    [("step", MAX_EPOCHS * 2), ("epoch", MAX_EPOCHS)],  # 2 limited batches per epoch
)
def test_one_cycle_scheduler_gets_total_steps(tmp_path: Path, interval, total_steps) -> None:
    one_cycle = partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.1, total_steps=None)
    system = _system(scheduler=one_cycle, scheduler_interval=interval)
    trainer = _trainer(tmp_path)
    trainer.fit(system, datamodule=TinyDataModule())
    scheduler_config = trainer.lr_scheduler_configs[0]
    assert scheduler_config.interval == interval
    assert scheduler_config.scheduler.total_steps == total_steps
    # the whole cycle was run, to the very end of the schedule
    assert scheduler_config.scheduler.last_epoch == total_steps


@pytest.mark.filterwarnings("ignore:A `OneCycleLR` scheduler is using 'interval'")
def test_one_cycle_per_epoch_without_an_epoch_limit_is_one_line(tmp_path: Path) -> None:
    one_cycle = partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.1, total_steps=None)
    system = _system(scheduler=one_cycle, scheduler_interval="epoch")
    trainer = _trainer(tmp_path, max_epochs=-1, max_steps=2)
    with pytest.raises(FERUserError, match=r"needs trainer\.max_epochs >= 1"):
        trainer.fit(system, datamodule=TinyDataModule())


@pytest.mark.parametrize(
    ("pct_start", "warm_up"), [(0.25, "exactly 1 step"), (1.0, "the whole run")]
)
def test_one_cycle_that_torch_cannot_run_is_one_line(tmp_path: Path, pct_start, warm_up) -> None:
    one_cycle = partial(
        torch.optim.lr_scheduler.OneCycleLR, max_lr=0.1, total_steps=None, pct_start=pct_start
    )
    system = _system(scheduler=one_cycle, scheduler_interval="step")
    trainer = _trainer(tmp_path)  # 2 epochs of 2 steps
    with pytest.raises(FERUserError, match=rf"of 4 steps with pct_start=.* for {warm_up}, wh"):
        trainer.fit(system, datamodule=TinyDataModule())


def test_epoch_scheduler_keeps_its_own_arguments(tmp_path: Path) -> None:
    plateau = partial(torch.optim.lr_scheduler.ReduceLROnPlateau, mode="min", patience=0)
    system = _system(scheduler=plateau, scheduler_monitor="val/loss")
    trainer = _trainer(tmp_path)
    trainer.fit(system, datamodule=TinyDataModule())
    assert trainer.lr_scheduler_configs[0].monitor == "val/loss"
    assert trainer.lr_scheduler_configs[0].interval == "epoch"


def test_training_without_optimizer_is_a_user_error(tmp_path: Path) -> None:
    system = FERSystem(net=TinyNet())
    with pytest.raises(FERUserError, match=r"model\.optimizer"):
        _trainer(tmp_path).fit(system, datamodule=TinyDataModule())


def test_evaluation_and_prediction_work_without_optimizer(tmp_path: Path) -> None:
    system = FERSystem(net=TinyNet())
    trainer = _trainer(tmp_path)
    results = trainer.validate(system, datamodule=TinyDataModule(), verbose=False)[0]
    assert 0.0 <= results["val/acc"] <= 1.0
    batches = trainer.predict(system, datamodule=TinyDataModule())
    probabilities = torch.cat(batches)
    assert probabilities.shape == (NUM_VAL, NUM_CLASSES)
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(NUM_VAL))
    assert (probabilities >= 0).all()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"scheduler_interval": "batch"}, "scheduler_interval"),
        ({"class_weights": [1.0, 2.0]}, "class_weights"),
        ({"class_weights": [1.0, -1.0, 1.0, 1.0, 1.0, 1.0, 1.0]}, "class_weights"),
        ({"label_smoothing": 1.5}, "label_smoothing"),
        ({"class_names": ["a", "b"]}, "num_classes"),
        ({"compile_mode": "fast"}, "compile_mode"),
    ],
)
def test_bad_configuration_is_a_user_error(kwargs: dict, field: str) -> None:
    with pytest.raises(FERUserError, match=field):
        FERSystem(net=TinyNet(), optimizer=SGD, **kwargs)


def test_channels_last_keeps_the_logits_and_survives_a_weights_only_checkpoint(
    tmp_path: Path,
) -> None:
    plain = _system()
    nhwc = FERSystem(net=copy.deepcopy(plain.net), optimizer=SGD, channels_last=True)
    # (out, in, kh, kw) = (4, 1, 3, 3): NHWC strides put the channel innermost
    assert plain.net.layers[0].weight.stride() == (9, 9, 3, 1)
    assert nhwc.net.layers[0].weight.stride() == (9, 1, 3, 1)
    images = torch.randn(4, 1, 48, 48)
    torch.testing.assert_close(nhwc(images), plain(images))

    checkpoint = ModelCheckpoint(dirpath=tmp_path / "checkpoints")
    trainer = _trainer(tmp_path, max_epochs=1, enable_checkpointing=True, callbacks=[checkpoint])
    trainer.fit(nhwc, datamodule=TinyDataModule())
    restored = FERSystem.load_from_checkpoint(checkpoint.best_model_path, net=TinyNet())
    assert restored.hparams.channels_last is True
    assert restored.net.layers[0].weight.stride() == (9, 1, 3, 1)
    nhwc.eval(), restored.eval()
    torch.testing.assert_close(restored(images), nhwc(images))


def test_forward_returns_logits_and_example_input_matches_net() -> None:
    system = FERSystem(net=TinyNet(in_channels=3))
    assert system.example_input_array.shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE)
    logits = system(torch.zeros(2, 3, IMAGE_SIZE, IMAGE_SIZE))
    assert logits.shape == (2, NUM_CLASSES)
    assert torch.equal(logits, system.net(torch.zeros(2, 3, IMAGE_SIZE, IMAGE_SIZE)))


def test_tensorboard_extras_write_scalars_figures_and_graph(tmp_path: Path) -> None:
    logger = TensorBoardLogger(tmp_path, name="tb", default_hp_metric=False)
    trainer = _trainer(tmp_path, logger=logger, callbacks=[TensorBoardExtras(num_samples=6)])
    trainer.fit(_system(), datamodule=TinyDataModule())

    events = EventAccumulator(logger.log_dir, size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    assert {"val/acc", "val/f1_macro", "val/acc_best", "train/loss", "val/f1/Happy"} <= set(
        tags["scalars"]
    )
    assert tags["graph"]
    for tag in ("val/confusion_matrix", "val/sample_predictions"):
        images = events.Images(tag)
        assert len(images) == MAX_EPOCHS  # one per validation epoch, none for the sanity check
        assert images[0].width > 0
        assert images[0].encoded_image_string.startswith(b"\x89PNG")


def test_tensorboard_sample_predictions_use_the_validated_ema_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn = []
    original = callbacks.plot_sample_predictions

    def recording(images, targets, probabilities, class_names):
        drawn.append((images, probabilities))
        return original(images, targets, probabilities, class_names)

    monkeypatch.setattr(callbacks, "plot_sample_predictions", recording)

    class KeepRawWeights(pl.Callback):
        """The raw weights after the last validation (which put them back)."""

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            self.net = copy.deepcopy(pl_module.net)

    logger = TensorBoardLogger(tmp_path, name="tb", default_hp_metric=False)
    extras = TensorBoardExtras(num_samples=3, log_confusion=False, log_graph=False)
    raw = KeepRawWeights()
    system = _system()
    _trainer(tmp_path, logger=logger, callbacks=[extras, EMAWeights(decay=0.5), raw]).fit(
        system, datamodule=TinyDataModule()
    )
    assert len(drawn) == MAX_EPOCHS
    images, probabilities = drawn[-1]
    assert images.shape[0] == 3
    with torch.no_grad():
        # after fit the module holds the average, which the last validation scored ...
        torch.testing.assert_close(torch.softmax(system(images), dim=1), probabilities)
        # ... and the raw weights predict otherwise
        assert not torch.allclose(torch.softmax(raw.net(images), dim=1), probabilities)


class TinyBatchNormNet(TinyNet):
    """TinyNet with a BatchNorm, so that the average covers float and integer buffers too."""

    def __init__(self, in_channels: int = 1, num_classes: int = NUM_CLASSES) -> None:
        super().__init__(in_channels, num_classes)
        self.layers.insert(1, nn.BatchNorm2d(4))


def test_fused_ema_averages_what_lightnings_per_tensor_ema_does(tmp_path: Path) -> None:
    class KeepRawWeights(pl.Callback):
        def on_train_end(self, trainer, pl_module) -> None:
            # runs before the EMA callback's, which copies the average into the net
            self.state = copy.deepcopy(pl_module.net.state_dict())

    averages, raw_states = [], []
    for ema in (EMAWeights(decay=0.7), EMAWeightAveraging(decay=0.7)):
        torch.manual_seed(0)
        system = FERSystem(net=TinyBatchNormNet(), optimizer=SGD)
        raw = KeepRawWeights()
        _trainer(tmp_path, callbacks=[raw, ema]).fit(system, datamodule=TinyDataModule())
        averages.append(system.net.state_dict())
        raw_states.append(raw.state)
    fused, reference = averages
    assert fused.keys() == reference.keys()
    for name, value in fused.items():
        torch.testing.assert_close(value, reference[name], msg=name)
    torch.testing.assert_close(raw_states[0], raw_states[1])
    assert not torch.allclose(fused["layers.0.weight"], raw_states[0]["layers.0.weight"])
    assert not torch.allclose(fused["layers.1.running_var"], raw_states[0]["layers.1.running_var"])


@pytest.mark.parametrize("use_buffers", [True, False])
def test_host_counted_average_equals_torchs_and_continues_a_loaded_one(use_buffers: bool) -> None:
    """Without reading its counter, the average still copies on the first update only, and one
    loaded from a state dict (a resumed fit) goes on averaging."""

    def average(kind: type[AveragedModel], net: nn.Module) -> AveragedModel:
        return kind(net, multi_avg_fn=get_ema_multi_avg_fn(0.5), use_buffers=use_buffers)

    torch.manual_seed(0)
    net = TinyBatchNormNet()
    reference, ours = average(AveragedModel, net), average(HostCountedAveragedModel, net)

    def step() -> None:
        with torch.no_grad():
            for parameter in net.parameters():
                parameter.add_(torch.randn_like(parameter))
        net(torch.rand(4, 1, IMAGE_SIZE, IMAGE_SIZE))  # moves the BatchNorm statistics
        reference.update_parameters(net)

    for _ in range(3):
        step()
        ours.update_parameters(net)
    resumed = average(HostCountedAveragedModel, TinyBatchNormNet())
    resumed.load_state_dict(ours.state_dict())
    step()
    resumed.update_parameters(net)
    assert int(resumed.n_averaged) == 4
    torch.testing.assert_close(resumed.state_dict(), reference.state_dict())
    assert not torch.allclose(resumed.module.layers[0].weight, net.layers[0].weight)


def test_tensorboard_extras_are_a_no_op_without_tensorboard(tmp_path: Path) -> None:
    callback = TensorBoardExtras(num_samples=4)
    logger = CSVLogger(tmp_path)
    trainer = _trainer(tmp_path, max_epochs=1, logger=logger, callbacks=[callback])
    trainer.fit(_system(), datamodule=TinyDataModule())
    assert callback._samples is None
    assert not list(tmp_path.rglob("events.out.tfevents*"))


class RecordingTensorBoardLogger(TensorBoardLogger):
    """Remembers what it was asked to log, then logs it for real."""

    def log_hyperparams(self, params, metrics=None) -> None:
        self.recorded = (params, metrics)
        super().log_hyperparams(params, metrics)


def test_log_hparams_with_metrics_flattens_params(tmp_path: Path) -> None:
    logger = RecordingTensorBoardLogger(tmp_path, name="hp", default_hp_metric=False)
    params = {
        "model": {"lr": 0.01, "net": {"name": "tiny", "widths": [8, 16]}},
        "seed": 3,
        "x": None,
    }
    log_hparams_with_metrics(logger, params, {"test/acc": torch.tensor(0.5)})
    logger.experiment.flush()

    flat, metrics = logger.recorded
    assert flat == {
        "model/lr": 0.01,
        "model/net/name": "tiny",
        "model/net/widths": "[8, 16]",
        "seed": 3,
        "x": "None",
    }
    assert metrics == {"test/acc": 0.5}
    events = EventAccumulator(logger.log_dir)
    events.Reload()
    assert events.PluginTagToContent("hparams")


def test_log_hparams_with_metrics_ignores_other_loggers(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path)
    log_hparams_with_metrics(logger, {"a": 1}, {"m": 1.0})
    log_hparams_with_metrics(None, {"a": 1}, {"m": 1.0})
    assert not (Path(logger.log_dir) / "hparams.yaml").exists()
