"""The `train` command: `fer-lightning train [model=deep] [trainer.gpus=1]` (also
`python -m fer_lightning.train ...`, and `python train.py ...` in a clone)."""

import hydra
from omegaconf import DictConfig

from fer_lightning.cli import run_task, settings_in_one_line
from fer_lightning.config import CONF_DIR
from fer_lightning.training import run_training


@settings_in_one_line
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Fit, select on PublicTest, test once on PrivateTest; return the metric a sweep optimises."""
    return run_task(run_training, cfg)


if __name__ == "__main__":
    main()
