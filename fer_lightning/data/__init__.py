"""Data layer: FER2013 parsing (csv, image folders, synthetic), transforms, class weights and
LightningDataModules."""

from fer_lightning.data.class_weights import CLASS_WEIGHTING_MODES, class_weights
from fer_lightning.data.datamodule import (
    SPLIT_NAMES,
    FER2013DataModule,
    FER2013FoldersDataModule,
    FERDataset,
    FERPlusDataModule,
    SyntheticFER2013DataModule,
)
from fer_lightning.data.fer2013_csv import SPLITS, SplitArrays, load_fer2013_csv
from fer_lightning.data.ferplus import FERPLUS_CLASSES, load_ferplus, majority_labels
from fer_lightning.data.folders import (
    load_fer2013_folders,
    stratified_split_indices,
    stratified_val_counts,
)
from fer_lightning.data.synthetic import write_synthetic_fer2013_csv
from fer_lightning.data.transforms import AUGMENT_KNOBS, BatchAugment, normalize

__all__ = [
    "AUGMENT_KNOBS",
    "CLASS_WEIGHTING_MODES",
    "FERPLUS_CLASSES",
    "SPLITS",
    "SPLIT_NAMES",
    "BatchAugment",
    "FER2013DataModule",
    "FER2013FoldersDataModule",
    "FERDataset",
    "FERPlusDataModule",
    "SplitArrays",
    "SyntheticFER2013DataModule",
    "class_weights",
    "load_fer2013_csv",
    "load_fer2013_folders",
    "load_ferplus",
    "majority_labels",
    "normalize",
    "stratified_split_indices",
    "stratified_val_counts",
    "write_synthetic_fer2013_csv",
]
