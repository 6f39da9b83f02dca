"""Data sets read from their official raw files, in torchvision's directory layout.

    <root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz
    <root>/FashionMNIST/raw/ (same names)
    <root>/cifar-10-batches-py/{data_batch_1..5,test_batch}   (or <root>/cifar-10-python.tar.gz)
    <root>/SVHN/{train,test}_32x32.mat                          (or directly under <root>, as torchvision)

The root is `--data-dir`, else $FFHW_DATA, else a per-user cache directory. Missing files are downloaded
from the official addresses and checked against the official MD5; anything that cannot be had or
fails its check raises a one-line `DataError` that names the file, the checksum and what to do.
A whole split is one uint8 tensor on the chosen device; images stay uint8 until a batch is drawn.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import shutil
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .errors import DataError

ENV_VAR = "FFHW_DATA"
VAL_SPLIT_SEED = 20251  # fixed, independent of the run seed: every run validates on the same images


@dataclass(frozen=True)
class RemoteFile:
    name: str
    md5: str
    urls: tuple[str, ...]


def _mnist_family(base_urls: tuple[str, ...], md5s: dict[str, str]) -> dict[str, RemoteFile]:
    return {name: RemoteFile(name, md5, tuple(u + name for u in base_urls)) for name, md5 in md5s.items()}


MNIST_FILES = _mnist_family(
    ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
    {"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
     "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
     "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
     "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"})
FASHION_FILES = _mnist_family(
    ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    {"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
     "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
     "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
     "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"})
CIFAR10_ARCHIVE = RemoteFile("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
                             ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",))
CIFAR10_BATCHES = {"data_batch_1": "c99cafc152244af753f735de768cd75f",
                   "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
                   "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
                   "data_batch_4": "634d18415352ddfa80567beed471001a",
                   "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
                   "test_batch": "40351d587109b95175f43aff81a1287e"}
SVHN_FILES = {name: RemoteFile(name, md5, ("http://ufldl.stanford.edu/housenumbers/" + name,))
              for name, md5 in {"train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373",
                                "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3"}.items()}


def data_root(explicit: str | os.PathLike | None = None) -> Path:
    """--data-dir, else $FFHW_DATA, else the per-user cache (XDG_CACHE_HOME or ~/.cache)/ffhw/data."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "ffhw" / "data"


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(folder: Path, remote: RemoteFile) -> Path:
    """Return the verified local copy of `remote` in `folder`, downloading it if missing."""
    path = folder / remote.name
    how = (f"place the official {remote.name} (md5 {remote.md5}) in {folder}, "
           f"or point --data-dir / ${ENV_VAR} at a directory that has it")
    if not path.exists():
        errors = []
        for url in remote.urls:
            try:
                folder.mkdir(parents=True, exist_ok=True)
                partial = path.with_name(path.name + ".part")
                with urllib.request.urlopen(url, timeout=30) as response, open(partial, "wb") as out:
                    shutil.copyfileobj(response, out)
                if md5sum(partial) != remote.md5:
                    partial.unlink()
                    errors.append(f"{url}: checksum mismatch")
                    continue
                partial.replace(path)
                break
            except OSError as exc:
                errors.append(f"{url}: {getattr(exc, 'reason', None) or exc}")
        else:
            raise DataError(f"{remote.name} is missing and could not be downloaded ({'; '.join(errors)}); {how}")
    actual = md5sum(path)
    if actual != remote.md5:
        raise DataError(f"{path} has md5 {actual}, expected {remote.md5} (corrupt or truncated?); {how}")
    return path


def read_idx(path: Path) -> np.ndarray:
    """Read a gzip-compressed IDX file (magic 0x0000 08 NDIM, big-endian uint32 dims, uint8 data)."""
    try:
        with gzip.open(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable gzip file ({exc}); replace it with the official file") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path}: not a uint8 IDX file (bad magic); replace it with the official file")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header; replace it with the official file")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims)) if dims else 0
    if len(raw) - header != expected:
        raise DataError(f"{path}: IDX data has {len(raw) - header} bytes, header says {expected} "
                        f"(truncated?); replace it with the official file")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def _load_mnist_family(folder: Path, files: dict[str, RemoteFile]):
    def pair(prefix):
        images = read_idx(fetch(folder, files[f"{prefix}-images-idx3-ubyte.gz"]))
        labels = read_idx(fetch(folder, files[f"{prefix}-labels-idx1-ubyte.gz"]))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(f"{folder}: {prefix} images {images.shape} and labels {labels.shape} do not match")
        return images[:, None], labels  # add the channel axis: [N, 1, 28, 28]
    return pair("train"), pair("t10k")


def load_mnist(root: Path):
    return _load_mnist_family(root / "MNIST" / "raw", MNIST_FILES)


def load_fashion_mnist(root: Path):
    return _load_mnist_family(root / "FashionMNIST" / "raw", FASHION_FILES)


