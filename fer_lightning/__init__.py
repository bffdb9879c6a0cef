"""fer-lightning: train, evaluate and ship facial-expression classifiers on FER2013."""

from fer_lightning.classes import EMOTIONS

__all__ = ["EMOTIONS"]
