"""Data stage: every dataset becomes in-memory, normalized NCHW tensors split train / val / test.

Contract, stated once here: the val split is carved from the official training set with ``seed``;
the test split is the official one or, where there is none (digits, a flat image folder), a
stratified 20 % carved with the fixed seed 0, the same for every run, and never used to choose
anything. Images are normalized with the train part's per-channel mean/std. Files live under
:func:`data_root` in torchvision's own layout; nothing is downloaded when ``AUTOKD_OFFLINE=1``, and
a dataset that cannot be found or fetched raises :class:`DatasetUnavailable` (one line naming the
folder to fill, never a traceback). Randomness comes only from explicit seeds and generators.
"""
from __future__ import annotations

import gzip
import importlib.util
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple
from urllib.error import URLError

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import UserError
from .provenance import autokd_home
from .registry import Registry, UnknownName

TEST_FRACTION = 0.2  # carved test share for datasets without an official test split
TEST_SEED = 0  # fixed, independent of the run's seed: every run is scored on the same images
IMAGEFOLDER_SIZE = (32, 32)  # imagefolder images are resized to this (H, W), RGB
IMAGEFOLDER_PREFIX = "imagefolder:"
# Debian's package dataset-fashion-mnist installs the four .gz files here; looked up at call time.
IDX_MIRRORS: dict[str, Path] = {"FashionMNIST": Path("/usr/share/datasets/fashion-mnist")}
_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


class DatasetUnavailable(UserError):
    """A dataset whose files are missing or unreadable and could not be fetched (one-line message)."""


class UnknownDataset(UserError):
    """A name that is neither registered nor ``imagefolder:PATH``; the message lists valid names."""


@dataclass
class DataSplits:
    name: str
    num_classes: int
    in_channels: int
    image_size: tuple[int, int]  # (H, W)
    train_x: Tensor  # float32 NCHW, normalized with the train part's per-channel mean/std
    train_y: Tensor  # int64
    val_x: Tensor
    val_y: Tensor
    test_x: Tensor
    test_y: Tensor
    augment: str  # standard augmentation for this dataset: "none" | "crop" | "crop_flip"
    source: str  # where the data was read from, for provenance
    mean: tuple[float, ...] = ()  # per-channel normalization, needed to feed raw images later
    std: tuple[float, ...] = ()
    train_subset: int | None = None  # the first N shuffled training images only (None: all)


class _Raw(NamedTuple):
    """Unnormalized images (NCHW, any numeric dtype) and labels of the official train/test parts."""

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    source: str


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    in_channels: int
    image_size: tuple[int, int]
    description: str
    loader: Callable[[Path], _Raw]  # data root -> raw splits; raises DatasetUnavailable
    augment: str = "none"
    locate: Callable[[Path], tuple[bool, str]] = lambda root: (True, "bundled")  # offline?, where


DATASETS: Registry[DatasetInfo] = Registry("dataset")


def data_root() -> Path:
    """``$AUTOKD_HOME/data`` (:func:`autokd.provenance.autokd_home`)."""
    return autokd_home() / "data"


# ---------------------------------------------------------------- fetching torchvision datasets
def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:120].rstrip(':')}" if text else type(err).__name__


def _fetch(name: str, where: str, build: Callable[..., Any]) -> Any:
    """Call a torchvision constructor ``build(download=...)``; missing files become one clear line."""
    download = os.environ.get("AUTOKD_OFFLINE") != "1"
    try:
        return build(download=download)  # torchvision's own download and timeouts
    except (RuntimeError, URLError, OSError) as err:
        why = _one_line(err) if download else "download is off: AUTOKD_OFFLINE=1"
        raise DatasetUnavailable(
            f"dataset {name!r} is not available and could not be downloaded ({why}); "
            f"put the files in {where}") from None


