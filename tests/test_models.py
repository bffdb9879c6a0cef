"""The networks reproduce the reference implementations' layer tables and train (forward +
backward) on CPU."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from fer_lightning.models import VGGFER, BaselineCNN, DeepConcatNet, ResNet18FER

# The deep reference's layer table: Keras layer name -> (output shape without batch, NHWC;
# Keras param #).
# Keras names in snake case name the submodule; ``conv2d_8`` is the row the table dropped.
DEEP_TABLE: dict[str, tuple[tuple[int, ...], int]] = {
    "input_layer": ((48, 48, 3), 0),
    "standardized_conv2d": ((16, 16, 32), 896),
    "batch_normalization": ((16, 16, 32), 128),
    "conv2d": ((16, 16, 32), 9_248),
    "conv2d_1": ((16, 16, 32), 9_248),
    "conv2d_3": ((16, 16, 32), 9_248),
    "max_pooling2d": ((8, 8, 32), 0),
    "conv2d_4": ((8, 8, 32), 9_248),
    "concatenate": ((8, 8, 64), 0),
    "batch_normalization_1": ((8, 8, 64), 256),
    "conv2d_5": ((8, 8, 64), 36_928),
    "conv2d_6": ((8, 8, 64), 36_928),
    "BeforeFinal_Layer": ((8, 8, 64), 36_928),
    "conv2d_8": ((8, 8, 64), 36_928),
    "max_pooling2d_1": ((4, 4, 64), 0),
    "conv2d_9": ((4, 4, 64), 36_928),
    "conv2d_2": ((4, 4, 32), 1_056),
    "concatenate_1": ((4, 4, 160), 0),
    "batch_normalization_2": ((4, 4, 160), 640),
    "conv2d_10": ((4, 4, 128), 184_448),
    "conv2d_11": ((4, 4, 128), 147_584),
    "conv2d_14": ((4, 4, 128), 147_584),
    "conv2d_12": ((4, 4, 128), 147_584),
    "conv2d_15": ((2, 2, 128), 147_584),
    "max_pooling2d_2": ((2, 2, 128), 0),
    "batch_normalization_3": ((2, 2, 128), 512),
    "conv2d_7": ((2, 2, 32), 2_080),
    "concatenate_2": ((2, 2, 288), 0),
    "conv2d_16": ((2, 2, 256), 663_808),
    "conv2d_17": ((2, 2, 256), 590_080),
    "conv2d_19": ((2, 2, 64), 147_520),
    "conv2d_18": ((2, 2, 256), 590_080),
    "conv2d_20": ((1, 1, 256), 147_712),
    "max_pooling2d_3": ((1, 1, 256), 0),
    "batch_normalization_4": ((1, 1, 256), 1_024),
    "conv2d_13": ((1, 1, 32), 4_128),
    "concatenate_3": ((1, 1, 544), 0),
    "Final_Layer": ((1, 1, 512), 2_507_264),
    "batch_normalization_5": ((1, 1, 512), 2_048),
    "flatten": ((512,), 0),
    "dropout": ((512,), 0),
    "dense": ((1024,), 525_312),
    "dropout_1": ((1024,), 0),
    "dense_1": ((7,), 7_175),
}
# Rows without a module of their own (an input, and torch.cat in forward): their tensor is the
# input of the layer that consumes it.
READ_AS_INPUT_OF = {
    "input_layer": "standardized_conv2d",
    "concatenate": "batch_normalization_1",
    "concatenate_1": "batch_normalization_2",
    "concatenate_2": "conv2d_16",
    "concatenate_3": "final_layer",
}


def snake_case(keras_name: str) -> str:
    """Keras layer name -> submodule name: ``BeforeFinal_Layer`` -> ``before_final_layer``."""
    return re.sub(r"(?<=[a-z])(?=[A-Z])", "_", keras_name).lower()


def keras_param_count(module: nn.Module) -> int:
    """Parameters as Keras counts them: weights plus BatchNorm running mean/variance."""
    weights = sum(p.numel() for p in module.parameters())
    running_stats = sum(
        buffer.numel()
        for name, buffer in module.named_buffers()
        if name.rsplit(".", 1)[-1] in ("running_mean", "running_var")
    )
    return weights + running_stats


def channels_first(keras_shape: tuple[int, ...]) -> tuple[int, ...]:
    """(H, W, C) -> (C, H, W); flat shapes are unchanged."""
    return (keras_shape[-1], *keras_shape[:-1]) if len(keras_shape) == 3 else keras_shape


def record_shapes(
    model: nn.Module, images: torch.Tensor, rows: dict[str, str]
) -> dict[str, tuple[int, ...]]:
    """Run ``model`` once; return {row: per-sample shape} for each row's submodule output/input."""
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    for row, module_name in rows.items():
        module = model.get_submodule(module_name)
        if row in READ_AS_INPUT_OF:

            def hook(_module, inputs, row=row):
                shapes[row] = tuple(inputs[0].shape[1:])

            handles.append(module.register_forward_pre_hook(hook))
        else:

            def hook(_module, _inputs, output, row=row):
                shapes[row] = tuple(output.shape[1:])

            handles.append(module.register_forward_hook(hook))
    with torch.no_grad():
        model(images)
    for handle in handles:
        handle.remove()
    return shapes


@pytest.fixture(scope="module")
def deep_net() -> DeepConcatNet:
    torch.manual_seed(0)
    return DeepConcatNet().eval()


def test_deep_totals_match_keras_summary(deep_net: DeepConcatNet) -> None:
    trainable = sum(p.numel() for p in deep_net.parameters() if p.requires_grad)
    assert trainable == 6_185_831
    assert keras_param_count(deep_net) - trainable == 2_304
    assert keras_param_count(deep_net) == 6_188_135


