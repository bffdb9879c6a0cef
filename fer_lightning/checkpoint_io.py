"""Lightning's checkpoint writer, made atomic: a crash mid-write leaves the previous file whole."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning_fabric.plugins import TorchCheckpointIO
from lightning_fabric.utilities.cloud_io import get_filesystem

from fer_lightning.files import write_atomically


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write local checkpoints into a temp file next to the target, then rename it over the target.

    A crash or ``kill -9`` mid-write leaves the previous checkpoint whole. Lightning's own writer
    stages the file in the system temp folder and moves it, which becomes a plain copy (not atomic)
    when that folder is on another file system. Remote (fsspec URL) paths keep Lightning's writer.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        write_atomically(Path(path), lambda file: torch.save(checkpoint, file))