def _gunzip(src: Path, dst: Path) -> None:
    """Unpack ``src`` to ``dst`` atomically (temp file in the same folder, then rename)."""
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.")
    try:
        with os.fdopen(fd, "wb") as out, gzip.open(src, "rb") as inp:
            shutil.copyfileobj(inp, out, 1 << 20)
        os.replace(tmp, dst)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _stage_idx(name: str, raw: Path, sources: list[Path]) -> None:
    """Fill torchvision's ``raw/`` folder: gunzip each missing idx file from the first source with its .gz."""
    for fname in _IDX_FILES:
        gz = next((s / f"{fname}.gz" for s in sources if (s / f"{fname}.gz").is_file()), None)
        if (raw / fname).exists() or gz is None:
            continue
        try:
            raw.mkdir(parents=True, exist_ok=True)
            _gunzip(gz, raw / fname)
        except (OSError, EOFError) as err:
            raise DatasetUnavailable(
                f"dataset {name!r}: could not unpack {gz} into {raw}/ ({_one_line(err)})") from None


def _idx_sources(cls_name: str, root: Path) -> list[Path]:
    mirror = IDX_MIRRORS.get(cls_name)
    return [root / cls_name / "raw"] + ([mirror] if mirror else [])


def _load_mnist_like(name: str, cls_name: str, root: Path) -> _Raw:
    from torchvision import datasets

    cls, raw = getattr(datasets, cls_name), root / cls_name / "raw"
    _stage_idx(name, raw, _idx_sources(cls_name, root))
    where = f"{raw}/ ({', '.join(_IDX_FILES)}, or their .gz)"
    tr, te = (_fetch(name, where, partial(cls, str(root), train=t))
              for t in (True, False))
    return _Raw(tr.data.unsqueeze(1), tr.targets, te.data.unsqueeze(1), te.targets, str(raw))


def _locate(folder: Path, candidates: list[Path]) -> tuple[bool, str]:
    """(available offline, where): the first candidate that exists, else a note naming ``folder``."""
    found = next((p for p in candidates if p.exists()), None)
    return (True, str(found)) if found else (False, f"missing: put the files in {folder}/")


def _locate_mnist_like(cls_name: str, root: Path) -> tuple[bool, str]:
    images = _IDX_FILES[0]
    return _locate(root / cls_name / "raw", [s / f for s in _idx_sources(cls_name, root)
                                             for f in (images, f"{images}.gz")])


def _cifar_paths(cls_name: str, root: Path) -> tuple[Any, Path, Path]:
    from torchvision import datasets

    cls = getattr(datasets, cls_name)
    return cls, root / cls.base_folder, root / cls.filename


def _load_cifar(name: str, cls_name: str, root: Path) -> _Raw:
    cls, folder, archive = _cifar_paths(cls_name, root)
    where = f"{folder}/ (or the {archive.name} archive in {root}/)"
    if not folder.is_dir() and archive.is_file():  # an archive placed by hand: no network needed
        from torchvision.datasets.utils import extract_archive

        try:
            extract_archive(str(archive), str(root))
        except (OSError, EOFError, tarfile.TarError) as err:
            raise DatasetUnavailable(f"dataset {name!r}: cannot unpack {archive} "
                                     f"({_one_line(err)}); put the files in {where}") from None
    tr, te = (_fetch(name, where, partial(cls, str(root), train=t))
              for t in (True, False))
    nchw = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2)  # noqa: E731  (NHWC uint8 -> NCHW)
    return _Raw(nchw(tr.data), torch.as_tensor(tr.targets), nchw(te.data),
                torch.as_tensor(te.targets), str(folder))


def _locate_cifar(cls_name: str, root: Path) -> tuple[bool, str]:
    _, folder, archive = _cifar_paths(cls_name, root)
    return _locate(folder, [folder, archive])


_SVHN_FILES = ("train_32x32.mat", "test_32x32.mat")


def _load_svhn(name: str, root: Path) -> _Raw:
    from torchvision import datasets

    folder = root / "svhn"
    where = f"{folder}/ ({' and '.join(_SVHN_FILES)})"
    tr, te = (_fetch(name, where, partial(datasets.SVHN, str(folder), split=s))
              for s in ("train", "test"))
    return _Raw(torch.from_numpy(tr.data), torch.from_numpy(tr.labels),
                torch.from_numpy(te.data), torch.from_numpy(te.labels), str(folder))