def test_deep_every_table_row_has_its_shape_and_param_count(deep_net: DeepConcatNet) -> None:
    module_of = {row: READ_AS_INPUT_OF.get(row, snake_case(row)) for row in DEEP_TABLE}
    shapes = record_shapes(deep_net, torch.randn(2, 3, 48, 48), module_of)

    for row, (keras_shape, keras_params) in DEEP_TABLE.items():
        assert shapes[row] == channels_first(keras_shape), row
        if row not in READ_AS_INPUT_OF:
            assert keras_param_count(deep_net.get_submodule(module_of[row])) == keras_params, row
    table_total = sum(params for _, params in DEEP_TABLE.values())
    assert table_total == keras_param_count(deep_net)


def test_standardized_conv_uses_zero_mean_unit_std_filters() -> None:
    conv = DeepConcatNet().standardized_conv2d
    with torch.no_grad():
        conv.weight.mul_(7.0).add_(3.0)  # a raw weight far from standardised
        effective = conv.standardized_weight().flatten(start_dim=1)
        images = torch.randn(2, 3, 48, 48)
        expected = nn.functional.conv2d(images, conv.standardized_weight(), conv.bias, stride=3)
        actual = conv(images)

    assert effective.shape == (32, 27)
    torch.testing.assert_close(effective.mean(dim=1), torch.zeros(32), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        effective.std(dim=1, correction=0), torch.ones(32), atol=1e-3, rtol=0
    )
    torch.testing.assert_close(actual, expected)


@pytest.mark.parametrize("in_channels", [1, 3])
def test_deep_forward_gives_logits_and_backward_reaches_every_weight(in_channels: int) -> None:
    torch.manual_seed(0)
    model = DeepConcatNet(in_channels=in_channels, num_classes=5, dropout=0.2).train()
    assert (model.in_channels, model.num_classes) == (in_channels, 5)

    logits = model(torch.randn(4, in_channels, 48, 48))
    assert logits.shape == (4, 5)
    nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 4])).backward()

    without_grad = [name for name, p in model.named_parameters() if p.grad is None]
    assert without_grad == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_deep_dropout_rate_is_configurable() -> None:
    model = DeepConcatNet(dropout=0.3)
    assert model.dropout.p == model.dropout_1.p == 0.3


def test_baseline_param_count_matches_keras_summary() -> None:
    assert sum(p.numel() for p in BaselineCNN(in_channels=1).parameters()) == 318_407


def test_baseline_intermediate_shapes_and_logits() -> None:
    model = BaselineCNN().eval()
    layers = ["conv2d", "max_pooling2d", "conv2d_1", "max_pooling2d_1", "conv2d_2", "flatten"]
    shapes = record_shapes(model, torch.randn(3, 1, 48, 48), {name: name for name in layers})

    assert shapes == {
        "conv2d": (32, 46, 46),
        "max_pooling2d": (32, 23, 23),
        "conv2d_1": (64, 21, 21),
        "max_pooling2d_1": (64, 10, 10),
        "conv2d_2": (64, 8, 8),
        "flatten": (64 * 8 * 8,),
    }
    assert (model.in_channels, model.num_classes) == (1, 7)


def test_baseline_backward_with_three_channels() -> None:
    model = BaselineCNN(in_channels=3, num_classes=7)
    logits = model(torch.randn(2, 3, 48, 48))
    assert logits.shape == (2, 7)
    nn.functional.cross_entropy(logits, torch.tensor([3, 6])).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_resnet18_fer_counts_shapes_and_gradients() -> None:
    net = ResNet18FER(in_channels=1)
    # torchvision resnet18 (11,689,512) - 7x7x3 stem (9,408) - 1000-way fc (513,000)
    # + 3x3x1 stem (576) + 7-way fc (3,591)
    assert sum(p.numel() for p in net.parameters()) == 11_171_271
    images = torch.randn(2, 1, 48, 48)
    assert net.stages(net.stem(images)).shape == (2, 512, 6, 6)
    logits = net(images)
    assert logits.shape == (2, 7)
    logits.sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    assert ResNet18FER(stem_stride=2).stages(torch.zeros(1, 64, 24, 24)).shape[-1] == 3


@pytest.mark.parametrize(
    ("widths", "convs_per_stage", "params"),
    [
        # sum over stages of 3x3 convs (no bias) + BN (2 per channel), then a 7-way linear layer
        ((64, 128, 256, 512), 2, 4_689_735),
        ((48, 96, 192, 384), 2, 2_639_479),
        ((8, 16, 32, 64), 1, 24_959),
    ],
)
def test_vgg_fer_counts_shapes_and_gradients(widths, convs_per_stage, params) -> None:
    net = VGGFER(in_channels=1, widths=widths, convs_per_stage=convs_per_stage)
    expected, channels = 0, 1
    for width in widths:
        for _ in range(convs_per_stage):
            expected += 9 * channels * width + 2 * width
            channels = width
    assert expected + 7 * channels + 7 == params
    assert sum(p.numel() for p in net.parameters()) == params
    images = torch.randn(2, 1, 48, 48)
    assert net.features(images).shape == (2, widths[-1], 3, 3)
    logits = net(images)
    assert logits.shape == (2, 7)
    logits.sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    convs = [m for m in net.features if isinstance(m, nn.Conv2d)]
    assert len(convs) == 4 * convs_per_stage


def test_vgg_fer_takes_three_channels_and_eight_classes() -> None:
    net = VGGFER(in_channels=3, num_classes=8, widths=(8, 16, 32, 64))
    assert net(torch.randn(1, 3, 48, 48)).shape == (1, 8)
