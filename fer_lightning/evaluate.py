"""The `evaluate` command: `fer-lightning evaluate ckpt_path=... [split=val] [data.csv_path=...]`
(also `python -m fer_lightning.evaluate ...`, and `python evaluate.py ...` in a clone)."""

import hydra
from omegaconf import DictConfig

from fer_lightning.cli import exit_on_user_error, settings_in_one_line
from fer_lightning.config import CONF_DIR
from fer_lightning.evaluation import evaluate


@settings_in_one_line
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="evaluate")
def main(cfg: DictConfig) -> None:
    """Print the per-class report of one split and write metrics.json and the confusion matrix."""
    exit_on_user_error(evaluate, cfg)


if __name__ == "__main__":
    main()
