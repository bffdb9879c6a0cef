"""LightningDataModules for FER2013: the csv, the built-in synthetic set and the image folders.

Subclasses only change where the arrays come from (``load_arrays``); datasets, transforms, class
weights and loaders are shared.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, Sampler

from fer_lightning.classes import EMOTIONS, NUM_CLASSES
from fer_lightning.data.class_weights import check_class_weighting, class_weights
from fer_lightning.data.fer2013_csv import SplitArrays, load_fer2013_csv
from fer_lightning.data.ferplus import FERPLUS_CLASSES, load_ferplus
from fer_lightning.data.folders import load_fer2013_folders
from fer_lightning.data.synthetic import write_synthetic_fer2013_csv
from fer_lightning.data.teacher import blend_targets, load_teacher_probabilities
from fer_lightning.data.transforms import BatchAugment, check_in_channels, normalize
from fer_lightning.errors import FERUserError, check_whole_number

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")
SYNTHETIC_VERSION = 1  # part of the synthetic csv's name; bump when the drawing changes


class FERDataset(Dataset):
    """uint8 images (N, 1, 48, 48) and their targets, served as normalised float batches: the
    int64 labels, or ``targets`` given per image (e.g. class probabilities (N, K)).

    ``__getitems__`` fetches a whole batch with one indexing operation (DataLoader uses it with
    automatic batching), so loading costs next to nothing and needs no worker processes.
    """

    def __init__(
        self, arrays: SplitArrays, in_channels: int = 1, targets: torch.Tensor | None = None
    ):
        self.images = torch.from_numpy(arrays.images).unsqueeze(1)
        self.targets = torch.from_numpy(arrays.labels) if targets is None else targets
        self.in_channels = check_in_channels(in_channels)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, targets = self.__getitems__([index])
        return images[0], targets[0]

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, in_channels, 48, 48) in [-1, 1] and the targets of ``indices``."""
        index = torch.as_tensor(indices, dtype=torch.int64)
        return normalize(self.images[index], self.in_channels), self.targets[index]


