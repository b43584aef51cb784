"""CIFAR-10 from JPEG zips: decoding, cache, splits, augmentation, normalisation and errors.

Unit tests build a tiny zip with the real layout in tmp_path; one test decodes the real shared
test zip (10,000 images) into a fresh cache and compares it with the shared decoded copy.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cleanai.data import load_cifar10, load_dataset
from cleanai.data.cifar10 import CLASSES, decode_zip, read_split
from cleanai.errors import DataError

PER_CLASS = {"train": 6, "test": 2}


def _jpeg(rng: np.random.Generator, size: int = 32) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def _write_zip(path: Path, split: str, per_class: int, seed: int = 0, extra: dict[str, bytes] | None = None) -> Path:
    rng = np.random.default_rng(seed)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for cls in CLASSES:
            for i in range(per_class):
                zf.writestr(f"{split}/{cls}/{i:04d}.jpg", _jpeg(rng))
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return path


@pytest.fixture
def tiny_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "cifar10-jpeg"
    folder.mkdir()
    for split, n in PER_CLASS.items():
        _write_zip(folder / f"cifar10_jpeg_{split}.zip", split, n, seed=len(split))
    return folder


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("CLEANAI_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_decode_reads_sorted_names_with_class_labels(tiny_dir):
    x, y = decode_zip(tiny_dir / "cifar10_jpeg_test.zip", "test")
    assert x.shape == (20, 32, 32, 3) and x.dtype == np.uint8
    assert y.tolist() == [c for c in range(10) for _ in range(2)]
    with zipfile.ZipFile(tiny_dir / "cifar10_jpeg_test.zip") as zf:
        first = np.asarray(Image.open(io.BytesIO(zf.read("test/airplane/0000.jpg"))).convert("RGB"))
    assert np.array_equal(x[0], first)


def test_load_gives_stratified_val_and_class_names(tiny_dir):
    s = load_dataset("cifar10", root=tiny_dir, val_size=20)
    assert (len(s.train), len(s.val), len(s.test)) == (40, 20, 20)
    assert s.label_names == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert s.task == "image" and s.input_shape == (3, 32, 32)
    assert np.bincount(s.val.labels.numpy()).tolist() == [2] * 10
    assert np.bincount(s.train.labels.numpy()).tolist() == [4] * 10
    image, label = s.test[0]
    assert image.dtype == torch.float32 and image.shape == (3, 32, 32) and label == 0


def test_val_split_is_seeded_and_can_be_empty(tiny_dir):
    a = load_cifar10(tiny_dir, val_size=10, seed=1)
    b = load_cifar10(tiny_dir, val_size=10, seed=1)
    c = load_cifar10(tiny_dir, val_size=10, seed=2)
    assert torch.equal(a.val.images, b.val.images) and not torch.equal(a.val.images, c.val.images)
    empty = load_cifar10(tiny_dir, val_size=0)
    assert len(empty.val) == 0 and len(empty.train) == 60
    assert list(empty.loaders(batch_size=8).val) == []


def test_unnormalised_items_are_the_decoded_pixels_over_255(tiny_dir):
    s = load_cifar10(tiny_dir, val_size=0, normalize=None, augment=False)
    x, _ = decode_zip(tiny_dir / "cifar10_jpeg_train.zip", "train")
    expected = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255
    batch, _ = s.train.batch(range(60))
    assert torch.allclose(batch, expected, atol=1e-6)


@pytest.mark.parametrize(("normalize", "mean", "std"), [
    ("imagenet", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ("cifar", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    (((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
])
def test_normalisation_applies_the_chosen_statistics(tiny_dir, normalize, mean, std):
    raw, _ = load_cifar10(tiny_dir, val_size=0, normalize=None).test.batch(range(20))
    out, _ = load_cifar10(tiny_dir, val_size=0, normalize=normalize).test.batch(range(20))
    expected = (raw - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(out, expected, atol=1e-5)


def test_bad_normalisation_is_refused_before_reading(tmp_path):
    with pytest.raises(ValueError, match="normalize='mnist' is not a preset"):
        load_cifar10(tmp_path, normalize="mnist")


def test_augmentation_changes_training_images_only(tiny_dir):
    aug = load_cifar10(tiny_dir, val_size=10, augment=True)
    plain = load_cifar10(tiny_dir, val_size=10, augment=False)
    idx = list(range(len(aug.train)))
    a1, y1 = aug.train.batch(idx)
    a2, _ = aug.train.batch(idx)
    p, y0 = plain.train.batch(idx)
    assert a1.shape == p.shape == (50, 3, 32, 32) and torch.equal(y1, y0)
    assert not torch.equal(a1, p) and not torch.equal(a1, a2)
    for split in ("val", "test"):
        ds_a, ds_p = getattr(aug, split), getattr(plain, split)
        assert torch.equal(ds_a.batch(range(len(ds_a)))[0], ds_p.batch(range(len(ds_p)))[0])
    xb, yb = next(iter(aug.loaders(batch_size=16).train))
    assert xb.shape == (16, 3, 32, 32) and yb.shape == (16,) and yb.dtype == torch.long


def test_cache_is_written_then_read_instead_of_the_zip(tiny_dir, _cache_in_tmp):
    load_cifar10(tiny_dir, val_size=0)
    files = sorted(p.name for p in (_cache_in_tmp / "cifar10").iterdir())
    assert len(files) == 4 and all(f.endswith((".x.npy", ".y.npy")) for f in files)
    assert {f.split("-")[0] for f in files} == {"train", "test"}
    # Overwrite the cached test pixels: a second load must return them, proving the zip was not decoded.
    x_file = next((_cache_in_tmp / "cifar10").glob("test-*.x.npy"))
    np.save(x_file, np.full((20, 32, 32, 3), 7, dtype=np.uint8))
    s = load_cifar10(tiny_dir, val_size=0, normalize=None)
    assert torch.allclose(s.test[0][0], torch.full((3, 32, 32), 7 / 255))


def test_changed_zip_invalidates_the_cache(tiny_dir, _cache_in_tmp):
    before = load_cifar10(tiny_dir, val_size=0, normalize=None).test
    old = {p.name for p in (_cache_in_tmp / "cifar10").glob("test-*")}
    _write_zip(tiny_dir / "cifar10_jpeg_test.zip", "test", 3, seed=99)
    after = load_cifar10(tiny_dir, val_size=0, normalize=None).test
    new = {p.name for p in (_cache_in_tmp / "cifar10").glob("test-*")}
    assert len(after) == 30 and len(before) == 20
    assert len(new) == 2 and not new & old  # stale files removed, fresh ones written
    fresh = torch.from_numpy(decode_zip(tiny_dir / "cifar10_jpeg_test.zip", "test")[0]).permute(0, 3, 1, 2)
    assert torch.allclose(after.batch(range(30))[0], fresh.float() / 255, atol=1e-6)


def test_corrupt_cache_is_rebuilt(tiny_dir, _cache_in_tmp):
    load_cifar10(tiny_dir, val_size=0)
    for f in (_cache_in_tmp / "cifar10").glob("train-*.x.npy"):
        f.write_bytes(b"not numpy")
    x, y = read_split(tiny_dir / "cifar10_jpeg_train.zip", "train")
    assert x.shape == (60, 32, 32, 3) and len(y) == 60


def test_default_directory_comes_from_the_environment(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("CLEANAI_DATA", str(tmp_path))
    assert len(load_dataset("cifar10", val_size=0).test) == 20
    tiny_dir.rename(tmp_path / "cifar10")  # the alternative folder name is accepted too
    assert len(load_dataset("cifar10", val_size=0).test) == 20


def test_missing_directory_names_it_the_zips_and_the_variable(tmp_path):
    with pytest.raises(DataError) as err:
        load_cifar10(tmp_path / "nowhere")
    msg = str(err.value)
    assert str(tmp_path / "nowhere") in msg and "not a directory" in msg
    assert "cifar10_jpeg_train.zip, cifar10_jpeg_test.zip" in msg and "CLEANAI_DATA" in msg


def test_missing_zip_is_named(tiny_dir):
    (tiny_dir / "cifar10_jpeg_test.zip").unlink()
    with pytest.raises(DataError, match=f"{tiny_dir} \\(missing cifar10_jpeg_test.zip\\)"):
        load_cifar10(tiny_dir)


def test_not_a_zip_is_named(tiny_dir):
    (tiny_dir / "cifar10_jpeg_train.zip").write_bytes(b"garbage")
    with pytest.raises(DataError, match="cifar10_jpeg_train.zip is not a readable zip archive"):
        load_cifar10(tiny_dir)


def test_unknown_class_folder_and_undecodable_image_are_named(tmp_path):
    bad_class = _write_zip(tmp_path / "a.zip", "test", 1, extra={"test/unicorn/0000.jpg": b"x"})
    with pytest.raises(DataError, match="entry 'test/unicorn/0000.jpg' is not test/<class>/<file>.jpg"):
        decode_zip(bad_class, "test")
    broken = _write_zip(tmp_path / "b.zip", "test", 1, extra={"test/cat/9999.jpg": b"not a jpeg"})
    with pytest.raises(DataError, match="entry 'test/cat/9999.jpg' is not a decodable image"):
        decode_zip(broken, "test")
    with pytest.raises(DataError, match="holds no train/<class>/<NNNN>.jpg entries"):
        decode_zip(broken, "train")


def test_wrong_image_size_is_named(tmp_path):
    big = _write_zip(tmp_path / "c.zip", "test", 1, extra={"test/dog/0500.jpg": _jpeg(np.random.default_rng(0), 40)})
    with pytest.raises(DataError, match="'test/dog/0500.jpg' is 40x40, expected 32x32"):
        decode_zip(big, "test")


def test_real_test_zip_decodes_to_the_shared_reference(shared_data_dir, _cache_in_tmp):
    folder = shared_data_dir / "cifar10-jpeg"
    x, y = read_split(folder / "cifar10_jpeg_test.zip", "test")  # real decoding: the cache dir is empty
    assert x.shape == (10000, 32, 32, 3) and np.bincount(y).tolist() == [1000] * 10
    reference = np.load(folder / "cifar10_test_uint8.npz")
    assert np.array_equal(y, reference["y"]) and np.array_equal(x, reference["x"])
    cached = list((_cache_in_tmp / "cifar10").glob("test-*.npy"))
    assert len(cached) == 2 and all(os.path.getsize(f) > 0 for f in cached)
    # The JPEG copy keeps CIFAR-10's channel means (README: 0.4913/0.4821/0.4465 on train).
    assert np.allclose(x.reshape(-1, 3).mean(0) / 255, (0.49, 0.48, 0.45), atol=0.01)
