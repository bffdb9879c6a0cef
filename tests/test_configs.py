"""Every config group composes and instantiates; the `trainer.gpus` alias behaves; a mistaken
setting is answered with the right key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from pytorch_lightning import Trainer

from fer_lightning.builders import build_trainer, instantiate_group, resolve_gpus_alias
from fer_lightning.classes import EMOTIONS
from fer_lightning.cli import setting_mistake
from fer_lightning.config import CONF_DIR
from fer_lightning.data.class_weights import class_weights
from fer_lightning.data.transforms import AUGMENT_KNOBS, BatchAugment
from fer_lightning.errors import FERUserError
from fer_lightning.evaluation import evaluate
from fer_lightning.training import build_data_and_system, train
from tests.conftest import LIMITED_RUN, compose_config, run_script, write_folders


def _options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))


def _instantiate_run(cfg):
    """Build datamodule, system and trainer exactly as train.py does, and push one batch through."""
    datamodule, system = build_data_and_system(cfg)
    trainer = build_trainer(
        cfg.trainer, instantiate_group(cfg.callbacks), instantiate_group(cfg.logger)
    )
    images, labels = next(iter(datamodule.train_dataloader()))
    assert images.shape[1:] == (cfg.model.net.in_channels, 48, 48)
    assert system(images).shape == (len(labels), len(EMOTIONS))
    return datamodule, system, trainer


@pytest.mark.parametrize("model", _options("model"))
def test_every_model_config_instantiates_and_wires_channels(train_cfg, model):
    cfg = train_cfg(f"model={model}")
    _, system, trainer = _instantiate_run(cfg)
    assert isinstance(trainer, Trainer)
    assert cfg.data.in_channels == system.net.in_channels


def test_model_group_has_the_reference_nets():
    assert {"baseline", "deep"} <= set(_options("model"))


# FER+ experiments need a votes file as well; tests/test_ferplus.py trains them
@pytest.mark.parametrize(
    "experiment", [name for name in _options("experiment") if not name.endswith("_ferplus")]
)
def test_every_experiment_composes_and_instantiates(train_cfg, experiment, tiny_csv):
    cfg = train_cfg(f"experiment={experiment}", f"data.csv_path={tiny_csv}", "data.cache_dir=null")
    _instantiate_run(cfg)


def test_baseline_reference_experiment_is_the_reference_recipe(tmp_path, tiny_csv):
    cfg = compose_config(
        "train",
        tmp_path,
        ["experiment=baseline_reference", f"data.csv_path={tiny_csv}", "data.num_workers=0"],
    )
    assert cfg.model.net._target_.endswith("BaselineCNN")
    assert (cfg.trainer.max_epochs, cfg.data.batch_size) == (12, 64)
    assert cfg.model.optimizer._target_ == "torch.optim.Adam"
    assert cfg.model.optimizer.lr == pytest.approx(1e-3)
    datamodule, system, _ = _instantiate_run(cfg)
    expected = class_weights(datamodule.class_counts(), "balanced")
    assert torch.allclose(system.loss_weights, torch.tensor(expected, dtype=torch.float32))


def test_deep_reference_experiment_uses_three_channels(train_cfg, tiny_csv):
    cfg = train_cfg("experiment=deep_reference", f"data.csv_path={tiny_csv}")
    assert cfg.model.net._target_.endswith("DeepConcatNet")
    assert cfg.data.in_channels == 3


def test_synthetic_data_config(tmp_path):
    cfg = compose_config(
        "train",
        tmp_path / "run",
        [
            "data=synthetic",
            f"paths.data_dir={tmp_path}",
            "data.num_train=140",
            "data.num_val=35",
            "data.num_test=35",
            "~callbacks.rich_progress_bar",
        ],
    )
    datamodule, _, _ = _instantiate_run(cfg)
    assert sum(datamodule.class_counts()) == 140


def test_folders_data_config(tmp_path):
    root = tmp_path / "folders"
    write_folders(root)
    cfg = compose_config(
        "train",
        tmp_path / "run",
        [
            "data=fer2013_folders",
            f"data.root={root}",
            "data.num_workers=0",
            "data.batch_size=8",
            "~callbacks.rich_progress_bar",
        ],
    )
    datamodule, _, _ = _instantiate_run(cfg)
    assert sum(datamodule.class_counts()) == 28  # 80 % of 35 training images, stratified


def test_image_folder_checkpoint_evaluates_from_the_folder_on_this_machine(tmp_path):
    """evaluate.py's `data.root` points a folder-trained checkpoint at a moved folder."""
    root = tmp_path / "folders"
    write_folders(root)
    run_overrides = ["data=fer2013_folders", f"data.root={root}", "data.batch_size=8", "model=vgg"]
    run_overrides += ["model.net.widths=[8,16]", "test=false", "~callbacks.rich_progress_bar"]
    train(compose_config("train", tmp_path / "run", [*run_overrides, *LIMITED_RUN]))
    moved = root.rename(tmp_path / "moved")
    best = tmp_path / "run" / "checkpoints" / "best.ckpt"
    report = evaluate(
        compose_config("evaluate", tmp_path / "eval", [f"ckpt_path={best}", f"data.root={moved}"])
    )
    assert sum(row["support"] for row in report["per_class"].values()) == 14  # 2 a class


