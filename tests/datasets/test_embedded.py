import os

import pytest
import torch
from _dataset_helpers import TINY_GRAY

from inrnet.datasets import default_images, fashion_mnist as fm, get_dataset
from inrnet.datasets.embedded import DEFAULT_PATH, EmbeddedDefault, write_default
from inrnet.inr import FourierFamily

FOURIER = FourierFamily(2, 1, features=4, sigma=2.0, width=4, depth=2)


def _write(path, n_train=6, n_test=4):
    splits, images = {}, {}
    for split, family, index in (("train", TINY_GRAY, torch.arange(n_train) * 3),
                                 ("test", TINY_GRAY, torch.arange(n_test) * 3), ("test_fourier", FOURIER, [9, 3])):
        n = len(index)
        splits[split] = {"family": family, "params": family.init_params(n), "labels": torch.as_tensor(index) % 10,
                         "index": torch.as_tensor(index), "quality": {"psnr_grid": torch.full((n,), 40.0)}}
    for split, n in (("train", n_train), ("test", n_test)):
        images[split] = torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8)
    write_default(path, splits, images, {"source": "test"})
    return splits, images


def test_write_and_read_back(tmp_path):
    splits, images = _write(tmp_path / "d.safetensors")
    default = EmbeddedDefault(tmp_path / "d.safetensors")
    for name, s in splits.items():
        ds = default.split(name)
        assert ds.family == s["family"] and len(ds) == len(s["labels"])
        inrs, labels = ds.batch([1, 0])
        assert inrs.dtype == torch.float32 and torch.equal(labels, s["labels"][[1, 0]])
        for k, v in s["params"].items():  # stored as float16, read as float32
            assert torch.equal(inrs.params[k], v[[1, 0]].half().float())
        params, label = ds[1]
        assert label == s["labels"][1] and torch.equal(params["weight0"], s["params"]["weight0"][1].half().float())
        assert torch.equal(ds.quality["psnr_grid"], s["quality"]["psnr_grid"])
    assert torch.equal(default.images("test_fourier")[0], images["test"][[3, 1]])
    assert default.images("test_fourier")[1].tolist() == [9, 3]
    assert torch.equal(default.images("train")[1], torch.arange(6) * 3 % 10)
    with pytest.raises(ValueError, match="valid"):
        default.split("val")
    with pytest.raises(IndexError):
        default.split("train").batch([6])


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="build_default"):
        EmbeddedDefault(tmp_path / "none.safetensors")
    path = tmp_path / "d.safetensors"
    _write(path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="corrupt"):
        EmbeddedDefault(path)


@pytest.mark.skipif(not DEFAULT_PATH.is_file(), reason="the embedded default is not built")
def test_shipped_default():
    sizes = {"train": 4000, "test": 1000, "test_fourier": 500}
    for split, n in sizes.items():
        ds = get_dataset("fashion_mnist_default", split, root="/ignored")
        assert len(ds) == n and torch.bincount(ds.labels).tolist() == [n // 10] * 10
        assert float(ds.quality["psnr_grid"].median()) > 30.0
        images, labels = default_images(split)
        assert torch.equal(labels, ds.labels) and images.shape == (n, 28, 28)
    assert DEFAULT_PATH.stat().st_size <= 20_000_000
    if os.path.isdir(fm.DEBIAN_ROOT):
        full, _ = fm.load_fashion_mnist_images("test")
        index = get_dataset("fashion_mnist_default", "test").index
        assert torch.equal(default_images("test")[0], full[index])
