"""Helpers of the dataset tests: hand-written IDX files and tiny INR families."""

from __future__ import annotations

import gzip
import importlib.util
import struct
from pathlib import Path

import numpy as np

from inrnet.inr import SirenFamily

#: A SIREN small enough to fit in milliseconds.
TINY_GRAY = SirenFamily(2, 1, width=8, depth=2, omega_0=30.0, first_omega_0=30.0)
TINY_RGB = SirenFamily(2, 3, width=8, depth=2, omega_0=30.0, first_omega_0=30.0)
TINY_FIT = {"steps": 2, "lr": 1e-3, "batch_size": 4}


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file's content, written by hand (uint8 arrays)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


SCRIPTS = Path(__file__).resolve().parents[2] / "datasets"


def load_script(relative: str):
    """The ``main`` function of a build script under ``datasets/``."""
    spec = importlib.util.spec_from_file_location(relative.replace("/", "_")[:-3], SCRIPTS / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main
