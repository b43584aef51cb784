"""Datasets: `load_dataset(name)` returns train/val/test splits, label names and DataLoaders.

Built in: `digits` (scikit-learn, embedded), `cifar10` (local JPEG zips), `clinc150` (oos-eval JSON).
Directories default to `$CLEANAI_DATA/<name>`; decoded data is cached in `$CLEANAI_CACHE`.
"""

from cleanai.data.base import DATASETS, DataSplits, Loaders, default_cache_dir, list_datasets, load_dataset, subset
from cleanai.data.cifar10 import load_cifar10
from cleanai.data.clinc150 import load_clinc150
from cleanai.data.digits import load_digits
from cleanai.data.images import NORMALIZATIONS, ImageDataset, random_crop_flip
from cleanai.data.text import TextCollate, TextDataset, raw_text_collate, text_collate, texts_of

__all__ = [
    "DATASETS",
    "NORMALIZATIONS",
    "DataSplits",
    "ImageDataset",
    "Loaders",
    "TextCollate",
    "TextDataset",
    "default_cache_dir",
    "list_datasets",
    "load_cifar10",
    "load_clinc150",
    "load_dataset",
    "load_digits",
    "random_crop_flip",
    "raw_text_collate",
    "subset",
    "text_collate",
    "texts_of",
]
