"""Train a facial-expression classifier: `python train.py [model=deep] [trainer.gpus=1]`."""

import os
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

import hydra
from omegaconf import DictConfig

from fer_lightning.cli import exit_on_user_error
from fer_lightning.training import metric_value, train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Fit, select on PublicTest, test once on PrivateTest; return the metric a sweep optimises."""
    metrics = exit_on_user_error(train, cfg)
    return exit_on_user_error(metric_value, metrics, cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