def _locate_svhn(root: Path) -> tuple[bool, str]:
    return _locate(root / "svhn", [root / "svhn" / _SVHN_FILES[0]])


# ---------------------------------------------------------------- datasets without a test split
def _carve_test(x: Tensor, y: Tensor, source: str) -> _Raw:
    """Fixed stratified test split: TEST_FRACTION of each class, drawn with seed TEST_SEED."""
    g = torch.Generator().manual_seed(TEST_SEED)
    is_test = torch.zeros(len(y), dtype=torch.bool)
    for c in torch.unique(y):
        idx = torch.nonzero(y == c).flatten()
        is_test[idx[torch.randperm(len(idx), generator=g)][: round(TEST_FRACTION * len(idx))]] = True
    return _Raw(x[~is_test], y[~is_test], x[is_test], y[is_test], source)


def _digits_file() -> Path | None:
    """scikit-learn's bundled digits table, found without importing scikit-learn: its imports take
    about 2 s, reading the table about 0.1 s, and every process that loads digits paid them."""
    spec = importlib.util.find_spec("sklearn")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    path = Path(folders[0]) / "datasets" / "data" / "digits.csv.gz" if folders else None
    return path if path is not None and path.is_file() else None


def _load_digits(root: Path) -> _Raw:
    """1797 x 8 x 8, values 0..16, kept at native size: the rows of ``sklearn.datasets.load_digits``,
    read from its table as that function reads them (64 pixel columns, then the label)."""
    path = _digits_file()
    if path is None:  # laid out otherwise: scikit-learn's own loader
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images, target = torch.as_tensor(bunch.images), torch.as_tensor(bunch.target)
    else:
        import numpy as np

        table = torch.from_numpy(np.loadtxt(path, delimiter=","))  # load_digits' own reader (gzip by name)
        images, target = table[:, :-1].reshape(-1, 8, 8), table[:, -1].long()
    x = images.to(torch.float32).unsqueeze(1)
    return _carve_test(x, target, "sklearn.datasets.load_digits (bundled)")


def _read_folder(name: str, path: Path) -> tuple[Tensor, Tensor, list[str]]:
    from torchvision import datasets, transforms

    resize = transforms.Compose([transforms.Resize(IMAGEFOLDER_SIZE), transforms.PILToTensor()])
    try:
        ds = datasets.ImageFolder(str(path), transform=resize)  # its loader converts to RGB
        x = torch.stack([img for img, _ in ds])
    except FileNotFoundError:  # no class folders, or class folders without images
        raise DatasetUnavailable(
            f"dataset {name!r}: no images in {path} (expected {path}/<class>/<image>.png)") from None
    except OSError as err:
        raise DatasetUnavailable(f"dataset {name!r}: unreadable image in {path} ({_one_line(err)})") from None
    return x, torch.as_tensor(ds.targets), ds.classes


def _load_imagefolder(name: str, path: Path) -> tuple[_Raw, int]:
    """``path/train`` + ``path/test`` if both exist, else one folder with a carved test split."""
    if not path.is_dir():
        raise DatasetUnavailable(f"dataset {name!r}: folder {path} does not exist")
    train, test = path / "train", path / "test"
    if not (train.is_dir() and test.is_dir()):
        x, y, classes = _read_folder(name, path)
        return _carve_test(x, y, str(path)), len(classes)
    (trx, tr_y, classes), (tex, te_y, te_classes) = (_read_folder(name, p) for p in (train, test))
    if classes != te_classes:
        raise DatasetUnavailable(f"dataset {name!r}: {train} and {test} have different class folders")
    return _Raw(trx, tr_y, tex, te_y, str(path)), len(classes)


