"""Self-describing checkpoints: the resolved run config travels inside, so evaluation needs
nothing else. Reads checkpoint files and the shipped weights, named `pretrained:<name>`: slimmed
checkpoints in fer_lightning/pretrained/ (written by `python -m fer_lightning.pretrained`)."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from pytorch_lightning import Callback, LightningDataModule, LightningModule, Trainer
from torch import nn

from fer_lightning.errors import FERUserError, first_line
from fer_lightning.tta import check_tta_mode

RUN_CONFIG_KEY = "fer_run_config"
# the validation (PublicTest) scores current when the checkpoint was written: for best.ckpt, its own
VAL_METRICS_KEY = "fer_val_metrics"
# shipped weights carry the test-time augmentation chosen for them on PublicTest
TTA_KEY = "tta"
# what Lightning needs to resume a fit; slimmed and shipped weights leave them out
TRAINING_STATE_KEYS = frozenset({"loops", "optimizer_states", "pytorch-lightning_version"})
PRETRAINED_PREFIX = "pretrained:"
# the shipped weights: <name>.pt, loaded offline as `pretrained:<name>`
PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"


def pretrained_names() -> list[str]:
    """Names of the shipped weights."""
    return sorted(path.stem for path in PRETRAINED_DIR.glob("*.pt"))


def is_pretrained(ckpt_path: str | os.PathLike) -> bool:
    """Whether ``ckpt_path`` names shipped weights (`pretrained:<name>`) rather than a file."""
    return str(ckpt_path).startswith(PRETRAINED_PREFIX)


def resolve_checkpoint_path(ckpt_path: str | os.PathLike | list[str]) -> Path:
    """`pretrained:<name>` as the shipped file's path; any other value as a plain path."""
    if isinstance(ckpt_path, ListConfig | list | tuple):  # an ensemble's members, not one model
        raise FERUserError(
            f"got a list of checkpoints ({list(ckpt_path)}); only evaluate and predict take "
            "one (an ensemble), here name a single checkpoint"
        )
    text = str(ckpt_path)
    if not is_pretrained(text):
        return Path(text).expanduser()
    name = text.removeprefix(PRETRAINED_PREFIX)
    path = PRETRAINED_DIR / f"{name}.pt"
    if not path.is_file():
        shipped = ", ".join(pretrained_names()) or "none yet"
        raise FERUserError(f"no pretrained weights named {name!r} are shipped (shipped: {shipped})")
    return path


class StoreRunConfig(Callback):
    """Write the resolved run config (plain dicts and lists only) and the latest validation scores
    into every checkpoint, so that a report of best.ckpt can quote the PublicTest scores it was
    chosen by rather than the last epoch's."""

    def __init__(self, run_config: dict[str, Any]) -> None:
        self.run_config = run_config

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[RUN_CONFIG_KEY] = self.run_config
        checkpoint[VAL_METRICS_KEY] = {
            name.removeprefix("val/"): float(value)
            for name, value in trainer.callback_metrics.items()
            if name.startswith("val/")
        }


