import pytest
import torch
from _dataset_helpers import TINY_FIT, TINY_GRAY

from inrnet.datasets import DATASETS, default_root, get_dataset, list_datasets
from inrnet.datasets.parts import build_parts
from inrnet.inr import INRDataset


def test_names_and_splits():
    assert list_datasets() == {"fashion_mnist": ("train", "test", "test_fourier"),
                               "fashion_mnist_default": ("train", "test", "test_fourier"),
                               "imagenet_big12": ("train", "test", "test_fourier"),
                               "cityscapes": ("train", "train_fine", "test", "test_coarse"),
                               "fashion_mnist_scenes": ("train", "test")}
    with pytest.raises(ValueError, match="valid: .*'cityscapes'.*'fashion_mnist'"):
        get_dataset("mnist", "train")
    with pytest.raises(ValueError, match=r"valid: \['train', 'test', 'test_fourier'\]"):
        get_dataset("fashion_mnist", "val")


def test_default_root(monkeypatch, tmp_path):
    monkeypatch.setenv("INRNET_DATA", str(tmp_path))
    assert default_root("cityscapes") == tmp_path / "cityscapes"
    with pytest.raises(FileNotFoundError, match="fashion_mnist/build.py --split test --out"):
        get_dataset("fashion_mnist", "test")


def test_unfinished_and_finished_builds(tmp_path):
    images = torch.rand(5, 1, 6, 6)
    source = lambda a, b: (images[a:b], torch.arange(a, b))  # noqa: E731
    build_parts(tmp_path / "test", source, TINY_GRAY, count=5, chunk_size=2, fit_kwargs=TINY_FIT, stop=2,
                progress=False)
    with pytest.raises(FileNotFoundError, match=r"unfinished \(1 of 3 chunks\)"):
        get_dataset("fashion_mnist", "test", root=tmp_path)
    build_parts(tmp_path / "test", source, TINY_GRAY, count=5, chunk_size=2, fit_kwargs=TINY_FIT, progress=False)
    ds = get_dataset("fashion_mnist", "test", root=tmp_path)
    assert isinstance(ds, INRDataset) and ds.labels.tolist() == [0, 1, 2, 3, 4]
    assert all(info.build for info in DATASETS.values())
