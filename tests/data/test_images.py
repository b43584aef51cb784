"""Batched crop/flip augmentation, normalisation presets and the in-memory ImageDataset."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from cleanai.data import NORMALIZATIONS, ImageDataset, random_crop_flip
from cleanai.data.images import resolve_normalize


def _images(n: int = 16) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def test_crop_matches_slicing_the_padded_image_at_the_drawn_offsets():
    x = _images()
    out = random_crop_flip(x, padding=2, flip=False, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    dy, dx = torch.randint(0, 5, (16,), generator=g), torch.randint(0, 5, (16,), generator=g)
    padded = F.pad(x, (2, 2, 2, 2))
    expected = torch.stack([padded[i, :, dy[i]:dy[i] + 8, dx[i]:dx[i] + 8] for i in range(16)])
    assert out.dtype == torch.uint8 and torch.equal(out, expected)
    assert not torch.equal(out, x)


def test_flip_mirrors_about_half_of_the_images_exactly():
    x = _images(200)
    out = random_crop_flip(x, padding=0, flip=True)
    mirrored = torch.tensor([torch.equal(o, i.flip(-1)) for o, i in zip(out, x)])
    unchanged = torch.tensor([torch.equal(o, i) for o, i in zip(out, x)])
    assert bool((mirrored ^ unchanged).all())
    assert 60 < int(mirrored.sum()) < 140


def test_no_padding_and_no_flip_is_the_identity():
    x = _images()
    assert torch.equal(random_crop_flip(x, padding=0, flip=False), x)


def test_normalisation_presets_and_explicit_pairs():
    assert resolve_normalize("imagenet", 3) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert resolve_normalize("cifar", 3) == NORMALIZATIONS["cifar"]
    assert resolve_normalize(None, 3) is None
    assert resolve_normalize(([0.5], [0.25]), 1) == ((0.5,), (0.25,))


@pytest.mark.parametrize(("value", "match"), [
    ("mnist", "not a preset; use one of \\['cifar', 'imagenet'\\]"),
    (((0.5, 0.5), (0.2, 0.2)), "needs 3 means and 3 positive stds"),
    (((0.5,) * 3, (0.2, 0.0, 0.2)), "needs 3 means and 3 positive stds"),
    ((1, 2, 3), "must be a preset name, None, or a \\(mean, std\\) pair"),
])
def test_bad_normalisation_names_value_and_choices(value, match):
    with pytest.raises(ValueError, match=match):
        resolve_normalize(value, 3)


def test_dataset_scales_and_normalises_per_channel():
    torch.set_num_threads(2)
    x = _images(4)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    ds = ImageDataset(x, torch.tensor([0, 1, 2, 3]), normalize=(mean, std))
    batch, labels = ds.batch([0, 2])
    expected = (x[[0, 2]].double() / 255 - torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1)) / torch.tensor(
        std, dtype=torch.float64).view(1, 3, 1, 1)
    assert batch.dtype == torch.float32 and labels.tolist() == [0, 2]
    assert torch.allclose(batch.double(), expected, atol=1e-6)
    assert torch.get_num_threads() == 2  # the batch ran single-threaded, then the setting was restored
    image, label = ds[2]
    assert torch.equal(image, batch[1]) and label == 2 and isinstance(label, int)
    with pytest.raises(IndexError, match="index 4 out of range for 4 images"):
        ds[4]


def test_dataloader_fetches_whole_batches_and_augments_only_when_asked():
    x = _images(10)
    plain = ImageDataset(x, torch.arange(10), scale=1.0)
    augmented = ImageDataset(x, torch.arange(10), scale=1.0, augment=True)
    xb, yb = next(iter(DataLoader(plain, batch_size=10)))
    assert xb.shape == (10, 3, 8, 8) and yb.tolist() == list(range(10))
    assert torch.equal(xb, x.float()) and torch.equal(x, _images(10))  # the stored pixels stay untouched
    ab, _ = next(iter(DataLoader(augmented, batch_size=10)))
    assert ab.shape == xb.shape and not torch.equal(ab, xb)


def test_dataset_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match=r"\(N, C, H, W\) with one label each, got \(4, 8, 8\) and 3 labels"):
        ImageDataset(torch.zeros(4, 8, 8), torch.zeros(3))


def test_image_size_resizes_each_batch_bilinearly_and_keeps_the_stored_pixels():
    x = _images(4)
    ds = ImageDataset(x, torch.arange(4), scale=1.0, image_size=24)
    batch, _ = ds.batch([0, 1])
    assert batch.shape == (2, 3, 24, 24) and ds[3][0].shape == (3, 24, 24) and x.shape == (4, 3, 8, 8)
    expected = F.interpolate(x[[0, 1]].float(), size=(24, 24), mode="bilinear", align_corners=False)
    assert torch.allclose(batch, expected)
    with pytest.raises(ValueError, match="image_size must be a positive number of pixels"):
        ImageDataset(x, torch.arange(4), image_size=0)
