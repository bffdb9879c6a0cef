"""Networks: plain ``nn.Module``s mapping ``(B, C, 48, 48)`` images to ``(B, classes)`` logits."""

from fer_lightning.models.baseline import BaselineCNN
from fer_lightning.models.deep import DeepConcatNet, StandardizedConv2d

__all__ = ["BaselineCNN", "DeepConcatNet", "StandardizedConv2d"]
