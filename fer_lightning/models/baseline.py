"""The baseline reference: the small three-convolution Keras ``Sequential`` CNN of seed 000, as a
PyTorch module."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fer_lightning.classes import IMAGE_SIZE, NUM_CLASSES


class BaselineCNN(nn.Module):
    """The baseline reference CNN, layer for layer (318,407 parameters with one input channel).

    Conv(32, 3x3, valid)+ReLU -> MaxPool2 -> Conv(64)+ReLU -> MaxPool2 -> Conv(64)+ReLU -> Flatten
    -> Dense 64 + ReLU -> Dense ``num_classes``. Spatial sizes for 48x48 input: 46, 23, 21, 10, 8.
    Submodules carry the Keras layer names. Keras flattens NHWC and PyTorch NCHW; the dense weights
    are trained from scratch, so only the (identical) parameter count matters. ``forward`` returns
    logits: the reference's softmax belongs to the loss.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.conv2d = nn.Conv2d(in_channels, 32, kernel_size=3)
        self.max_pooling2d = nn.MaxPool2d(2)
        self.conv2d_1 = nn.Conv2d(32, 64, kernel_size=3)
        self.max_pooling2d_1 = nn.MaxPool2d(2)
        self.conv2d_2 = nn.Conv2d(64, 64, kernel_size=3)
        self.flatten = nn.Flatten()
        final_side = ((IMAGE_SIZE - 2) // 2 - 2) // 2 - 2  # 48 -> 46 -> 23 -> 21 -> 10 -> 8
        self.dense = nn.Linear(64 * final_side * final_side, 64)
        self.dense_1 = nn.Linear(64, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Map ``(B, in_channels, 48, 48)`` images to ``(B, num_classes)`` logits."""
        features = self.max_pooling2d(F.relu(self.conv2d(images)))
        features = self.max_pooling2d_1(F.relu(self.conv2d_1(features)))
        features = self.flatten(F.relu(self.conv2d_2(features)))
        return self.dense_1(F.relu(self.dense(features)))
