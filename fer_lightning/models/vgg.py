"""A VGG-style net for 48x48 faces, trained from scratch: the classic FER2013 design, lean head."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fer_lightning.classes import NUM_CLASSES


class VGGFER(nn.Module):
    """Four stages of ``convs_per_stage`` 3x3 conv-BN-ReLU layers, each ending in a 2x2 max-pool.

    48 px faces shrink to 24, 12, 6 and 3 px; global average pooling, dropout and one linear layer
    follow (no 4096-wide dense layers, which hold most of a classic VGG's parameters). The widths
    double per stage; the default ``(64, 128, 256, 512)`` has 4.7 M parameters, ``(48, 96, 192,
    384)`` 2.6 M and 56 % of the compute (it scales with the width squared).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = NUM_CLASSES,
        widths: Sequence[int] = (64, 128, 256, 512),
        convs_per_stage: int = 2,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.num_classes = num_classes
        layers: list[nn.Module] = []
        channels = in_channels
        for width in widths:
            for _ in range(convs_per_stage):
                layers += [
                    nn.Conv2d(channels, width, 3, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                ]
                channels = width
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(channels, num_classes),
        )
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Map ``(B, in_channels, 48, 48)`` images to ``(B, num_classes)`` logits."""
        return self.head(self.features(images))
