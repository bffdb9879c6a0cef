"""The deep reference: seed 004's concatenation network (a Keras functional model), rebuilt from
its layer table."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fer_lightning.classes import NUM_CLASSES

SKIP_CHANNELS = 32


class StandardizedConv2d(nn.Conv2d):
    """Conv2d with weight standardisation, like Keras' ``StandardizedConv2D`` example layer.

    On every forward pass each output filter is shifted and scaled to mean 0 and std 1 over
    ``(in_channels, kh, kw)``. The raw weight stays the trained parameter.
    """

    def __init__(self, *args: Any, eps: float = 1e-5, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.eps = eps

    def standardized_weight(self) -> torch.Tensor:
        """The filters actually convolved: per-filter zero mean, unit (population) variance."""
        var, mean = torch.var_mean(self.weight, dim=(1, 2, 3), correction=0, keepdim=True)
        return (self.weight - mean) / torch.sqrt(var + self.eps)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Convolve with the standardised filters."""
        return F.conv2d(
            images,
            self.standardized_weight(),
            self.bias,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
        )


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """A 3x3 conv with 'same'-size padding (Keras ``padding='same'``)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1)


def _skip_projection(in_channels: int) -> nn.Conv2d:
    """A 1x1 stride-4 conv to 32 channels: a block's trunk at its next-but-one block's size."""
    return nn.Conv2d(in_channels, SKIP_CHANNELS, kernel_size=1, stride=4)


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    """BatchNorm with Keras' epsilon (1e-3) and PyTorch's momentum (0.1).

    Keras' momentum (0.99, PyTorch's 0.01) makes the running statistics lag for hundreds of steps,
    so early validation in eval mode sees stale statistics; 0.1 tracks the training net closely.
    """
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.1)


def _relu_chain(features: torch.Tensor, *convs: nn.Module) -> torch.Tensor:
    """Apply each layer in turn, each one followed by ReLU."""
    for conv in convs:
        features = F.relu(conv(features))
    return features


class DeepConcatNet(nn.Module):
    """The deep reference network: four concatenation blocks, a 3x3 conv at 1x1, and a dense head.

    Every row of the reference's layer table is matched, both output shape and parameter count.
    Submodules carry the Keras names in snake case, for example ``before_final_layer`` and
    ``final_layer``. With 3 input channels there are 6,185,831 trainable parameters. The
    BatchNorm running mean and variance add 2,304 elements, which gives Keras's 6,188,135.
    Each block has the same shape::

        x -> first conv -> trunk conv -+-> conv A -> 2x2 max-pool ----------+
                                       +-> conv B -> 3x3 stride-2 conv -----+-> concat(A, B, skip)
                                       +-> 1x1 stride-4 conv (32 channels): the skip of block+1

      block 1 (16x16): standardized_conv2d (stride 3) + batch_normalization, conv2d | A conv2d_1
              | skip conv2d_2 | B conv2d_3 -> conv2d_4 | concatenate (64) -> batch_normalization_1
      block 2 (8x8): conv2d_5, conv2d_6 | A before_final_layer | skip conv2d_7
              | B conv2d_8 -> conv2d_9 | concatenate_1 (160 = 64+64+32) -> batch_normalization_2
      block 3 (4x4): conv2d_10, conv2d_11 | A conv2d_12 | skip conv2d_13
              | B conv2d_14 -> conv2d_15 -> batch_normalization_3 | concatenate_2 (288)
      block 4 (2x2): conv2d_16, conv2d_17 | A conv2d_18 | B conv2d_19 (64) -> conv2d_20
              -> batch_normalization_4 | concatenate_3 (544 = 256+256+32)
      head: final_layer (3x3 conv at 1x1, 512) -> batch_normalization_5 -> flatten -> dropout
              -> dense (1024) -> dropout_1 -> dense_1 (logits)

    How the topology was inferred from the table:

    - Keras numbers layers in the order they are created. Its summary lists them by depth
      from the output, and ties go to a pre-order walk from the output. Running that ordering
      rule on this graph reproduces the table row for row. The one exception is ``conv2d_8``,
      which would fall between BeforeFinal_Layer and max_pooling2d_1. That row is missing from
      the table. Its 36,928 parameters are exactly the gap between the rows' sum (6,151,207)
      and the stated total.
    - conv2d_15 (4->2) and conv2d_20 (2->1) are stride-2 convs alongside a pool of the same
      output size. conv2d_20 reads conv2d_19's 64 channels. So each block's B branch is conv
      -> strided conv, and conv2d_4 and conv2d_9 follow the same pattern.
    - batch_normalization_3/_4 normalise the strided branch. If they sat on the pooled
      branch, Keras would list conv2d_12 before conv2d_14, but the table has the reverse.
    - The row order alone would also fit ``max_pooling2d_1 -> conv2d_8 -> conv2d_9`` (stride
      1). The parallel branch is chosen because it repeats blocks 3-4 and their numbering:
      skip 7 -> 8 -> 9 matches 13 -> 14 -> 15.
    - Skips are 1x1 stride-4 convs, since no pooling row takes 16->4, 8->2 or 4->1. Which of
      the block's 32/64/128-channel tensors they read is not in the table. The trunk is used.

    Choices the table cannot show: ReLU after every convolution and after ``dense``, 'same'
    padding done symmetrically (Keras pads stride-2 inputs bottom/right only), and one dropout
    rate for both dropout layers. ``forward`` returns logits.
    """

    def __init__(
        self, in_channels: int = 3, num_classes: int = NUM_CLASSES, dropout: float = 0.5
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.num_classes = num_classes
        # Block 1: 48x48 -> 16x16 stem, branches of 32 channels, concatenated at 8x8.
        self.standardized_conv2d = StandardizedConv2d(in_channels, 32, kernel_size=3, stride=3)
        self.batch_normalization = _batch_norm(32)
        self.conv2d = _conv3x3(32, 32)
        self.conv2d_1 = _conv3x3(32, 32)
        self.conv2d_2 = _skip_projection(32)
        self.conv2d_3 = _conv3x3(32, 32)
        self.max_pooling2d = nn.MaxPool2d(2)
        self.conv2d_4 = _conv3x3(32, 32, stride=2)
        self.batch_normalization_1 = _batch_norm(64)
        # Block 2: 8x8, 64 channels, concatenated at 4x4 with block 1's skip.
        self.conv2d_5 = _conv3x3(64, 64)
        self.conv2d_6 = _conv3x3(64, 64)
        self.before_final_layer = _conv3x3(64, 64)
        self.conv2d_7 = _skip_projection(64)
        self.conv2d_8 = _conv3x3(64, 64)
        self.max_pooling2d_1 = nn.MaxPool2d(2)
        self.conv2d_9 = _conv3x3(64, 64, stride=2)
        self.batch_normalization_2 = _batch_norm(160)
        # Block 3: 4x4, 128 channels, concatenated at 2x2 with block 2's skip.
        self.conv2d_10 = _conv3x3(160, 128)
        self.conv2d_11 = _conv3x3(128, 128)
        self.conv2d_12 = _conv3x3(128, 128)
        self.conv2d_13 = _skip_projection(128)
        self.conv2d_14 = _conv3x3(128, 128)
        self.conv2d_15 = _conv3x3(128, 128, stride=2)
        self.max_pooling2d_2 = nn.MaxPool2d(2)
        self.batch_normalization_3 = _batch_norm(128)
        # Block 4: 2x2, 256 channels, concatenated at 1x1 with block 3's skip.
        self.conv2d_16 = _conv3x3(288, 256)
        self.conv2d_17 = _conv3x3(256, 256)
        self.conv2d_18 = _conv3x3(256, 256)
        self.conv2d_19 = _conv3x3(256, 64)
        self.conv2d_20 = _conv3x3(64, 256, stride=2)
        self.max_pooling2d_3 = nn.MaxPool2d(2)
        self.batch_normalization_4 = _batch_norm(256)
        # Head.
        self.final_layer = _conv3x3(544, 512)
        self.batch_normalization_5 = _batch_norm(512)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(512, 1024)
        self.dropout_1 = nn.Dropout(dropout)
        self.dense_1 = nn.Linear(1024, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Map ``(B, in_channels, 48, 48)`` images to ``(B, num_classes)`` logits."""
        stem = self.batch_normalization(_relu_chain(images, self.standardized_conv2d))

        trunk = _relu_chain(stem, self.conv2d)
        skip_1 = _relu_chain(trunk, self.conv2d_2)
        pooled = self.max_pooling2d(_relu_chain(trunk, self.conv2d_1))
        strided = _relu_chain(trunk, self.conv2d_3, self.conv2d_4)
        block = self.batch_normalization_1(torch.cat([pooled, strided], dim=1))

        trunk = _relu_chain(block, self.conv2d_5, self.conv2d_6)
        skip_2 = _relu_chain(trunk, self.conv2d_7)
        pooled = self.max_pooling2d_1(_relu_chain(trunk, self.before_final_layer))
        strided = _relu_chain(trunk, self.conv2d_8, self.conv2d_9)
        block = self.batch_normalization_2(torch.cat([pooled, strided, skip_1], dim=1))

        trunk = _relu_chain(block, self.conv2d_10, self.conv2d_11)
        skip_3 = _relu_chain(trunk, self.conv2d_13)
        pooled = self.max_pooling2d_2(_relu_chain(trunk, self.conv2d_12))
        strided = self.batch_normalization_3(_relu_chain(trunk, self.conv2d_14, self.conv2d_15))
        block = torch.cat([pooled, strided, skip_2], dim=1)

        trunk = _relu_chain(block, self.conv2d_16, self.conv2d_17)
        pooled = self.max_pooling2d_3(_relu_chain(trunk, self.conv2d_18))
        strided = self.batch_normalization_4(_relu_chain(trunk, self.conv2d_19, self.conv2d_20))
        block = torch.cat([pooled, strided, skip_3], dim=1)

        features = self.flatten(self.batch_normalization_5(_relu_chain(block, self.final_layer)))
        hidden = _relu_chain(self.dropout(features), self.dense)
        return self.dense_1(self.dropout_1(hidden))
