import gzip
import os

import numpy as np
import pytest
import torch

from inrnet.datasets import fashion_mnist as fm
from inrnet.datasets.idx import read_idx

from _dataset_helpers import idx_bytes, write_idx


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_round_trip(tmp_path, compress):
    array = np.arange(2 * 3 * 5).reshape(2, 3, 5) % 256
    out = read_idx(write_idx(tmp_path / "x.idx", array, compress))
    assert out.dtype == torch.uint8 and out.shape == (2, 3, 5)
    assert torch.equal(out, torch.from_numpy(array.astype(np.uint8)))


def test_read_idx_int32_big_endian(tmp_path):
    values = np.array([1, -2, 70000], dtype=">i4")
    path = tmp_path / "x.idx"
    path.write_bytes(bytes([0, 0, 0x0C, 1]) + (3).to_bytes(4, "big") + values.tobytes())
    assert read_idx(path).tolist() == [1, -2, 70000]


@pytest.mark.parametrize("mutate, message", [
    (lambda b: b[:-5], "truncated"),
    (lambda b: b + b"\x00", "longer than its header"),
    (lambda b: b"\x01" + b[1:], "bad magic"),
    (lambda b: b[:2] + b"\x42" + b[3:], "unknown type code"),
    (lambda b: b[:6], "truncated"),
    (lambda b: b"", "bad magic"),
])
def test_read_idx_bad_files(tmp_path, mutate, message):
    path = tmp_path / "bad.idx"
    path.write_bytes(mutate(idx_bytes(np.zeros((4, 3, 3)))))
    with pytest.raises(ValueError, match=message):
        read_idx(path)


def test_read_idx_corrupt_gzip_and_missing(tmp_path):
    path = tmp_path / "bad.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((50, 28, 28))))[:-40])
    with pytest.raises(ValueError, match="corrupt gzip"):
        read_idx(path)
    with pytest.raises(FileNotFoundError, match="nothere"):
        read_idx(tmp_path / "nothere.gz")


def test_load_fashion_mnist_from_root(fmnist_root):
    images, labels = fm.load_fashion_mnist_images("test", fmnist_root)
    assert images.shape == (20, 28, 28) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64 and labels.tolist() == [i % 10 for i in range(20)]
    with pytest.raises(ValueError, match="splits"):
        fm.load_fashion_mnist_images("val", fmnist_root)


def test_load_fashion_mnist_env_var_and_torchvision_layout(fmnist_root, monkeypatch, tmp_path):
    raw = tmp_path / "tv" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for f in fmnist_root.iterdir():
        (raw / f.name.removesuffix(".gz")).write_bytes(gzip.decompress(f.read_bytes()))
    monkeypatch.setenv(fm.ENV_VAR, str(tmp_path / "tv"))
    images, _ = fm.load_fashion_mnist_images("train")
    assert images.shape == (30, 28, 28)


def test_load_fashion_mnist_missing_and_mismatched(tmp_path, fmnist_root):
    with pytest.raises(FileNotFoundError, match="not found in"):
        fm.load_fashion_mnist_images("train", tmp_path / "empty")
    write_idx(fmnist_root / "t10k-labels-idx1-ubyte.gz", np.arange(19) % 10)
    with pytest.raises(ValueError, match="holds labels"):
        fm.load_fashion_mnist_images("test", fmnist_root)
    write_idx(fmnist_root / "t10k-labels-idx1-ubyte.gz", np.full(20, 10))
    with pytest.raises(ValueError, match="10 classes"):
        fm.load_fashion_mnist_images("test", fmnist_root)


@pytest.mark.skipif(not os.path.isdir(fm.DEBIAN_ROOT), reason="Fashion-MNIST (dataset-fashion-mnist) not installed")
def test_real_fashion_mnist_test_split():
    images, labels = fm.load_fashion_mnist_images("test", fm.DEBIAN_ROOT)
    assert images.shape == (10000, 28, 28)
    assert torch.bincount(labels).tolist() == [1000] * 10
