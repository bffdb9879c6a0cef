"""Shipped weights: slimming a checkpoint and loading it back as `ckpt_path=pretrained:<name>`."""

from __future__ import annotations

import hashlib
import json
import sys

import pytest
import torch
from omegaconf import DictConfig, OmegaConf

from fer_lightning import checkpoint as checkpoint_module
from fer_lightning.checkpoint import pretrained_names, read_checkpoint
from fer_lightning.classes import EMOTIONS
from fer_lightning.errors import FERUserError
from fer_lightning.evaluation import evaluate
from fer_lightning.explore import explore
from fer_lightning.pretrained.__main__ import main, ship
from fer_lightning.tta import TTA_MODES
from tests.conftest import TINY_SPLIT_SIZES, compose_config

MANIFEST = json.loads(
    (checkpoint_module.PRETRAINED_DIR / "manifest.json").read_text(encoding="utf-8")
)
NARROW_VGG = "model.net.widths=[48,96,192,384]"
# each shipped file's training command, as docs/results.md gives it (data paths aside)
SHIPPED_RECIPES = {
    "baseline": ("experiment=baseline_fer2013",),
    "deep": ("experiment=deep_fer2013",),
    "vgg": ("experiment=vgg_fer2013",),
    # the ensemble's two other VGGs: the earlier recipe, and the regularised one at 80 epochs
    "vgg_small": (
        "experiment=vgg_fer2013",
        NARROW_VGG,
        "trainer.max_epochs=40",
        "data.augment.random_erasing=0.0",
        "model.optimizer.weight_decay=0.0001",
    ),
    "vgg_small_reg": ("experiment=vgg_fer2013", NARROW_VGG),
}


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    """An empty stand-in for the package's weights folder."""
    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.setattr(checkpoint_module, "PRETRAINED_DIR", folder)
    monkeypatch.setattr("fer_lightning.pretrained.__main__.PRETRAINED_DIR", folder)
    return folder


@pytest.mark.parametrize("half", [False, True])
def test_shipped_weights_evaluate_like_the_checkpoint(
    trained_checkpoint, trained_run, weights_dir, tmp_path, half, capsys
):
    ship(str(trained_checkpoint), "tiny", "none", half)
    assert "sha256" in capsys.readouterr().out
    shipped = torch.load(weights_dir / "tiny.pt", weights_only=True)
    assert set(shipped) == {"state_dict", "hyper_parameters", "fer_run_config", "tta"}
    dtypes = {value.dtype for value in shipped["state_dict"].values()}
    assert (torch.float16 in dtypes) is half
    assert (weights_dir / "tiny.pt").stat().st_size < trained_checkpoint.stat().st_size

    report = evaluate(compose_config("evaluate", tmp_path / "eval", ["ckpt_path=pretrained:tiny"]))
    trained = json.loads((trained_run / "metrics.json").read_text())
    if half:  # fp16 rounding may move a borderline image, not the report as a whole
        assert report["accuracy"] == pytest.approx(trained["accuracy"], abs=0.03)
    else:
        assert report["accuracy"] == pytest.approx(trained["accuracy"])


def test_fp16_refuses_weights_that_overflow_it(trained_checkpoint, weights_dir, tmp_path):
    checkpoint = torch.load(trained_checkpoint, weights_only=True)
    checkpoint["state_dict"]["net.dense_1.bias"][0] = 1e6  # like a large BatchNorm variance
    too_big = tmp_path / "too_big.ckpt"
    torch.save(checkpoint, too_big)
    with pytest.raises(
        FERUserError, match=r"net\.dense_1\.bias: values up to 1e\+06 overflow fp16"
    ):
        ship(str(too_big), "too_big", "none", half=True)
    assert not (weights_dir / "too_big.pt").exists()
    ship(str(too_big), "too_big", "none", half=False)  # fp32 holds it
    assert (weights_dir / "too_big.pt").is_file()