def read_checkpoint(path: str | os.PathLike, mmap: bool = False) -> dict[str, Any]:
    """Load a checkpoint (a path, or `pretrained:<name>` for shipped weights) with torch's safe
    `weights_only` loader; bad files fail in one line. ``mmap``: tensors are mapped, not read,
    until used (to inspect a file that something else loads)."""
    path = resolve_checkpoint_path(path)
    if path.is_dir():
        raise FERUserError(f"checkpoint {path} is a directory, not a checkpoint file")
    if not path.is_file():
        raise FERUserError(f"checkpoint {path} does not exist")
    if path.suffix.lower() == ".onnx" or has_compiled_code(path):
        raise FERUserError(
            f"{path}: an exported model (ONNX or TorchScript), where a Lightning .ckpt or "
            "pretrained:<name> is needed; exported models run alone, in python -m "
            "fer_lightning.predict <source> ckpt_path=<it>"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    # torch.load fails in many ways on a file that is no checkpoint (a text file reaches the legacy
    # unpickler, which raises IndexError or KeyError): each means the same to the user
    except Exception as err:
        raise FERUserError(
            f"{path}: not a readable checkpoint ({type(err).__name__}: {first_line(err)})"
        ) from err
    if not isinstance(checkpoint, dict) or RUN_CONFIG_KEY not in checkpoint:
        raise FERUserError(f"{path}: not a fer-lightning checkpoint (it has no stored run config)")
    return checkpoint


def has_compiled_code(path: Path) -> bool:
    """True for a TorchScript archive: a zip holding compiled ``code/``, which ``torch.save``
    files (checkpoints) do not have."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        # <archive>/code/...; a torch.save file keeps its pickles in <archive>/data.pkl, ...
        return any(name.split("/")[1:2] == ["code"] for name in archive.namelist())


def run_config(checkpoint: dict[str, Any]) -> DictConfig:
    """The training run's resolved config stored in a checkpoint."""
    return OmegaConf.create(checkpoint[RUN_CONFIG_KEY])


def stored_tta(checkpoint: dict[str, Any]) -> str:
    """The TTA mode a checkpoint was shipped with (`none` for a training checkpoint)."""
    return check_tta_mode(str(checkpoint.get(TTA_KEY, "none")))


def system_from_checkpoint(checkpoint: dict[str, Any], path: str | os.PathLike) -> LightningModule:
    """Rebuild the system (net from the stored config, weights from the state dict) in eval mode."""
    model_cfg = run_config(checkpoint).model
    net = hydra.utils.instantiate(model_cfg.net)
    system_class = hydra.utils.get_class(model_cfg._target_)
    system = system_class(net=net, **checkpoint.get("hyper_parameters", {}))
    load_weights(system, checkpoint, path)
    return system.eval()


def require_stored_csv(
    path: str | os.PathLike, checkpoint: dict[str, Any], csv_path: str | None, option: str
) -> None:
    """A checkpoint's data is the csv of its training run unless ``option`` names another: when
    that csv is not on this machine (shipped weights store their makers' path), say which
    setting to give rather than report a missing file the user never named."""
    stored = run_config(checkpoint).data.get("csv_path")
    if csv_path or not stored or Path(stored).expanduser().is_file():
        return
    raise FERUserError(
        f"{path}: the csv it was trained on ({stored}) is not on this machine; name yours with "
        f"{option}=<fer2013.csv or .csv.gz>"
    )


def datamodule_from_checkpoint(
    checkpoint: dict[str, Any], overrides: Mapping[str, Any]
) -> LightningDataModule:
    """The training run's datamodule, loaded; non-null ``overrides`` (csv_path, cache_dir, ...)
    replace the stored data settings."""
    kept = {key: value for key, value in overrides.items() if value is not None}
    stored = run_config(checkpoint).data
    foreign = sorted(kept.keys() - stored.keys())
    if foreign:
        raise FERUserError(
            f"data.{foreign[0]} does not apply to this checkpoint's data ({stored._target_})"
        )
    datamodule = hydra.utils.instantiate(OmegaConf.merge(stored, kept))
    datamodule.prepare_data()
    datamodule.setup("test")
    return datamodule


def load_weights(
    system: LightningModule, checkpoint: dict[str, Any], path: str | os.PathLike
) -> None:
    """Load the checkpoint's state dict into ``system``; weights of another shape: one line."""
    _load_state(system, checkpoint["state_dict"], system.net, path)


def load_net_weights(system: LightningModule, path: str | os.PathLike) -> None:
    """Start ``system``'s net from the net weights of ``path`` (a checkpoint or
    `pretrained:<name>`). Only the net's: the system keeps its own loss weights and best scores."""
    prefix = "net."
    checkpoint = read_checkpoint(path)
    stored_net = run_config(checkpoint).model.net._target_
    if stored_net.rsplit(".", 1)[-1] != type(system.net).__name__:
        raise FERUserError(
            f"{path}: the checkpoint holds a {stored_net} net but the config trains a "
            f"{type(system.net).__name__}; start from it with the model it was trained with "
            "(e.g. model=...)"
        )
    state = checkpoint["state_dict"]
    net_state = {
        key.removeprefix(prefix): value for key, value in state.items() if key.startswith(prefix)
    }
    _load_state(system.net, net_state, system.net, path)


def _load_state(
    module: nn.Module, state: dict[str, Any], net: nn.Module, path: str | os.PathLike
) -> None:
    """``module.load_state_dict(state)``; weights that do not fit ``net`` fail in one line."""
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        # torch's first line only says "Error(s) in loading state_dict for <net>:"; the next
        # names the first mismatch
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else first_line(err)
        detail = detail if len(detail) <= 200 else detail[:197] + "..."
        raise FERUserError(
            f"{path}: its weights do not fit the network {type(net).__name__} ({detail})"
        ) from err
