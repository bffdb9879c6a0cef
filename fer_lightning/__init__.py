"""fer-lightning: train, evaluate and ship facial-expression classifiers on FER2013.

from fer_lightning import EmotionRecognizer
faces = EmotionRecognizer("pretrained:vgg").analyze("photo.jpg")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from fer_lightning.classes import EMOTIONS

if TYPE_CHECKING:
    from fer_lightning.recognizer import EmotionRecognizer, Face

__all__ = ["EMOTIONS", "EmotionRecognizer", "Face"]
# imported on first use, so that the data modules and tools need not load the model stack
_LAZY = {"EmotionRecognizer": "fer_lightning.recognizer", "Face": "fer_lightning.recognizer"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fer_lightning' has no attribute {name!r}")
