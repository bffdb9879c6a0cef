"""Compose the project's Hydra configs outside a Hydra main (tests, benchmarks, notebooks)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
# conf/paths reads the repository root from $PROJECT_ROOT (as lightning-hydra-template does); every
# entry point imports this module before its config is resolved, so setting it here covers them all.
# Always this repository's root, as the template's rootutils sets it: a PROJECT_ROOT exported for
# another project must not move this one's data, cache and logs (paths.root_dir=... does that).
os.environ["PROJECT_ROOT"] = str(ROOT)
CONF_DIR = ROOT / "conf"


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