def _resolve(name: str, root: Path) -> tuple[DatasetInfo, _Raw]:
    if name.startswith(IMAGEFOLDER_PREFIX):
        path = Path(name[len(IMAGEFOLDER_PREFIX):]).expanduser()
        raw, n_classes = _load_imagefolder(name, path)
        info = DatasetInfo(name, n_classes, 3, IMAGEFOLDER_SIZE, f"images under {path}",
                           loader=lambda _root: raw, augment="crop_flip")
        return info, raw
    try:
        info = DATASETS.get(name)
    except UnknownName as err:
        raise UnknownDataset(f"{err} (or {IMAGEFOLDER_PREFIX}PATH)") from None
    return info, info.loader(root)


# ---------------------------------------------------------------- splits and normalization
def load_dataset(name: str, *, seed: int = 0, val_fraction: float = 0.1,
                 train_subset: int | None = None, root: str | Path | None = None) -> DataSplits:
    """Load ``name`` (registered, or ``imagefolder:PATH``) as normalized in-memory splits.

    ``seed`` drives only the train/val carve; ``train_subset`` keeps the first N of the shuffled
    train part (fast CPU protocols); ``root`` overrides :func:`data_root`.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise UserError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if train_subset is not None and train_subset < 1:
        raise UserError(f"train_subset must be a positive number of images, got {train_subset}")
    info, raw = _resolve(name, Path(root).expanduser() if root is not None else data_root())
    perm = torch.randperm(len(raw.train_y), generator=torch.Generator().manual_seed(seed))
    n_val = round(val_fraction * len(perm))
    train_idx, val_idx = perm[n_val:][:train_subset], perm[:n_val]
    train_x = raw.train_x[train_idx].float()
    mean = train_x.mean(dim=(0, 2, 3), keepdim=True)
    std = train_x.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    norm = lambda t: ((t.float() - mean) / std).contiguous()  # noqa: E731
    return DataSplits(
        name=name, num_classes=info.num_classes, in_channels=info.in_channels,
        image_size=info.image_size,
        train_x=norm(train_x), train_y=raw.train_y[train_idx].long(),
        val_x=norm(raw.train_x[val_idx]), val_y=raw.train_y[val_idx].long(),
        test_x=norm(raw.test_x), test_y=raw.test_y.long(),
        augment=info.augment, source=raw.source,
        mean=tuple(mean.flatten().tolist()), std=tuple(std.flatten().tolist()), train_subset=train_subset)


# ---------------------------------------------------------------- augmentation and batching
def _random_crop(x: Tensor, g: torch.Generator) -> Tensor:
    """Shift each image by its own random offset inside a zero border of max(1, H // 8) px."""
    n, c, h, w = x.shape
    pad = max(1, h // 8)
    dy, dx = torch.randint(0, 2 * pad + 1, (2, n), generator=g, device=g.device).to(x.device)
    ar = partial(torch.arange, device=x.device)
    rows = (dy[:, None] + ar(h))[:, None, :, None]  # N,1,H,1
    cols = (dx[:, None] + ar(w))[:, None, None, :]  # N,1,1,W
    padded = F.pad(x, (pad, pad, pad, pad))
    return padded[ar(n)[:, None, None, None], ar(c)[None, :, None, None], rows, cols]


def _random_flip(x: Tensor, g: torch.Generator) -> Tensor:
    flip = (torch.rand(len(x), generator=g, device=g.device) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(3), x)


_AUGMENTS: dict[str, Callable[[Tensor, torch.Generator], Tensor]] = {
    "none": lambda x, g: x,
    "crop": _random_crop,
    "crop_flip": lambda x, g: _random_flip(_random_crop(x, g), g),
}


def _check_augment(kind: str) -> None:
    if kind not in _AUGMENTS:
        raise UserError(f"unknown augmentation {kind!r}; choose one of: {', '.join(_AUGMENTS)}")


def augment_batch(x: Tensor, kind: str, generator: torch.Generator) -> Tensor:
    """Standard augmentation of an NCHW batch, vectorized, drawing only from ``generator``.

    "none": ``x`` itself; "crop": random shift within a zero padding of max(1, H // 8) px;
    "crop_flip": crop, then a horizontal flip with p = 0.5. Same generator state => same output.
    """
    _check_augment(kind)
    return _AUGMENTS[kind](x, generator) if len(x) else x


def batches(x: Tensor, y: Tensor, batch_size: int, *, shuffle: bool,
            generator: torch.Generator | None = None,
            augment: str = "none") -> Iterator[tuple[Tensor, Tensor]]:
    """Minibatches covering every sample exactly once (last partial batch kept).

    Shuffling and augmentation draw only from ``generator``, which they therefore require.
    Batches are gathered on ``x``'s device: with ``x``, ``y`` and ``generator`` on one GPU nothing
    is copied to or from the host (``fit`` does that); a CPU generator with GPU tensors costs one
    copy of the order per epoch and, with augmentation, of the offsets per batch.
    """
    _check_augment(augment)
    if batch_size < 1 or len(x) != len(y):
        raise ValueError(f"bad batch_size {batch_size} or len(x) {len(x)} != len(y) {len(y)}")
    if (shuffle or augment != "none") and generator is None:
        raise ValueError("batches(shuffle=True or augment != 'none') needs an explicit torch.Generator")
    return _iter_batches(x, y, batch_size, shuffle, generator, augment)


def _iter_batches(x: Tensor, y: Tensor, batch_size: int, shuffle: bool,
                  g: torch.Generator | None, augment: str) -> Iterator[tuple[Tensor, Tensor]]:
    order = (torch.randperm(len(x), generator=g, device=g.device).to(x.device)
             if shuffle and g is not None else torch.arange(len(x), device=x.device))
    for idx in order.split(batch_size):
        yield (augment_batch(x[idx], augment, g) if g is not None else x[idx]), y[idx]


# ---------------------------------------------------------------- registry and status
for _info in (
    DatasetInfo("digits", 10, 1, (8, 8), "scikit-learn 8x8 handwritten digits, 1797 images "
                "(bundled; fixed 20 % test split)", _load_digits,
                locate=lambda root: (True, "bundled with scikit-learn")),
    DatasetInfo("fashion-mnist", 10, 1, (28, 28), "Fashion-MNIST clothing, 60k/10k (torchvision; "
                "offline from Debian's dataset-fashion-mnist)",
                partial(_load_mnist_like, "fashion-mnist", "FashionMNIST"), "crop",
                partial(_locate_mnist_like, "FashionMNIST")),
    DatasetInfo("mnist", 10, 1, (28, 28), "MNIST handwritten digits, 60k/10k (torchvision)",
                partial(_load_mnist_like, "mnist", "MNIST"), "crop",
                partial(_locate_mnist_like, "MNIST")),
    DatasetInfo("cifar10", 10, 3, (32, 32), "CIFAR-10, 50k/10k (torchvision)",
                partial(_load_cifar, "cifar10", "CIFAR10"), "crop_flip",
                partial(_locate_cifar, "CIFAR10")),
    DatasetInfo("cifar100", 100, 3, (32, 32), "CIFAR-100, 50k/10k (torchvision)",
                partial(_load_cifar, "cifar100", "CIFAR100"), "crop_flip",
                partial(_locate_cifar, "CIFAR100")),
    DatasetInfo("svhn", 10, 3, (32, 32), "SVHN house numbers, 73k/26k (torchvision)",
                partial(_load_svhn, "svhn"), "crop", _locate_svhn),
):
    DATASETS.add(_info.name, _info)


def dataset_status() -> list[dict]:
    """One row per registered dataset: whether it loads offline now and from where.

    ``imagefolder:PATH`` is not a registry entry; any folder of ``<class>/<image>`` files loads.
    """
    rows = []
    for name in DATASETS:
        info = DATASETS.get(name)
        available, where = info.locate(data_root())
        c, (h, w) = info.in_channels, info.image_size
        rows.append({"name": name, "classes": info.num_classes, "input_shape": f"{c}x{h}x{w}",
                     "available_offline": available, "where": where,
                     "description": info.description})
    return rows
