"""The two reference Keras nets, written from their documents, for speed comparisons only.

- ``baseline_keras()``: the notebook CNN (three 3x3 convolutions, max-pooling, a 64-unit dense
  layer, softmax over 7 classes; 318,407 parameters), as its ``Sequential`` listing builds it.
- ``deep_keras()``: the deep concatenation net from its layer table (6,185,831 trainable
  parameters on 3-channel input), wired as ``fer_lightning.models.DeepConcatNet`` reads that table.

Both compile as their documents do: Adam at 1e-3, categorical cross-entropy on softmax outputs,
accuracy as the metric. Keras is a benchmark-only dependency, never one of the package:

    pip install -e '.[keras]'        # tensorflow-cpu and keras 3, see pyproject.toml

``precision="bf16"`` builds the net under Keras' ``mixed_bfloat16`` policy (bf16 compute, fp32
weights), with the softmax in fp32 as Keras' mixed-precision guide asks.
"""

from __future__ import annotations

import keras
from keras import layers, ops

IMAGE_SIZE = 48
NUM_CLASSES = 7
PRECISION_POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16"}


class StandardizedConv2D(layers.Conv2D):
    """Conv2D with weight standardisation (Keras' ``StandardizedConv2DWithCall`` example):
    each filter shifted and scaled to mean 0 and variance 1 on every call."""

    def __init__(self, *args: object, eps: float = 1e-5, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.eps = eps

    def call(self, inputs):
        mean, var = ops.moments(self.kernel, axes=[0, 1, 2], keepdims=True)
        kernel = (self.kernel - mean) / ops.sqrt(var + self.eps)
        outputs = self.convolution_op(inputs, ops.cast(kernel, self.compute_dtype))
        if self.use_bias:
            outputs = outputs + self.bias
        return self.activation(outputs)


def _compiled(model: keras.Model) -> keras.Model:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=1e-3),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def _set_policy(precision: str) -> None:
    if precision not in PRECISION_POLICIES:
        choices = sorted(PRECISION_POLICIES)
        raise ValueError(f"precision must be one of {choices}, got {precision!r}")
    keras.mixed_precision.set_global_policy(PRECISION_POLICIES[precision])


def baseline_keras(precision: str = "fp32", in_channels: int = 1) -> keras.Model:
    """The notebook CNN, layer for layer, compiled as in the notebook."""
    _set_policy(precision)
    model = keras.Sequential(
        [
            keras.Input((IMAGE_SIZE, IMAGE_SIZE, in_channels)),
            layers.Conv2D(32, (3, 3), activation="relu"),
            layers.MaxPool2D((2, 2)),
            layers.Conv2D(64, (3, 3), activation="relu"),
            layers.MaxPool2D((2, 2)),
            layers.Conv2D(64, (3, 3), activation="relu"),
            layers.Flatten(),
            layers.Dense(64, activation="relu"),
            layers.Dense(NUM_CLASSES, activation="softmax", dtype="float32"),
        ]
    )
    return _compiled(model)


def _conv(channels: int, kernel: int = 3, strides: int = 1, name: str | None = None):
    return layers.Conv2D(
        channels, kernel, strides=strides, padding="same", activation="relu", name=name
    )


def _skip(name: str):
    """1x1 stride-4 projection to 32 channels: a block's trunk at its next-but-one block's size."""
    return layers.Conv2D(32, 1, strides=4, padding="same", activation="relu", name=name)


def deep_keras(precision: str = "fp32", in_channels: int = 3, dropout: float = 0.5) -> keras.Model:
    """The deep concatenation net of the layer table, compiled with Adam 1e-3."""
    _set_policy(precision)
    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, in_channels), name="input_layer")
    stem = StandardizedConv2D(32, 3, strides=3, activation="relu", name="standardized_conv2d")(
        inputs
    )
    stem = layers.BatchNormalization(name="batch_normalization")(stem)

    trunk = _conv(32, name="conv2d")(stem)
    skip_1 = _skip("conv2d_2")(trunk)
    pooled = layers.MaxPool2D(name="max_pooling2d")(_conv(32, name="conv2d_1")(trunk))
    strided = _conv(32, strides=2, name="conv2d_4")(_conv(32, name="conv2d_3")(trunk))
    block = layers.Concatenate(name="concatenate")([pooled, strided])
    block = layers.BatchNormalization(name="batch_normalization_1")(block)

    trunk = _conv(64, name="conv2d_6")(_conv(64, name="conv2d_5")(block))
    skip_2 = _skip("conv2d_7")(trunk)
    pooled = layers.MaxPool2D(name="max_pooling2d_1")(_conv(64, name="BeforeFinal_Layer")(trunk))
    strided = _conv(64, strides=2, name="conv2d_9")(_conv(64, name="conv2d_8")(trunk))
    block = layers.Concatenate(name="concatenate_1")([pooled, strided, skip_1])
    block = layers.BatchNormalization(name="batch_normalization_2")(block)

    trunk = _conv(128, name="conv2d_11")(_conv(128, name="conv2d_10")(block))
    skip_3 = _skip("conv2d_13")(trunk)
    pooled = layers.MaxPool2D(name="max_pooling2d_2")(_conv(128, name="conv2d_12")(trunk))
    strided = _conv(128, strides=2, name="conv2d_15")(_conv(128, name="conv2d_14")(trunk))
    strided = layers.BatchNormalization(name="batch_normalization_3")(strided)
    block = layers.Concatenate(name="concatenate_2")([pooled, strided, skip_2])

    trunk = _conv(256, name="conv2d_17")(_conv(256, name="conv2d_16")(block))
    pooled = layers.MaxPool2D(name="max_pooling2d_3")(_conv(256, name="conv2d_18")(trunk))
    strided = _conv(256, strides=2, name="conv2d_20")(_conv(64, name="conv2d_19")(trunk))
    strided = layers.BatchNormalization(name="batch_normalization_4")(strided)
    block = layers.Concatenate(name="concatenate_3")([pooled, strided, skip_3])

    features = _conv(512, name="Final_Layer")(block)
    features = layers.BatchNormalization(name="batch_normalization_5")(features)
    features = layers.Dropout(dropout, name="dropout")(layers.Flatten(name="flatten")(features))
    hidden = layers.Dense(1024, activation="relu", name="dense")(features)
    outputs = layers.Dense(NUM_CLASSES, activation="softmax", dtype="float32", name="dense_1")(
        layers.Dropout(dropout, name="dropout_1")(hidden)
    )
    return _compiled(keras.Model(inputs, outputs, name="deep_concat_net"))


KERAS_NETS = {"baseline": baseline_keras, "deep": deep_keras}
