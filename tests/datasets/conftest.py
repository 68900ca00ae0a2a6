"""Fixtures of the dataset tests: a tiny fake Fashion-MNIST folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _dataset_helpers import write_idx


@pytest.fixture
def fmnist_root(tmp_path) -> Path:
    """A fake Fashion-MNIST folder: 30 train and 20 test items, labels cycling 0..9."""
    rng = np.random.default_rng(0)
    root = tmp_path / "fmnist"
    root.mkdir()
    for prefix, n in (("train", 30), ("t10k", 20)):
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, size=(n, 28, 28)))
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return root