def test_evaluate_uses_the_shipped_tta_unless_told_otherwise(
    trained_checkpoint, weights_dir, tmp_path
):
    def evaluated(ckpt_path: str, *overrides: str) -> tuple[str, float]:
        out_dir = tmp_path / f"eval_{len(list(tmp_path.iterdir()))}"
        cfg = compose_config("evaluate", out_dir, [f"ckpt_path={ckpt_path}", *overrides])
        report = evaluate(cfg)
        written = json.loads((out_dir / "metrics.json").read_text())
        return written["tta"], report["accuracy"]

    ship(str(trained_checkpoint), "tiny", "tencrop", half=False)
    assert torch.load(weights_dir / "tiny.pt", weights_only=True)["tta"] == "tencrop"
    by_checkpoint = {mode: evaluated(str(trained_checkpoint), f"tta={mode}") for mode in TTA_MODES}
    # a training checkpoint carries no TTA: the default is none
    assert evaluated(str(trained_checkpoint)) == by_checkpoint["none"]
    # shipped weights default to their mode; an explicit tta= wins
    assert evaluated("pretrained:tiny") == by_checkpoint["tencrop"]
    assert evaluated("pretrained:tiny", "tta=none") == by_checkpoint["none"]


def test_shipping_needs_a_known_tta_mode(trained_checkpoint, weights_dir, monkeypatch, capsys):
    with pytest.raises(FERUserError, match="tta='mirror' is not one of"):
        ship(str(trained_checkpoint), "tiny", "mirror", half=False)
    monkeypatch.setattr(sys, "argv", ["fer_lightning.pretrained", str(trained_checkpoint), "tiny"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    assert "the following arguments are required: --tta" in capsys.readouterr().err
    assert not (weights_dir / "tiny.pt").exists()


def test_out_writes_the_weights_outside_the_package(
    trained_checkpoint, weights_dir, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "elsewhere"
    argv = [str(trained_checkpoint), "tiny", "--tta", "flip", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", ["fer_lightning.pretrained", *argv])
    main()
    written = out / "tiny.pt"
    digest = hashlib.sha256(written.read_bytes()).hexdigest()
    assert f"{written} {written.stat().st_size:,} bytes sha256 {digest}" in capsys.readouterr().out
    assert list(weights_dir.iterdir()) == []
    shipped = torch.load(written, weights_only=True)
    assert shipped["tta"] == "flip"
    checkpoint = torch.load(trained_checkpoint, weights_only=True)
    assert shipped["state_dict"].keys() == checkpoint["state_dict"].keys()
    for key, value in shipped["state_dict"].items():
        assert torch.equal(value, checkpoint["state_dict"][key])


def test_existing_weights_are_replaced_only_with_force(trained_checkpoint, weights_dir):
    """Shipping under a taken name (e.g. baseline) would silently replace weights whose digest
    the manifest states: refused, and the file is untouched, unless --force."""
    ship(str(trained_checkpoint), "tiny", "none", half=False)
    before = (weights_dir / "tiny.pt").read_bytes()
    with pytest.raises(FERUserError, match=r"tiny\.pt exists; pass --force to replace it"):
        ship(str(trained_checkpoint), "tiny", "flip", half=False)
    assert (weights_dir / "tiny.pt").read_bytes() == before
    ship(str(trained_checkpoint), "tiny", "flip", half=False, force=True)
    assert torch.load(weights_dir / "tiny.pt", weights_only=True)["tta"] == "flip"


def test_unknown_pretrained_name_lists_what_is_shipped(trained_checkpoint, weights_dir):
    ship(str(trained_checkpoint), "tiny", "none", False)
    assert pretrained_names() == ["tiny"]
    with pytest.raises(FERUserError, match=r"no pretrained weights named 'huge'.*shipped: tiny"):
        read_checkpoint("pretrained:huge")


@pytest.mark.parametrize(
    ("name", "net_class", "max_megabytes"),
    [
        ("baseline", "BaselineCNN", 25),
        ("deep", "DeepConcatNet", 25),
        ("vgg", "VGGFER", 25),
        ("vgg_small", "VGGFER", 25),
        ("vgg_small_reg", "VGGFER", 25),
    ],
)
def test_shipped_weights_load_offline_and_classify(
    tmp_path, tiny_csv, name, net_class, max_megabytes
):
    """The real shipped files: the right net, FER2013's classes, a report on any fer2013 csv."""
    assert name in pretrained_names()
    assert (checkpoint_module.PRETRAINED_DIR / f"{name}.pt").stat().st_size <= max_megabytes * 10**6
    checkpoint = read_checkpoint(f"pretrained:{name}")
    assert checkpoint["fer_run_config"]["model"]["net"]["_target_"].endswith(net_class)
    assert checkpoint["hyper_parameters"]["class_names"] == list(EMOTIONS)
    cfg = compose_config(
        "evaluate", tmp_path, [f"ckpt_path=pretrained:{name}", f"data.csv_path={tiny_csv}"]
    )
    report = evaluate(cfg)
    assert report["support"] == 70


def test_the_shipped_weights_are_the_ones_the_manifest_lists():
    """No stray or missing file: each shipped name has its manifest entry and recipe test."""
    assert sorted(MANIFEST) == [f"{name}.pt" for name in pretrained_names()]
    assert pretrained_names() == sorted(SHIPPED_RECIPES)


@pytest.mark.parametrize("name", sorted(SHIPPED_RECIPES))
def test_each_shipped_file_has_its_manifest_size_and_sha256(name):
    """The manifest beside the weights states each file's own size and digest (a re-shipped file
    without a manifest update fails here)."""
    path = checkpoint_module.PRETRAINED_DIR / f"{name}.pt"
    actual = {"size": path.stat().st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    assert MANIFEST[path.name] == actual, f"manifest.json: {path.name} is {json.dumps(actual)}"


# the settings that shape what a run learns (model.channels_last, the weights' memory layout, does
# not: its default follows the device)
RECIPE_KEYS = (
    "seed",
    "model.net",
    "model.optimizer",
    "model.scheduler",
    "model.scheduler_interval",
    "model.label_smoothing",
    "data.batch_size",
    "data.class_weighting",
    "data.augment",
    "trainer.max_epochs",
    "trainer.precision",
    "trainer.gradient_clip_val",
    "trainer.accumulate_grad_batches",
    "callbacks.ema",
)


@pytest.mark.parametrize("name", sorted(SHIPPED_RECIPES))
def test_each_shipped_file_was_trained_with_its_experiments_recipe(name, tmp_path):
    """The recipe docs/results.md gives for `pretrained:<name>` (its experiment and overrides):
    the run config stored in the shipped file agrees with it on every recipe setting. A knob added
    after the run is absent there, and its default must be off (what the run did without it)."""
    stored = OmegaConf.create(read_checkpoint(f"pretrained:{name}")["fer_run_config"])
    composed = compose_config("train", tmp_path, list(SHIPPED_RECIPES[name]))
    stored_settings = settings(stored, RECIPE_KEYS)
    for key, expected in settings(composed, RECIPE_KEYS).items():
        if key in stored_settings:
            assert stored_settings[key] == expected, key
        else:
            assert expected in (None, False, 0), key


def settings(cfg: DictConfig, keys: tuple[str, ...]) -> dict[str, object]:
    """The resolved leaf values under ``keys`` by dotted name (absent keys left out)."""
    leaves: dict[str, object] = {}

    def collect(prefix: str, value: object) -> None:
        if isinstance(value, dict):
            for name, item in value.items():
                collect(f"{prefix}.{name}", item)
        else:
            leaves[prefix] = value

    for key in keys:
        node = OmegaConf.select(cfg, key, default=KeyError)
        if OmegaConf.is_config(node):
            collect(key, OmegaConf.to_container(node, resolve=True))
        elif node is not KeyError:
            collect(key, node)
    return leaves


def test_weights_whose_csv_is_not_here_ask_for_one(trained_checkpoint, tiny_csv, tmp_path):
    """Shipped weights store their makers' csv path: evaluate.py and explore name the setting
    that gives yours (the same key) instead of reporting a file the user never named."""
    moved = torch.load(trained_checkpoint, weights_only=True)
    moved["fer_run_config"]["data"]["csv_path"] = str(tmp_path / "elsewhere" / "fer2013.csv")
    torch.save(moved, tmp_path / "moved.ckpt")
    ckpt = f"ckpt_path={tmp_path / 'moved.ckpt'}"
    hint = r"moved\.ckpt: the csv it was trained on \(.*elsewhere/fer2013\.csv\) is not on this"
    with pytest.raises(FERUserError, match=rf"{hint} machine; name yours with data\.csv_path="):
        evaluate(compose_config("evaluate", tmp_path / "eval", [ckpt]))
    with pytest.raises(FERUserError, match=rf"{hint} machine; name yours with data\.csv_path="):
        explore(compose_config("explore", tmp_path / "explore", [ckpt]))
    given = evaluate(
        compose_config("evaluate", tmp_path / "given", [ckpt, f"data.csv_path={tiny_csv}"])
    )
    assert given["support"] == TINY_SPLIT_SIZES["num_test"]
