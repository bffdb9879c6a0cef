"""Export a checkpoint's net for deployment (ONNX or TorchScript) and prove the file computes the
same logits as PyTorch:

    python -m fer_lightning.export ckpt_path=<run>/checkpoints/best.ckpt [format=onnx|torchscript]

The batch axis is dynamic; parity is checked on a random batch and on a single image. A model that
fails the check is not written. ``ckpt_path=pretrained:<name>`` exports shipped weights.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import hydra
import numpy as np
import onnx
import torch
from omegaconf import DictConfig
from torch import nn

from fer_lightning.classes import IMAGE_SIZE
from fer_lightning.cli import exit_on_user_error, settings_in_one_line
from fer_lightning.config import CONF_DIR
from fer_lightning.errors import FERUserError
from fer_lightning.files import write_output
from fer_lightning.inference import (
    METADATA_KEY,
    MODEL_SUFFIXES,
    Classifier,
    classifier_from_bytes,
    model_metadata,
)
from fer_lightning.loader import load_model

log = logging.getLogger(__name__)

INPUT_NAME = "images"
OUTPUT_NAME = "logits"
BATCH_AXIS = "batch"
MIN_OPSET = 17
DEFAULT_OPSET = 18
# the ONNX optimiser logs every graph pass at INFO, which would drown the command's own output
ONNX_CHATTY_LOGGERS = ("onnxscript", "onnx_ir")


@contextmanager
def _quiet_loggers(*names: str) -> Iterator[None]:
    """Raise these loggers to WARNING for the duration, then restore their levels."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def onnx_bytes(
    net: nn.Module, example: torch.Tensor, metadata: str, opset: int = DEFAULT_OPSET
) -> bytes:
    """The net as an ONNX model with a dynamic batch axis and ``metadata`` in its metadata_props.

    Uses torch's default (torch.export-based) exporter; the legacy TorchScript-based one warns
    that it is deprecated.
    """
    if opset < MIN_OPSET:
        raise FERUserError(f"opset={opset} is too old; use {MIN_OPSET} or newer")
    newest = onnx.defs.onnx_opset_version()
    if opset > newest:
        raise FERUserError(
            f"opset={opset} is newer than the installed onnx {onnx.__version__} knows; "
            f"use {MIN_OPSET}..{newest}"
        )
    with _quiet_loggers(*ONNX_CHATTY_LOGGERS):
        program = torch.onnx.export(
            net,
            (example,),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes={INPUT_NAME: {0: torch.export.Dim(BATCH_AXIS)}},
            opset_version=opset,
            dynamo=True,
            verbose=False,
        )
    model = program.model_proto
    # the exporter logs a failed conversion to an opset it cannot write and keeps its own
    written = [entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")]
    if written != [opset]:
        raise FERUserError(
            f"opset={opset}: torch's ONNX exporter cannot write it (it fell back to opset "
            f"{', '.join(map(str, written))}); use an older one, e.g. the default {DEFAULT_OPSET}"
        )
    model.metadata_props.add(key=METADATA_KEY, value=metadata)
    return model.SerializeToString()


def torchscript_bytes(net: nn.Module, example: torch.Tensor, metadata: str) -> bytes:
    """The net traced to TorchScript, with ``metadata`` as an extra file.

    Tracing works for every net here (``torch.jit.script`` rejects DeepConcatNet's varargs
    helper); the nets have no data-dependent control flow, so the trace is exact for any batch
    size. All of ``torch.jit`` is deprecated in torch 2.15; the filter below is scoped to
    exactly these calls.
    """
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", FutureWarning)
        traced = torch.jit.trace(net, example)
        torch.jit.save(traced, buffer, _extra_files={METADATA_KEY: metadata})
    return buffer.getvalue()


def parity_gap(reference: Classifier, exported: Classifier, batch: np.ndarray) -> float:
    """Max |logit difference| between two classifiers on ``batch`` and on its first image alone
    (the second call proves the batch axis is really dynamic)."""
    return max(
        float(np.abs(reference.logits(inputs) - exported.logits(inputs)).max())
        for inputs in (batch, batch[:1])
    )


def export(cfg: DictConfig) -> Path:
    """Export ``cfg.ckpt_path`` as ``cfg.format``, check parity, write ``cfg.output``."""
    if cfg.format not in MODEL_SUFFIXES:
        raise FERUserError(
            f"format={cfg.format!r} is not supported; choose one of {', '.join(MODEL_SUFFIXES)}"
        )
    if cfg.parity_batch_size < 2:  # torch.export fixes a batch axis whose example size is 1
        raise FERUserError(f"parity_batch_size must be >= 2, got {cfg.parity_batch_size}")
    suffix = MODEL_SUFFIXES[cfg.format]
    output = Path(cfg.output or Path(cfg.paths.output_dir) / f"model{suffix}").expanduser()
    if output.suffix.lower() != suffix:
        raise FERUserError(
            f"output={output} must end in {suffix} for format={cfg.format} "
            "(predict recognises the format by the suffix)"
        )
    model = load_model(cfg.ckpt_path, exported=False, ensemble=False)
    if output.exists() and output.resolve() == model.file.resolve():
        raise FERUserError(f"output={output} is the checkpoint being exported; name another file")
    reference = model.classifier
    metadata = model_metadata(reference)
    generator = torch.Generator().manual_seed(cfg.seed)
    shape = (cfg.parity_batch_size, reference.in_channels, IMAGE_SIZE, IMAGE_SIZE)
    example = torch.rand(shape, generator=generator) * 2 - 1  # the eval transform's [-1, 1]
    writers: dict[str, Callable[[], bytes]] = {
        "onnx": lambda: onnx_bytes(reference.net, example, metadata, cfg.opset),
        "torchscript": lambda: torchscript_bytes(reference.net, example, metadata),
    }
    data = writers[cfg.format]()

    exported = classifier_from_bytes(data, cfg.format, str(output))
    check_batch = (torch.rand(shape, generator=generator) * 2 - 1).numpy()
    gap = parity_gap(reference, exported, check_batch)
    if not gap < cfg.tolerance:
        raise FERUserError(
            f"{cfg.format} export of {cfg.ckpt_path} failed the parity check: max |delta logit| "
            f"= {gap:.3g} >= tolerance {cfg.tolerance:g}; nothing was written"
        )
    write_output(output, lambda file: file.write(data), "output")
    log.info(
        "Wrote %s (%s, dynamic batch axis); max |delta logit| vs PyTorch = %.2g on batches of "
        "%d and 1",
        output,
        cfg.format,
        gap,
        cfg.parity_batch_size,
    )
    return output


@settings_in_one_line
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="export")
def main(cfg: DictConfig) -> None:
    """Export a checkpoint to ONNX or TorchScript, parity-checked."""
    exit_on_user_error(export, cfg)


if __name__ == "__main__":
    main()
