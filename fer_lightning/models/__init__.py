"""Networks: plain ``nn.Module``s mapping ``(B, C, 48, 48)`` images to ``(B, classes)`` logits."""

from fer_lightning.models.baseline import BaselineCNN
from fer_lightning.models.deep import DeepConcatNet, StandardizedConv2d
from fer_lightning.models.resnet import ResNet18FER

__all__ = ["BaselineCNN", "DeepConcatNet", "ResNet18FER", "StandardizedConv2d"]
