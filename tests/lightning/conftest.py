"""Tiny INR datasets for the Lightning tests: pixel arrays as INRs, in memory and on disk."""

import pytest
import torch

from inrnet.inr import PixelINR, save_inrs
from inrnet.lightning import InMemoryINRDataset


def tiny_images(n: int, channels: int = 1, size: int = 8, classes: int = 4, seed: int = 0):
    """Images Tensor[n, C, size, size] whose brightness tells their class (learnable), labels Tensor[n]."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    images = 0.2 * torch.rand(n, channels, size, size, generator=g) + 0.8 * labels.view(-1, 1, 1, 1) / classes
    return images, labels


@pytest.fixture
def memory_data():
    """{"train": 16 items, "test": 8 items}, 1 channel, 8x8, 4 classes, as linear PixelINRs."""
    x, y = tiny_images(24)
    return {"train": InMemoryINRDataset.from_images(x[:16], y[:16]),
            "test": InMemoryINRDataset.from_images(x[16:], y[16:])}


@pytest.fixture
def disk_data(tmp_path):
    """A directory with train/ (16 items) and test/ (8 items) stored INR datasets."""
    x, y = tiny_images(24)
    save_inrs(tmp_path / "data" / "train", PixelINR(x[:16], "linear"), y[:16])
    save_inrs(tmp_path / "data" / "test", PixelINR(x[16:], "linear"), y[16:])
    return tmp_path / "data"