def test_every_augment_knob_is_declared_and_overridable(tmp_path):
    """Each BatchAugment knob is in the data config, so a plain `data.augment.<knob>=` reaches
    the augmentation."""
    declared = compose_config("train", tmp_path / "run", ["data=fer2013"]).data.augment
    assert set(declared) == set(AUGMENT_KNOBS)
    overrides = {  # every knob: the moving ones off but pad_crop, zoom and erasing
        "random_resized_crop_scale": "null",
        "pad_crop": "4",
        "hflip": "0",
        "affine_degrees": "0",
        "affine_translate": "0",
        "affine_scale": "[0.9,1.1]",
        "random_erasing": "0.5",
        "mixup_alpha": "0",
        "cutmix_alpha": "0",
    }
    assert set(overrides) == set(AUGMENT_KNOBS)
    cfg = compose_config(
        "train",
        tmp_path / "run",
        ["data=fer2013", *(f"data.augment.{knob}={value}" for knob, value in overrides.items())],
    )
    augment = BatchAugment(OmegaConf.to_container(cfg.data.augment))
    assert (augment.crop_scale, augment.pad_crop, augment.zoom, augment.erasing) == (
        None,
        4,
        (0.9, 1.1),
        0.5,
    )
    assert (augment.hflip, augment.degrees, augment.translate, augment.mix) == (0, 0, 0, None)
    images = torch.linspace(-1, 1, 4 * 48 * 48).reshape(4, 1, 48, 48)
    labels = torch.arange(4)
    torch.manual_seed(0)
    augmented, same_labels = augment(images, labels)
    assert all(not torch.allclose(out, image) for out, image in zip(augmented, images, strict=True))
    assert torch.equal(same_labels, labels)  # no mixing: the labels stay class indices


@pytest.mark.parametrize("trainer", _options("trainer"))
def test_every_trainer_config_composes(train_cfg, trainer):
    cfg = train_cfg(f"trainer={trainer}")
    assert cfg.trainer._target_ == "pytorch_lightning.Trainer"
    if trainer == "gpu":
        gpu = cfg.trainer
        assert (gpu.accelerator, gpu.devices, gpu.precision) == ("gpu", 1, "bf16-mixed")
    if trainer == "ddp":
        cpu_trainer = build_trainer(
            OmegaConf.merge(cfg.trainer, {"accelerator": "cpu", "devices": 2}), [], False
        )
        assert cpu_trainer.world_size == 2


@pytest.mark.parametrize("debug", _options("debug"))
def test_every_debug_config_composes(train_cfg, debug):
    cfg = train_cfg(f"debug={debug}")
    assert cfg.trainer.accelerator == "cpu"
    assert cfg.task_name == "debug"


def test_optuna_search_composes(train_cfg):
    cfg = train_cfg("hparams_search=optuna")
    assert cfg.optimized_metric == "val/acc_best"
    assert "model.optimizer.lr" in cfg.hydra.sweeper.params
    assert cfg.hydra.sweeper.storage is None