def load_cifar10(root: Path):
    folder = root / "cifar-10-batches-py"
    if not all((folder / name).exists() for name in CIFAR10_BATCHES):
        archive = fetch(root, CIFAR10_ARCHIVE)
        try:
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(root, filter="data")
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DataError(f"{archive}: cannot be extracted ({exc}); replace it with the official archive") from None

    def batch(name):
        path = folder / name
        if not path.exists():
            raise DataError(f"{path} is missing after extraction; replace {CIFAR10_ARCHIVE.name} with the official archive")
        actual = md5sum(path)
        if actual != CIFAR10_BATCHES[name]:
            raise DataError(f"{path} has md5 {actual}, expected {CIFAR10_BATCHES[name]}; "
                            f"delete {folder} and supply the official {CIFAR10_ARCHIVE.name} (md5 {CIFAR10_ARCHIVE.md5})")
        try:
            with open(path, "rb") as fh:
                entry = pickle.load(fh, encoding="bytes")
            data = np.asarray(entry[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            labels = np.asarray(entry[b"labels"], dtype=np.int64)
        except Exception as exc:  # a damaged pickle can raise almost anything
            raise DataError(f"{path}: not a CIFAR-10 batch ({type(exc).__name__}: {exc})") from None
        return data, labels

    train = [batch(f"data_batch_{i}") for i in range(1, 6)]
    test = batch("test_batch")
    return (np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train])), test


def load_svhn(root: Path):
    from scipy.io import loadmat

    def split(name):
        folder = root / "SVHN"
        if not (folder / name).exists() and (root / name).exists():
            folder = root  # torchvision keeps SVHN directly under root
        path = fetch(folder, SVHN_FILES[name])
        try:
            mat = loadmat(path)
            images = np.ascontiguousarray(np.transpose(mat["X"], (3, 2, 0, 1)), dtype=np.uint8)  # HWCN -> NCHW
            labels = mat["y"].astype(np.int64).reshape(-1) % 10  # the digit 0 is stored as label 10
        except Exception as exc:
            raise DataError(f"{path}: not an SVHN .mat file ({type(exc).__name__}: {exc})") from None
        return images, labels

    return split("train_32x32.mat"), split("test_32x32.mat")


@dataclass(frozen=True)
class DatasetInfo:
    loader: Callable
    image_shape: tuple[int, int, int]  # [C, H, W] of one image, known without loading the files
    num_classes: int = 10


DATASETS = {"mnist": DatasetInfo(load_mnist, (1, 28, 28)), "fashion-mnist": DatasetInfo(load_fashion_mnist, (1, 28, 28)),
            "cifar10": DatasetInfo(load_cifar10, (3, 32, 32)), "svhn": DatasetInfo(load_svhn, (3, 32, 32))}
ALIASES = {"fmnist": "fashion-mnist", "fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist",
           "cifar-10": "cifar10", "cifar": "cifar10"}


@dataclass
class Split:
    x: torch.Tensor  # uint8 [N, C, H, W] on the device
    y: torch.Tensor  # int64 [N] on the device

    def __len__(self) -> int:
        return len(self.y)

    def images(self, index: torch.Tensor | slice) -> torch.Tensor:
        """Float images in [0, 1] for the given indices (any leading index shape)."""
        return self.x[index].float().div_(255.0)


@dataclass
class Data:
    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])


def canonical_name(name: str) -> str:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return key


def dataset_info(name: str) -> DatasetInfo:
    return DATASETS[canonical_name(name)]


def load(name: str, root: str | os.PathLike | None = None, device: str | torch.device = "cpu",
         val_size: int = 10000, train_subset: int = 0, test_subset: int = 0) -> Data:
    """Load a data set, carve a deterministic validation split from its training set, move it to `device`."""
    key = canonical_name(name)
    info = DATASETS[key]
    (train_x, train_y), (test_x, test_y) = info.loader(data_root(root))
    n = len(train_y)
    if not 0 <= val_size < n:
        raise DataError(f"val_size = {val_size} must be between 0 and {n - 1} for {key}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(VAL_SPLIT_SEED))
    val_idx, train_idx = perm[:val_size].sort().values, perm[val_size:].sort().values
    if train_subset:
        train_idx = train_idx[:train_subset]
    tx, ty = torch.from_numpy(np.ascontiguousarray(train_x)), torch.from_numpy(train_y.astype(np.int64))

    def split(x, y):
        return Split(x.to(device), y.to(device))

    test_x, test_y = (test_x[:test_subset], test_y[:test_subset]) if test_subset else (test_x, test_y)
    return Data(key, split(tx[train_idx], ty[train_idx]), split(tx[val_idx], ty[val_idx]),
                split(torch.from_numpy(np.ascontiguousarray(test_x)), torch.from_numpy(test_y.astype(np.int64))),
                info.num_classes)