def _already_batched(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Collate function for FERDataset: ``__getitems__`` already returns the batch."""
    return batch


class FER2013DataModule(pl.LightningDataModule):
    """FER2013 from its csv (plain or gzip; parsed once, optionally cached in ``cache_dir``).

    Batches are ``(x, y)``: x float32 (B, in_channels, 48, 48) normalised to [-1, 1], y int64 (B,).
    With ``teacher_targets`` (a file from ``python -m fer_lightning.distill``) training batches'
    y are class probabilities (B, K) instead: ``teacher_weight`` of the teachers' plus the rest
    of the one-hot label (knowledge distillation).
    """

    class_names: tuple[str, ...] = EMOTIONS
    num_classes: int = NUM_CLASSES

    def __init__(
        self,
        csv_path: str,
        cache_dir: str | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        in_channels: int = 1,
        class_weighting: str = "none",
        augment: dict | None = None,
        eval_batch_size: int | None = None,
        num_classes: int | None = None,
        teacher_targets: str | None = None,
        teacher_weight: float = 0.5,
    ) -> None:
        super().__init__()
        # collects the arguments of subclasses too; then plain containers for weights_only loads
        self.save_hyperparameters()
        self.save_hyperparameters(_plain(dict(self.hparams)))
        check_whole_number("data.batch_size", batch_size, 1)
        if eval_batch_size is not None:
            check_whole_number("data.eval_batch_size", eval_batch_size, 1)
        check_whole_number("data.num_workers", num_workers, 0)
        if num_classes is not None and num_classes != len(self.class_names):
            raise FERUserError(
                f"data.num_classes={num_classes}, but {type(self).__name__} has "
                f"{len(self.class_names)} classes ({', '.join(self.class_names)})"
            )
        check_class_weighting(class_weighting)
        check_in_channels(in_channels)
        self.batch_augment = BatchAugment(self.hparams.augment, len(self.class_names))
        _check_distillation(teacher_targets, teacher_weight, self.batch_augment)
        self.arrays: dict[str, SplitArrays] | None = None
        self._training_targets: torch.Tensor | None = None

    def load_arrays(self) -> dict[str, SplitArrays]:
        """Arrays of the three splits; subclasses override this to read another source."""
        csv_path = self.hparams.csv_path  # an empty one (FER2013_CSV=) is refused as such
        return load_fer2013_csv(
            _absolute(csv_path) if csv_path.strip() else csv_path, self.hparams.cache_dir
        )

    def setup(self, stage: str | None = None) -> None:
        """Load the arrays once (later calls do nothing); before a fit, also the teacher targets,
        so that a file that does not fit fails before any work."""
        if self.arrays is None:
            self.arrays = self.load_arrays()
        if stage == "fit":
            self.training_targets()

    def split_arrays(self, split: str) -> SplitArrays:
        """The arrays of ``split`` (train, val or test), loading them on first use."""
        if split not in SPLIT_NAMES:
            raise FERUserError(f"unknown split {split!r}; choose one of {', '.join(SPLIT_NAMES)}")
        self.setup()
        return self.arrays[split]

    def class_counts(self) -> list[int]:
        """Rows per class in the training split."""
        labels = self.split_arrays("train").labels
        return np.bincount(labels, minlength=self.num_classes).tolist()

    def class_weights(self) -> list[float] | None:
        """Loss weights from ``class_weighting`` and the training counts (None for ``none``)."""
        return class_weights(self.class_counts(), self.hparams.class_weighting)

    def dataloader(self, split: str, train: bool = False) -> DataLoader:
        """Loader over ``split``, normalised; ``train`` shuffles and uses the training batch size
        (the last batch is kept). Augmentation happens after transfer (`on_after_batch_transfer`).
        """
        batch_size = self.hparams.batch_size
        if not train:
            batch_size = self.hparams.eval_batch_size or batch_size
        targets = self.training_targets() if train else None
        dataset = FERDataset(self.split_arrays(split), self.hparams.in_channels, targets)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=None if train else self._unrepeated_sampler(dataset),
            collate_fn=_already_batched,
            shuffle=train,
            drop_last=False,
            num_workers=self.hparams.num_workers,
            pin_memory=self.pins_memory(),
            persistent_workers=self.hparams.num_workers > 0,
        )

    def training_targets(self) -> torch.Tensor | None:
        """The blended teacher targets of the training split (read once), or None without
        ``teacher_targets``: then the labels are the targets."""
        if self.hparams.teacher_targets is None:
            return None
        if self._training_targets is None:
            arrays = self.split_arrays("train")
            teacher = load_teacher_probabilities(
                _absolute(self.hparams.teacher_targets), arrays, self.class_names
            )
            labels = torch.from_numpy(arrays.labels)
            self._training_targets = blend_targets(labels, teacher, self.hparams.teacher_weight)
        return self._training_targets

    def _unrepeated_sampler(self, dataset: Dataset) -> Sampler | None:
        """Under DDP, each rank's share of an evaluation split, every image once. Lightning's
        default DistributedSampler pads the shares to equal length by repeating images, so a
        split of 3,589 images would be scored as 3,590 (2 ranks) and the reports be off. None
        (a plain in-order loader) on one device."""
        if self.trainer is None or self.trainer.world_size == 1:
            return None
        return UnrepeatedDistributedSampler(
            dataset,
            num_replicas=self.trainer.world_size,
            rank=self.trainer.global_rank,
            shuffle=False,
        )

    def pins_memory(self) -> bool:
        """``pin_memory``, or when it is None, whether the trainer runs on a CUDA device: the
        driver may stage a copy from pageable memory through a host wait, a pinned batch's copy
        is queued behind the previous step."""
        if self.hparams.pin_memory is not None:
            return self.hparams.pin_memory
        return self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"

    def on_after_batch_transfer(
        self, batch: tuple[torch.Tensor, torch.Tensor], dataloader_idx: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment training batches on the device they train on; other batches pass as they are,
        as do bare tensors (Lightning sends the model's example input through this hook too)."""
        if self.trainer is not None and self.trainer.training and not torch.is_tensor(batch):
            return self.batch_augment(*batch)
        return batch

    def train_dataloader(self) -> DataLoader:
        return self.dataloader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self.dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self.dataloader("test")


class SyntheticFER2013DataModule(FER2013DataModule):
    """The built-in synthetic FER2013, written once as a csv in ``data_dir`` and then read like
    the real one."""

    def __init__(
        self,
        data_dir: str,
        num_train: int = 3000,
        num_val: int = 600,
        num_test: int = 600,
        seed: int = 0,
        csv_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        """``csv_path`` is derived from the other arguments; it is accepted only as None, the
        value that configs inheriting the csv data config give it."""
        _reject_csv_path(
            csv_path,
            "the synthetic data (data=synthetic, training's default)",
            "add data=fer2013 (or data=ferplus) to train on a csv; a checkpoint trained on "
            "synthetic data is evaluated on it",
        )
        name = f"synthetic_v{SYNTHETIC_VERSION}_{num_train}-{num_val}-{num_test}_seed{seed}.csv"
        csv_path = os.path.join(data_dir, name)  # reassigned first: hparams record this one
        super().__init__(csv_path=csv_path, **kwargs)

    def prepare_data(self) -> None:
        """Write the csv if it is missing (atomically, so concurrent writers are harmless)."""
        csv_path = _absolute(self.hparams.csv_path)
        if not csv_path.is_file():
            try:
                write_synthetic_fer2013_csv(
                    csv_path,
                    num_train=self.hparams.num_train,
                    num_val=self.hparams.num_val,
                    num_test=self.hparams.num_test,
                    seed=self.hparams.seed,
                )
            except OSError as err:
                raise FERUserError(
                    f"cannot write the synthetic data {csv_path} ({err.strerror or err}); set "
                    "data.data_dir to a writable folder"
                ) from err

    def load_arrays(self) -> dict[str, SplitArrays]:
        self.prepare_data()
        return super().load_arrays()


class FER2013FoldersDataModule(FER2013DataModule):
    """FER2013 from Kaggle's image folders; val is a seeded stratified share of train."""

    def __init__(
        self,
        root: str,
        val_fraction: float = 0.2,
        split_seed: int = 42,
        csv_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        """``csv_path`` is unused; it is accepted only as None (see the synthetic module)."""
        _reject_csv_path(csv_path, "the image-folder data", "the folders are data.root")
        super().__init__(csv_path="", **kwargs)

    def load_arrays(self) -> dict[str, SplitArrays]:
        return load_fer2013_folders(
            _absolute(self.hparams.root), self.hparams.val_fraction, self.hparams.split_seed
        )


def _check_distillation(
    teacher_targets: str | None, teacher_weight: float, batch_augment: BatchAugment
) -> None:
    """One line for a teacher weight outside [0, 1], or teacher targets with mixup/cutmix (which
    mix class labels, not probabilities)."""
    number = isinstance(teacher_weight, int | float) and not isinstance(teacher_weight, bool)
    if not number or not 0.0 <= teacher_weight <= 1.0:
        raise FERUserError(f"data.teacher_weight={teacher_weight!r} must be a number in [0, 1]")
    if teacher_targets is not None and batch_augment.mix is not None:
        raise FERUserError(
            "data.teacher_targets cannot be combined with augment mixup_alpha/cutmix_alpha; "
            "set them to 0"
        )


def _reject_csv_path(csv_path: str | None, source: str, instead: str) -> None:
    if csv_path is not None:
        raise FERUserError(f"data.csv_path={csv_path!r} is not used by {source}: {instead}")


class FERPlusDataModule(FER2013DataModule):
    """FER2013's images with FER+ majority-vote labels: 8 classes, contempt included."""

    class_names: tuple[str, ...] = FERPLUS_CLASSES
    num_classes: int = len(FERPLUS_CLASSES)

    def __init__(self, csv_path: str, ferplus_csv: str, **kwargs: Any) -> None:
        super().__init__(csv_path=csv_path, **kwargs)

    def load_arrays(self) -> dict[str, SplitArrays]:
        return load_ferplus(
            _absolute(self.hparams.csv_path),
            _absolute(self.hparams.ferplus_csv),
            self.hparams.cache_dir,
        )


def _absolute(path: str) -> Path:
    """``~`` expanded; relative paths are taken from the current directory."""
    return Path(os.path.expanduser(path)).absolute()


def _plain(value: Any) -> Any:
    """Mappings and sequences (e.g. OmegaConf containers) as plain dicts and lists."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [_plain(item) for item in value]
    return value