def test_evaluate_config_composes(tmp_path):
    cfg = compose_config("evaluate", tmp_path, ["ckpt_path=some.ckpt", "split=val"])
    assert (cfg.ckpt_path, cfg.split) == ("some.ckpt", "val")
    assert cfg.trainer.logger is False


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["trainer.gpus=0", "trainer.accelerator=gpu", "trainer.devices=2"], ("cpu", 1)),
        (["trainer.accelerator=gpu", "trainer.devices=2"], ("gpu", 2)),
    ],
    ids=["zero-means-cpu", "unset-keeps-accelerator-and-devices"],
)
def test_gpus_alias_without_a_gpu_count(train_cfg, overrides, expected, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    resolved = resolve_gpus_alias(train_cfg(*overrides).trainer)
    assert (resolved.accelerator, resolved.devices) == expected
    assert "gpus" not in resolved


@pytest.mark.parametrize(("value", "shown"), [("-1", "-1"), ("true", "True"), ("1.5", "1.5")])
def test_gpus_alias_that_is_no_whole_number_is_a_user_error(train_cfg, value, shown):
    """trainer.gpus takes a count of GPUs: negatives, booleans and fractions are refused."""
    message = rf"trainer\.gpus must be a whole number >= 0 \(got {shown}\)"
    with pytest.raises(FERUserError, match=message):
        resolve_gpus_alias(train_cfg(f"trainer.gpus={value}").trainer)


def test_gpus_alias_maps_to_gpu_devices(train_cfg, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    resolved = resolve_gpus_alias(train_cfg("trainer.gpus=2").trainer)
    assert (resolved.accelerator, resolved.devices) == ("gpu", 2)
    with pytest.raises(FERUserError, match="only 2 are available"):
        resolve_gpus_alias(train_cfg("trainer.gpus=3").trainer)


def test_gpus_alias_without_gpu_is_one_clear_error(train_cfg, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(FERUserError, match="no GPU is available"):
        resolve_gpus_alias(train_cfg("trainer.gpus=1").trainer)
    # the GPU preset, without the alias: the same line, not Lightning's traceback at fit time
    with pytest.raises(FERUserError, match=r"trainer\.accelerator=gpu .* no GPU is available"):
        resolve_gpus_alias(train_cfg("trainer=gpu").trainer)
    # Lightning's "gpu" is Apple's MPS on a Mac: not refused there
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_gpus_alias(train_cfg("trainer=gpu").trainer).accelerator == "gpu"


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the message shown when there is no GPU"
)
def test_train_with_gpus_flag_fails_in_one_line_without_gpu(tmp_path: Path):
    result = run_script("train.py", "model=deep", "trainer.gpus=1", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "not in struct" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1
    assert "no GPU is available" in error_lines[0]


def test_cudnn_benchmark_is_set_on_every_trainer_so_it_cannot_leak(train_cfg):
    """Multirun jobs share a process: a job's `trainer.benchmark=true` must not reach the next."""
    build_trainer(train_cfg("trainer.benchmark=true").trainer, [], False)
    assert torch.backends.cudnn.benchmark is True
    build_trainer(train_cfg().trainer, [], False)
    assert torch.backends.cudnn.benchmark is False


def test_data_cache_and_logs_are_below_the_working_folder(tmp_path):
    """Not below the package (an installed one lives in site-packages), whatever PROJECT_ROOT says
    (lightning-hydra-template users often export it for another project); paths.root_dir moves
    them all (logs/ is below it too), FER_LIGHTNING_CACHE the cache alone."""
    script = (
        "from fer_lightning.config import compose_config as compose\n"
        "from pathlib import Path\n"
        "for overrides in ([], ['paths.root_dir=/else']):\n"
        "    paths = compose('train', 'run', overrides).paths\n"
        "    folders = (paths.root_dir, paths.data_dir, paths.cache_dir)\n"
        "    print(*(Path(folder).resolve() for folder in folders))"
    )
    env = {k: v for k, v in os.environ.items() if k != "FER_LIGHTNING_CACHE"}
    env["PROJECT_ROOT"] = str(tmp_path / "another_project")
    printed = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert printed.returncode == 0, printed.stderr
    cwd = tmp_path.resolve()
    here = [str(cwd), str(cwd / "data"), str(cwd / "data" / "cache")]
    assert printed.stdout.split() == [*here, "/else", "/else/data", "/else/data/cache"]
    env["FER_LIGHTNING_CACHE"] = str(tmp_path / "shared_cache")
    printed = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert printed.stdout.split()[2::3] == [str(cwd / "shared_cache")] * 2


@pytest.mark.parametrize(
    ("task", "override", "answer"),
    [
        ("explore", "csv_path=x.csv", "explore has no setting csv_path; did you mean data.csv"),
        ("evaluate", "csv_path=x.csv", "has no setting csv_path; did you mean data.csv_path=...?"),
        ("distill", "cache_dir=x", "did you mean data.cache_dir=... or paths.cache_dir=...?"),
        ("train", "max_epochs=3", "has no setting max_epochs; did you mean trainer.max_epochs="),
        ("explore", "ckpt=x.ckpt", "explore has no setting ckpt; did you mean ckpt_path=...?"),
        ("explore", "data.csvpath=x", "did you mean data.csv_path=...?"),
        ("export", "data.csv_path=x", "data.csv_path; the settings are task_name, ckpt_path,"),
        ("train", "model.net.widht=3", "of model.net are _target_, in_channels, num_classes"),
        ("train", "experiment=seed000", "experiment=seed000: there is no such experiment ("),
    ],
)
def test_a_mistaken_setting_is_answered_with_the_right_key(tmp_path, task, override, answer):
    with pytest.raises(ConfigCompositionException) as caught:
        compose_config(task, tmp_path, [override])
    message = setting_mistake(caught.value)
    assert answer in message
    assert "\n" not in message and "+" not in message  # one line, no advice to add the key
