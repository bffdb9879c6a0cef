"""Where the Hydra configs are (CONF_DIR, for every Hydra main), and composing them outside a Hydra
main (tests, benchmarks, notebooks)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict


def _conf_dir() -> Path:
    """The Hydra configs: inside an installed package (conf/ ships as fer_lightning/conf), else the
    conf/ beside the package in a clone (editable installs too)."""
    packaged = Path(str(files("fer_lightning") / "conf"))
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[1] / "conf"


CONF_DIR = _conf_dir()


def compose_config(
    config_name: str, output_dir: str | os.PathLike, overrides: Sequence[str] = ()
) -> DictConfig:
    """conf/<config_name>.yaml composed as Hydra's main would, with `output_dir` as the run dir.

    `${hydra:runtime.output_dir}` has no value outside a Hydra main, so the run dir is set
    explicitly; logs go below it too.
    """
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name, overrides=list(overrides), return_hydra_config=True)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.log_dir = str(Path(output_dir) / "logs")
    return cfg
