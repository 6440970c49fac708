"""Data stage: offline loading, fixed test splits, one-line errors, reproducible augmentation."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from autokd import data
from autokd.data import DatasetUnavailable, augment_batch, batches, load_dataset
from autokd.errors import UserError

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def offline_home(tmp_path, monkeypatch):
    """Every test: an empty AUTOKD_HOME and no network attempts."""
    monkeypatch.setenv("AUTOKD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AUTOKD_OFFLINE", "1")
    return tmp_path / "home"


def _rows(x: torch.Tensor) -> set[tuple[float, ...]]:
    return {tuple(r) for r in x.flatten(1).tolist()}


# ---------------------------------------------------------------- digits (bundled, offline)
def test_digits_shapes_and_sizes():
    s = load_dataset("digits")
    assert (s.num_classes, s.in_channels, s.image_size, s.augment) == (10, 1, (8, 8), "none")
    assert s.train_x.shape[1:] == s.val_x.shape[1:] == s.test_x.shape[1:] == (1, 8, 8)
    assert s.train_x.dtype == torch.float32 and s.train_y.dtype == torch.int64
    assert len(s.train_y) + len(s.val_y) + len(s.test_y) == 1797
    assert len(s.test_y) == pytest.approx(0.2 * 1797, abs=10)  # stratified 20 % per class
    assert len(s.val_y) == round(0.1 * (1797 - len(s.test_y)))
    assert set(s.test_y.tolist()) == set(range(10))


def test_digits_are_scikit_learns_rows_read_without_importing_it(monkeypatch):
    """The bundled table, read directly, gives load_digits' images and labels in its order; where
    scikit-learn lays its data out otherwise, its own loader is used."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    raw = data._load_digits(Path("unused"))
    assert data._digits_file() is not None
    x = torch.cat([raw.train_x, raw.test_x]).flatten(1)
    y = torch.cat([raw.train_y, raw.test_y])
    theirs = {tuple(r): int(t) for r, t in zip(bunch.data.tolist(), bunch.target.tolist())}
    assert len(y) == len(bunch.target) and {tuple(r): int(t) for r, t in zip(x.tolist(), y.tolist())} == theirs
    monkeypatch.setattr(data, "_digits_file", lambda: None)
    again = data._load_digits(Path("unused"))
    assert all(torch.equal(getattr(raw, f), getattr(again, f)) for f in ("train_x", "train_y", "test_x", "test_y"))

def test_digits_normalized_with_train_stats():
    s = load_dataset("digits")
    assert s.train_x.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert s.train_x.std().item() == pytest.approx(1.0, abs=1e-3)
    assert len(s.mean) == len(s.std) == 1


def test_digits_test_split_fixed_val_split_seeded():
    a, b = load_dataset("digits", seed=0), load_dataset("digits", seed=1)
    # compare raw rows: normalization depends on the train part, so undo it
    raw = lambda s, x: (x * s.std[0] + s.mean[0]).round()  # noqa: E731  (pixels are 0..16)
    assert _rows(raw(a, a.test_x)) == _rows(raw(b, b.test_x))
    assert torch.equal(a.test_y.sort().values, b.test_y.sort().values)
    assert _rows(raw(a, a.val_x)) != _rows(raw(b, b.val_x))
    again = load_dataset("digits", seed=1)
    assert torch.equal(again.val_x, b.val_x) and torch.equal(again.train_x, b.train_x)


def test_digits_splits_do_not_overlap():
    s = load_dataset("digits")  # the 1797 digit images are pairwise distinct
    train, val, test = _rows(s.train_x), _rows(s.val_x), _rows(s.test_x)
    assert len(train) + len(val) + len(test) == 1797
    assert not (train & val) and not (train & test) and not (val & test)


def test_train_subset_keeps_first_n():
    s = load_dataset("digits", train_subset=100)
    assert len(s.train_y) == 100
    assert len(s.val_y) == len(load_dataset("digits").val_y)  # val and test untouched


@pytest.mark.parametrize("kwargs", [{"val_fraction": 1.0}, {"val_fraction": -0.1},
                                    {"train_subset": 0}])
def test_bad_split_args_are_user_errors(kwargs):
    with pytest.raises(UserError):
        load_dataset("digits", **kwargs)


# ---------------------------------------------------------------- torchvision datasets
def test_fashion_mnist_from_debian_files(offline_home):
    if not DEBIAN_FASHION.is_dir():
        pytest.skip("Debian's dataset-fashion-mnist is not installed "
                    "(apt-get install dataset-fashion-mnist)")
    s = load_dataset("fashion-mnist")
    raw = offline_home / "data" / "FashionMNIST" / "raw"
    assert len(s.train_y) + len(s.val_y) == 60000 and len(s.test_y) == 10000
    assert s.train_x.shape[1:] == s.test_x.shape[1:] == (1, 28, 28)
    assert (s.num_classes, s.augment, s.source) == (10, "crop", str(raw))
    assert (raw / "train-images-idx3-ubyte").is_file()  # unpacked for torchvision's reader
    assert not [p for p in raw.iterdir() if p.name.startswith(".")]  # no temp files left
    assert torch.bincount(s.test_y).tolist() == [1000] * 10
    status = {r["name"]: r for r in data.dataset_status()}
    assert status["fashion-mnist"]["available_offline"] is True


@pytest.mark.parametrize("name, folder", [("cifar10", "cifar-10-batches-py"),
                                          ("cifar100", "cifar-100-python"),
                                          ("svhn", "svhn"),
                                          ("mnist", "MNIST/raw")])
