"""CIFAR-10 from the local JPEG zips (`cifar10_jpeg_{train,test}.zip`), decoded once and cached as .npy.

Each zip holds `<split>/<class>/<NNNN>.jpg`; images are read in sorted name order, so rows are
grouped by class. The decoded arrays are cached under `<cache>/cifar10/` keyed by the zip's
SHA-256, so a changed zip is decoded again and its stale cache is removed.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from cleanai.data.base import DATASETS, DataSplits, default_cache_dir, resolve_data_dir, stratified_split
from cleanai.data.images import ImageDataset, Normalize, resolve_normalize
from cleanai.errors import DataError
from cleanai.io import atomic_open

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
ZIP_FILES = {"train": "cifar10_jpeg_train.zip", "test": "cifar10_jpeg_test.zip"}
DATA_SUBDIRS = ("cifar10-jpeg", "cifar10")
_CACHE_FORMAT = "v1"  # bump when the decoded layout changes


def decode_zip(path: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode every `<split>/<class>/*.jpg` in the zip: x uint8 (N, 32, 32, 3) RGB, y uint8 (N,)."""
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{path} is not a readable zip archive ({exc}); expected CIFAR-10 JPEGs as "
                        f"{split}/<class>/<NNNN>.jpg") from None
    with archive:
        names = sorted(n for n in archive.namelist() if n.startswith(f"{split}/") and n.lower().endswith(".jpg"))
        if not names:
            raise DataError(f"{path} holds no {split}/<class>/<NNNN>.jpg entries (classes: {', '.join(CLASSES)})")
        x = np.empty((len(names), 32, 32, 3), dtype=np.uint8)
        y = np.empty(len(names), dtype=np.uint8)
        for i, name in enumerate(names):
            parts = name.split("/")
            if len(parts) != 3 or parts[1] not in CLASSES:
                raise DataError(f"{path}: entry {name!r} is not {split}/<class>/<file>.jpg with a class among "
                                f"{', '.join(CLASSES)}")
            try:
                with Image.open(io.BytesIO(archive.read(name))) as img:
                    pixels = np.asarray(img.convert("RGB"))
            except (UnidentifiedImageError, OSError, zipfile.BadZipFile) as exc:
                raise DataError(f"{path}: entry {name!r} is not a decodable image ({exc})") from None
            if pixels.shape != (32, 32, 3):
                raise DataError(f"{path}: entry {name!r} is {pixels.shape[1]}x{pixels.shape[0]}, expected 32x32")
            x[i] = pixels
            y[i] = CLASSES.index(parts[1])
    return x, y


def read_split(path: str | Path, split: str, cache_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`decode_zip` with a cache: .npy files keyed by the zip's content, written atomically."""
    path = Path(path)
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    folder = folder / "cifar10"
    stem = f"{split}-{_file_digest(path)}-{_CACHE_FORMAT}"
    x_file, y_file = folder / f"{stem}.x.npy", folder / f"{stem}.y.npy"
    if x_file.is_file() and y_file.is_file():
        try:
            x, y = np.load(x_file), np.load(y_file)
        except (OSError, ValueError):
            pass  # unreadable cache: decode again below and overwrite it
        else:
            if x.dtype == np.uint8 and x.shape[1:] == (32, 32, 3) and y.shape == (len(x),):
                return x, y
    x, y = decode_zip(path, split)
    for file, arr in ((y_file, y), (x_file, x)):
        with atomic_open(file, "wb") as fh:
            np.save(fh, arr)
    for stale in folder.glob(f"{split}-*.npy"):
        if not stale.name.startswith(stem + "."):
            stale.unlink(missing_ok=True)
    return x, y


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()[:16]


@DATASETS.register("cifar10")
def load_cifar10(root: str | Path | None = None, val_size: int | float = 5000, augment: bool = True,
                 normalize: Normalize = "imagenet", seed: int = 0, cache_dir: str | Path | None = None,
                 image_size: int | None = None) -> DataSplits:
    """CIFAR-10 (JPEG copy): 50,000 train images minus a stratified `val_size` held out, 10,000 test.

    `root` holds both zips (default `$CLEANAI_DATA/cifar10-jpeg` or `$CLEANAI_DATA/cifar10`).
    Training items are randomly cropped (4-pixel padding) and flipped when `augment`. `normalize`
    is "imagenet" (what the akamaster checkpoints expect), "cifar", None or a (mean, std) pair.
    `image_size` resizes every batch (bilinear, after cropping) for models of another input size, e.g. 224 for
    the ImageNet-layout ResNets; the images stay 32x32 in memory.
    """
    stats = resolve_normalize(normalize, channels=3)
    folder = resolve_data_dir(root, DATA_SUBDIRS, list(ZIP_FILES.values()), "CIFAR-10")
    x_train, y_train = read_split(folder / ZIP_FILES["train"], "train", cache_dir)
    x_test, y_test = read_split(folder / ZIP_FILES["test"], "test", cache_dir)
    train_idx, val_idx = stratified_split(y_train, val_size, seed)

    def part(x: np.ndarray, y: np.ndarray, idx: np.ndarray | None, augment: bool) -> ImageDataset:
        images, labels = torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(y)  # NCHW views, no copy
        if idx is not None:
            images, labels = images[torch.from_numpy(idx)], labels[torch.from_numpy(idx)]
        return ImageDataset(images.contiguous(), labels, scale=1 / 255, normalize=stats, augment=augment,
                            image_size=image_size)

    return DataSplits(
        name="cifar10",
        train=part(x_train, y_train, train_idx, augment),
        val=part(x_train, y_train, val_idx, False),
        test=part(x_test, y_test, None, False),
        label_names=list(CLASSES), task="image", input_shape=(3, image_size or 32, image_size or 32),
    )
