import gzip
import hashlib
import io
import pickle
import tarfile

import numpy as np
import pytest
import torch

from ffhw import data
from ffhw.errors import DataError


def write_idx(path, array: np.ndarray, corrupt_length: bool = False):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = array.astype(np.uint8).tobytes()
    if corrupt_length:
        payload = payload[:-7]
    with gzip.open(path, "wb") as fh:
        fh.write(header + payload)


def md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def fake_mnist(root, monkeypatch, n_train=120, n_test=40):
    """Small files in the official IDX format; the checksum table is pointed at them."""
    folder = root / "MNIST" / "raw"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    files = {"train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, 28, 28)),
             "train-labels-idx1-ubyte.gz": np.arange(n_train) % 10,
             "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (n_test, 28, 28)),
             "t10k-labels-idx1-ubyte.gz": np.arange(n_test) % 10}
    table = {}
    for name, array in files.items():
        write_idx(folder / name, array)
        table[name] = data.RemoteFile(name, md5(folder / name), ())
    monkeypatch.setattr(data, "MNIST_FILES", table)
    return folder, files


def test_idx_roundtrip_and_split(tmp_path, monkeypatch):
    _, files = fake_mnist(tmp_path, monkeypatch)
    d = data.load("mnist", tmp_path, val_size=20)
    assert d.train.x.shape == (100, 1, 28, 28) and d.train.x.dtype == torch.uint8
    assert len(d.val) == 20 and len(d.test) == 40
    all_train = torch.cat([d.train.x, d.val.x]).reshape(120, -1)
    assert sorted(map(bytes, all_train.numpy())) == sorted(map(bytes, files["train-images-idx3-ubyte.gz"].astype(np.uint8).reshape(120, -1)))
    again = data.load("mnist", tmp_path, val_size=20)
    assert torch.equal(again.val.x, d.val.x)  # the validation split is deterministic
    assert d.train.images(slice(0, 2)).max() <= 1.0


def test_truncated_idx_is_a_clear_error(tmp_path, monkeypatch):
    folder, files = fake_mnist(tmp_path, monkeypatch)
    write_idx(folder / "t10k-images-idx3-ubyte.gz", files["t10k-images-idx3-ubyte.gz"], corrupt_length=True)
    name = "t10k-images-idx3-ubyte.gz"
    monkeypatch.setitem(data.MNIST_FILES, name, data.RemoteFile(name, md5(folder / name), ()))
    with pytest.raises(DataError, match="truncated"):
        data.load("mnist", tmp_path, val_size=20)


def test_corrupt_gzip_is_a_clear_error(tmp_path, monkeypatch):
    folder, _ = fake_mnist(tmp_path, monkeypatch)
    name = "t10k-labels-idx1-ubyte.gz"
    (folder / name).write_bytes(b"\x1f\x8b\x08garbage")
    monkeypatch.setitem(data.MNIST_FILES, name, data.RemoteFile(name, md5(folder / name), ()))
    with pytest.raises(DataError, match="not a readable gzip"):
        data.load("mnist", tmp_path, val_size=20)


def test_checksum_mismatch_names_file_and_expected_md5(tmp_path, monkeypatch):
    folder, _ = fake_mnist(tmp_path, monkeypatch)
    name = "train-labels-idx1-ubyte.gz"
    monkeypatch.setitem(data.MNIST_FILES, name, data.RemoteFile(name, "0" * 32, ()))
    with pytest.raises(DataError) as err:
        data.load("mnist", tmp_path, val_size=20)
    msg = str(err.value)
    assert name in msg and "0" * 32 in msg and "\n" not in msg


def test_missing_file_offline_says_how_to_supply_it(tmp_path):
    with pytest.raises(DataError) as err:
        data.fetch(tmp_path, data.RemoteFile("x.gz", "ab" * 16, (f"file://{tmp_path}/nowhere/x.gz",)))
    msg = str(err.value)
    assert "x.gz" in msg and "ab" * 16 in msg and "--data-dir" in msg and "\n" not in msg


def test_download_is_verified(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.bin").write_bytes(b"payload")
    good = data.RemoteFile("f.bin", hashlib.md5(b"payload").hexdigest(), (f"file://{src}/f.bin",))
    assert data.fetch(tmp_path / "dl", good).read_bytes() == b"payload"
    bad = data.RemoteFile("g.bin", "1" * 32, (f"file://{src}/f.bin",))
    with pytest.raises(DataError, match="checksum mismatch"):
        data.fetch(tmp_path / "dl2", bad)
    assert not (tmp_path / "dl2" / "g.bin").exists()


def test_cifar10_from_official_format_archive(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    batches, table = {}, {}
    for name in data.CIFAR10_BATCHES:
        n = 30 if name != "test_batch" else 20
        entry = {b"batch_label": name.encode(), b"labels": list(rng.integers(0, 10, n)),
                 b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"filenames": [b"x.png"] * n}
        batches[name] = pickle.dumps(entry)
        table[name] = hashlib.md5(batches[name]).hexdigest()
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, blob in batches.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    monkeypatch.setattr(data, "CIFAR10_BATCHES", table)
    monkeypatch.setattr(data, "CIFAR10_ARCHIVE", data.RemoteFile(archive.name, md5(archive), ()))
    d = data.load("cifar10", tmp_path, val_size=50)
    assert d.image_shape == (3, 32, 32) and len(d.train) == 100 and len(d.test) == 20
    first = pickle.loads(batches["test_batch"])
    assert torch.equal(d.test.x[0].reshape(-1), torch.from_numpy(first[b"data"][0]))
    # a damaged extracted batch is refused with the expected checksum named
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"damaged")
    with pytest.raises(DataError, match=table["data_batch_3"]):
        data.load("cifar10", tmp_path, val_size=50)


def test_svhn_from_official_format_mat(tmp_path, monkeypatch):
    from scipy.io import savemat
    rng = np.random.default_rng(2)
    folder = tmp_path / "SVHN"
    folder.mkdir()
    table = {}
    for name, n in (("train_32x32.mat", 40), ("test_32x32.mat", 10)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = (np.arange(n) % 10 + 1).reshape(n, 1)  # SVHN stores digit 0 as label 10
        savemat(folder / name, {"X": x, "y": y})
        table[name] = data.RemoteFile(name, md5(folder / name), ())
    monkeypatch.setattr(data, "SVHN_FILES", table)
    d = data.load("svhn", tmp_path, val_size=10)
    assert d.image_shape == (3, 32, 32) and len(d.train) == 30
    assert set(d.test.y.tolist()) == set(range(10)) and d.test.y[9] == 0


def test_unknown_dataset():
    with pytest.raises(DataError, match="unknown dataset"):
        data.load("imagenet")


def test_data_root_order(monkeypatch, tmp_path):
    monkeypatch.setenv("FFHW_DATA", str(tmp_path / "env"))
    assert data.data_root(tmp_path / "flag") == tmp_path / "flag"
    assert data.data_root(None) == tmp_path / "env"
    monkeypatch.delenv("FFHW_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert data.data_root(None) == tmp_path / "cache" / "ffhw" / "data"


def test_real_mnist(mnist_root):
    d = data.load("mnist", mnist_root, val_size=10000)
    assert (len(d.train), len(d.val), len(d.test)) == (50000, 10000, 10000)
    counts = torch.bincount(d.test.y, minlength=10).tolist()
    assert counts == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