def test_missing_offline_dataset_is_one_line(offline_home, name, folder):
    with pytest.raises(DatasetUnavailable) as err:
        load_dataset(name)
    msg = str(err.value)
    assert "\n" not in msg and name in msg and "AUTOKD_OFFLINE" in msg
    assert str(offline_home / "data" / folder) in msg


def test_dataset_status_rows():
    rows = data.dataset_status()
    assert [r["name"] for r in rows] == data.DATASETS.names()
    by_name = {r["name"]: r for r in rows}
    assert set(by_name) >= {"digits", "fashion-mnist", "mnist", "cifar10", "cifar100", "svhn"}
    assert by_name["digits"]["input_shape"] == "1x8x8" and by_name["digits"]["available_offline"]
    assert by_name["cifar10"] == {**by_name["cifar10"], "classes": 10,
                                  "input_shape": "3x32x32", "available_offline": False}


# ---------------------------------------------------------------- names and image folders
def test_unknown_dataset_lists_valid_names():
    with pytest.raises(UserError) as err:
        load_dataset("imagenet-but-tiny")
    msg = str(err.value)
    assert "\n" not in msg and "imagenet-but-tiny" in msg
    assert all(n in msg for n in ("digits", "cifar10", "fashion-mnist", "imagefolder:PATH"))


def test_imagefolder_missing_and_empty_dirs(tmp_path):
    for path in (tmp_path / "nope", tmp_path):
        with pytest.raises(UserError) as err:
            load_dataset(f"imagefolder:{path}")
        assert "\n" not in str(err.value) and str(path) in str(err.value)


def _write_pngs(folder: Path, per_class: int, size: tuple[int, int] = (10, 12)) -> None:
    from PIL import Image

    for label, color in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
        (folder / label).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", size, tuple(c // (i + 1) for c in color)).save(folder / label / f"{i}.png")


def test_imagefolder_flat_loads_with_carved_test(tmp_path):
    _write_pngs(tmp_path / "pics", per_class=5)
    s = load_dataset(f"imagefolder:{tmp_path / 'pics'}", val_fraction=0.25)
    assert (s.num_classes, s.in_channels, s.image_size, s.augment) == (2, 3, (32, 32), "crop_flip")
    assert s.train_x.shape[1:] == (3, 32, 32)
    assert sorted(s.test_y.tolist()) == [0, 1]  # 20 % of 5 per class
    assert len(s.train_y) + len(s.val_y) == 8


def test_imagefolder_train_test_subfolders(tmp_path):
    _write_pngs(tmp_path / "pics" / "train", per_class=4)
    _write_pngs(tmp_path / "pics" / "test", per_class=2)
    s = load_dataset(f"imagefolder:{tmp_path / 'pics'}", val_fraction=0.0)
    assert len(s.train_y) == 8 and sorted(s.test_y.tolist()) == [0, 0, 1, 1]


# ---------------------------------------------------------------- augmentation and batches
def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("kind", ["crop", "crop_flip"])
def test_augment_same_seed_same_batch(kind):
    x = torch.randn(16, 3, 32, 32)
    a, b = augment_batch(x, kind, _gen(7)), augment_batch(x, kind, _gen(7))
    assert a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a, augment_batch(x, kind, _gen(8)))


def test_augment_none_is_identity():
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(augment_batch(x, "none", _gen(0)), x)


def test_crop_shifts_within_padding():
    """An image of ones, shifted within a zero border of max(1, 28 // 8) = 3 px."""
    x = torch.ones(64, 1, 28, 28)
    out = augment_batch(x, "crop", _gen(0))
    zero_rows = (out.sum(dim=3) == 0).sum(dim=(1, 2))  # fully-zero rows per image
    zero_cols = (out.sum(dim=2) == 0).sum(dim=(1, 2))
    assert zero_rows.max() <= 3 and zero_cols.max() <= 3
    assert (zero_rows + zero_cols).gt(0).any()  # some image did move
    assert ((out == 0) | (out == 1)).all()  # pixels move, never mix


def test_flip_mirrors_some_images():
    x = torch.arange(8.0).repeat(32, 1, 8, 1)  # rows 0..7 in every image: a horizontal ramp
    out = data._random_flip(x, _gen(0))
    flipped = (out[:, 0, 0, 0] == 7).sum().item()
    assert 0 < flipped < 32 and all(torch.equal(o, x[0]) or torch.equal(o, x[0].flip(2)) for o in out)


def test_unknown_augment_is_user_error():
    with pytest.raises(UserError):
        augment_batch(torch.zeros(1, 1, 8, 8), "mixup", _gen(0))


@pytest.mark.parametrize("shuffle, augment", [(False, "none"), (True, "none"), (True, "crop")])
def test_batches_cover_every_sample_once(shuffle, augment):
    x = torch.arange(103.0).view(103, 1, 1, 1).expand(103, 1, 8, 8).contiguous()
    y = torch.arange(103)
    seen = []
    for xb, yb in batches(x, y, 16, shuffle=shuffle, generator=_gen(0), augment=augment):
        assert len(xb) == len(yb) <= 16 and xb.shape[1:] == (1, 8, 8)
        seen += yb.tolist()
    assert sorted(seen) == list(range(103)) and len(seen) == 103
    assert (seen == list(range(103))) is not shuffle


def test_batches_shuffle_reproducible_and_needs_generator():
    x, y = torch.randn(50, 1, 4, 4), torch.arange(50)
    order = lambda s: [yb.tolist() for _, yb in batches(x, y, 8, shuffle=True, generator=_gen(s))]  # noqa: E731
    assert order(3) == order(3) and order(3) != order(4)
    with pytest.raises(ValueError):
        batches(x, y, 8, shuffle=True)
