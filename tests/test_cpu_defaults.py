"""The fast CPU settings (NHWC weights) are the default on a CPU, can be turned off, and change
no prediction beyond 1e-5."""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from fer_lightning.classes import IMAGE_SIZE
from fer_lightning.inference import TorchClassifier
from fer_lightning.models import BaselineCNN, DeepConcatNet
from fer_lightning.system import FERSystem, prepare_for_inference, uses_channels_last
from tests.test_system import SGD, TinyDataModule, TinyNet

NETS = {"baseline": lambda: BaselineCNN(in_channels=1), "deep": lambda: DeepConcatNet()}


def _is_nhwc(net: nn.Module) -> bool:
    """The first (3x3) convolution's weight has the channel innermost: stride 1 on dim 1."""
    conv = next(module for module in net.modules() if isinstance(module, nn.Conv2d))
    return conv.weight.stride(1) == 1


@pytest.mark.parametrize(
    ("setting", "device", "expected"),
    [(None, "cpu", True), (None, "meta", False), (True, "meta", True), (False, "cpu", False)],
)
def test_channels_last_by_default_on_a_cpu_only(
    setting: bool | None, device: str, expected: bool
) -> None:
    assert uses_channels_last(setting, torch.device(device)) is expected


@pytest.mark.parametrize("name", sorted(NETS))
def test_fast_inference_gives_the_plain_nets_probabilities(name: str) -> None:
    torch.manual_seed(0)
    plain = NETS[name]().eval()
    fast = prepare_for_inference(copy.deepcopy(plain))
    assert _is_nhwc(fast) and not _is_nhwc(plain)
    assert not fast.training
    images = torch.randn(37, plain.in_channels, IMAGE_SIZE, IMAGE_SIZE)
    with torch.inference_mode():
        torch.testing.assert_close(
            fast(images).softmax(1), plain(images).softmax(1), atol=1e-5, rtol=0
        )
    assert not _is_nhwc(prepare_for_inference(copy.deepcopy(plain), channels_last=False))


def test_a_checkpoint_classifier_runs_fast_with_the_same_probabilities() -> None:
    torch.manual_seed(0)
    net = BaselineCNN(in_channels=1)
    faces = torch.randint(0, 256, (20, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.uint8).numpy()
    plain = TorchClassifier(copy.deepcopy(net), [str(k) for k in range(7)], 1)
    plain.net.to(memory_format=torch.contiguous_format)  # the NCHW net it ran before
    fast = TorchClassifier(net, [str(k) for k in range(7)], 1)
    assert _is_nhwc(fast.net) and not _is_nhwc(plain.net)
    torch.testing.assert_close(
        torch.from_numpy(fast.predict_proba(faces)),
        torch.from_numpy(plain.predict_proba(faces)),
        atol=1e-5,
        rtol=0,
    )


def _trainer(tmp_path: Path) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )


@pytest.mark.parametrize("channels_last", [None, False])
def test_training_on_a_cpu_uses_nhwc_unless_turned_off(
    tmp_path: Path, channels_last: bool | None
) -> None:
    torch.manual_seed(0)
    system = FERSystem(net=TinyNet(), optimizer=SGD, channels_last=channels_last)
    assert not _is_nhwc(system.net)  # decided once the device is known
    _trainer(tmp_path).fit(system, datamodule=TinyDataModule())
    assert _is_nhwc(system.net) is (channels_last is None)


def test_evaluating_with_the_cpu_default_predicts_as_the_plain_layout(tmp_path: Path) -> None:
    torch.manual_seed(0)
    fast = FERSystem(net=TinyNet(), channels_last=None)
    plain = FERSystem(net=copy.deepcopy(fast.net), channels_last=False)
    data = TinyDataModule()
    fast_probabilities = torch.cat(_trainer(tmp_path).predict(fast, datamodule=data))
    plain_probabilities = torch.cat(_trainer(tmp_path).predict(plain, datamodule=data))
    assert _is_nhwc(fast.net) and not _is_nhwc(plain.net)
    torch.testing.assert_close(fast_probabilities, plain_probabilities, atol=1e-5, rtol=0)


def _fitted_optimizer(tmp_path: Path, optimizer: Callable, **trainer_settings: object):
    torch.manual_seed(0)
    system = FERSystem(net=TinyNet(), optimizer=optimizer)
    trainer = pl.Trainer(
        **{
            "accelerator": "cpu",
            "max_epochs": 1,
            "limit_train_batches": 3,
            "limit_val_batches": 0,
            "logger": False,
            "enable_checkpointing": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "default_root_dir": tmp_path,
            **trainer_settings,
        }
    )
    trainer.fit(system, datamodule=TinyDataModule())
    return system, trainer.optimizers[0]


def test_adam_is_fused_on_a_cpu_with_the_same_weights(tmp_path: Path) -> None:
    fast, fused = _fitted_optimizer(tmp_path, partial(torch.optim.Adam, lr=1e-2))
    plain, unfused = _fitted_optimizer(tmp_path, partial(torch.optim.Adam, lr=1e-2, fused=False))
    assert fused.defaults["fused"] is True and unfused.defaults["fused"] is False
    for fast_weight, plain_weight in zip(fast.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(fast_weight, plain_weight, atol=1e-6, rtol=0)


def test_clipped_mixed_precision_keeps_the_unfused_optimizer(tmp_path: Path) -> None:
    """Lightning cannot clip the gradients of a fused optimizer under mixed precision."""
    _, optimizer = _fitted_optimizer(
        tmp_path, partial(torch.optim.Adam), precision="bf16-mixed", gradient_clip_val=1.0
    )
    assert not optimizer.defaults["fused"]
