"""Networks: plain ``nn.Module``s mapping ``(B, C, 48, 48)`` images to ``(B, classes)`` logits."""

from fer_lightning.models.baseline import BaselineCNN
from fer_lightning.models.deep import DeepConcatNet, StandardizedConv2d
from fer_lightning.models.resnet import ResNet18FER
from fer_lightning.models.vgg import VGGFER

__all__ = ["VGGFER", "BaselineCNN", "DeepConcatNet", "ResNet18FER", "StandardizedConv2d"]
