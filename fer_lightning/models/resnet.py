"""A ResNet-18 for 48x48 faces, trained from scratch: the largest net here, sized for a GPU."""

from __future__ import annotations

import torch
from torch import nn

from fer_lightning.classes import NUM_CLASSES


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 projection) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        residual = torch.relu(self.bn1(self.conv1(features)))
        return torch.relu(self.bn2(self.conv2(residual)) + self.shortcut(features))


class ResNet18FER(nn.Module):
    """ResNet-18 (2-2-2-2 basic blocks, widths 64-128-256-512) adapted to 48x48 input.

    ImageNet's 7x7 stride-2 stem and max-pool would shrink a 48 px face to 12 px before the first
    block; here a 3x3 stem with `stem_stride` (1 keeps 48 px, 2 starts at 24 px and costs a quarter
    of the compute) feeds the blocks, then global average pooling, dropout and a linear layer.
    11.2 M parameters, so fp16 weights stay under 25 MB.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = NUM_CLASSES,
        stem_stride: int = 1,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 64, 3, stem_stride, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
        )
        stages, channels = [], 64
        for width, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages += [BasicBlock(channels, width, stride), BasicBlock(width, width, 1)]
            channels = width
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(512, num_classes)
        )
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        for block in self.stages:
            nn.init.zeros_(block.bn2.weight)  # each block starts as the identity

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Map ``(B, in_channels, 48, 48)`` images to ``(B, num_classes)`` logits."""
        return self.head(self.stages(self.stem(images)))
