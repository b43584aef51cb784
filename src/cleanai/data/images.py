"""In-memory image datasets with batched normalisation and augmentation in plain torch (no torchvision)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from cleanai._platform import torch_threads
from cleanai.errors import DataError

NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    # The akamaster CIFAR ResNet checkpoints were trained with ImageNet statistics.
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "cifar": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}

Normalize = str | tuple[Sequence[float], Sequence[float]] | None


def resolve_normalize(normalize: Normalize, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """Turn a preset name, an explicit `(mean, std)` pair or None into per-channel `(mean, std)`."""
    if normalize is None:
        return None
    if isinstance(normalize, str):
        if normalize not in NORMALIZATIONS:
            raise DataError(f"normalize={normalize!r} is not a preset; use one of {sorted(NORMALIZATIONS)}, "
                             "None, or an explicit (mean, std) pair")
        mean, std = NORMALIZATIONS[normalize]
    else:
        try:
            mean, std = (tuple(float(v) for v in part) for part in normalize)
        except (TypeError, ValueError):
            raise DataError(f"normalize={normalize!r} must be a preset name, None, or a (mean, std) pair of "
                             f"{channels} floats each") from None
    if len(mean) != channels or len(std) != channels or min(std) <= 0:
        raise DataError(f"normalize={normalize!r} needs {channels} means and {channels} positive stds")
    return mean, std


def random_crop_flip(images: torch.Tensor, padding: int = 4, flip: bool = True,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Randomly crop each image of an (N, C, H, W) batch after zero-padding, and mirror half of them.

    The classic CIFAR augmentation (pad 4, crop back to the input size, horizontal flip), vectorised
    over the batch. Works on any dtype; pad before normalising so padding is black, as in torchvision.
    """
    n, c, h, w = images.shape
    if padding > 0:
        padded = F.pad(images, (padding, padding, padding, padding))
        windows = padded.unfold(2, h, 1).unfold(3, w, 1)  # (N, C, 2p+1, 2p+1, H, W) view, no copy
        dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
        dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
        images = windows[torch.arange(n), :, dy, dx]
    if flip:
        mirror = torch.rand(n, generator=generator) < 0.5
        cols = torch.where(mirror[:, None], torch.arange(w - 1, -1, -1), torch.arange(w))  # (N, W) source columns
        images = images.gather(3, cols[:, None, None, :].expand(n, c, h, w))
    return images


class ImageDataset(Dataset):
    """Images held as one (N, C, H, W) tensor; items are (float32 CHW tensor, int label).

    Pixels are stored compactly (e.g. uint8) and converted per batch: `pixels * scale`, then
    `(x - mean) / std`. DataLoader fetches whole batches through `__getitems__`, so augmentation
    and normalisation run once per batch, not once per image. `scale` and `normalize` stay readable
    so a deployed model can reproduce the preprocessing.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, scale: float = 1 / 255,
                 normalize: tuple[Sequence[float], Sequence[float]] | None = None, augment: bool = False,
                 image_size: int | None = None) -> None:
        if images.ndim != 4 or len(images) != len(labels):
            raise DataError(f"images must be (N, C, H, W) with one label each, got {tuple(images.shape)} "
                             f"and {len(labels)} labels")
        if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int)
                                       or image_size < 1):
            raise DataError(f"image_size must be a positive number of pixels (or None), got {image_size!r}")
        self.images = images
        self.image_size = image_size  # each batch resized (bilinear) to image_size x image_size, e.g. 224
        self.labels = labels.long()
        self.scale = scale
        self.augment = augment
        self.normalize = (tuple(normalize[0]), tuple(normalize[1])) if normalize is not None else None
        # x * scale, then (x - mean) / std, folded into one multiply-add per pixel.
        mean = torch.tensor(normalize[0] if normalize else 0.0, dtype=torch.float64).reshape(1, -1, 1, 1)
        std = torch.tensor(normalize[1] if normalize else 1.0, dtype=torch.float64).reshape(1, -1, 1, 1)
        self._mul, self._sub = (scale / std).float(), (mean / std).float()

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, indices: Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The images (float32, N x C x H x W, augmented if enabled) and labels at `indices`."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        # one thread for a batch's small tensor ops: on a busy CPU, spreading a 1.5 MB op over several intra-op
        # threads makes each op wait for a descheduled thread (measured 108 ms vs 7 ms per CIFAR batch of 128 on
        # 2 shared cores); DataLoader workers already run single-threaded
        with torch_threads(1):
            x = self.images[idx]
            if self.augment:
                x = random_crop_flip(x)
            x = x.float().mul_(self._mul).sub_(self._sub)  # x is a fresh copy: indexing copies
            if self.image_size is not None and tuple(x.shape[-2:]) != (self.image_size, self.image_size):
                x = torch.nn.functional.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                                                    align_corners=False)
        return x, self.labels[idx]

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int]]:
        x, y = self.batch(indices)
        return list(zip(x.unbind(0), y.tolist()))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        return self.__getitems__([index])[0]
