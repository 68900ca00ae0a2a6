"""The IDX file format (MNIST, Fashion-MNIST): a reader with clear errors.

An IDX file is a 4-byte magic ``0x00 0x00 <type> <ndim>``, ``ndim`` big-endian uint32
dimension sizes, then the data in C order, big-endian. Files may be gzip-compressed
(detected by content, not by name).
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["read_idx", "IDX_TYPES"]

IDX_TYPES = {
    0x08: (np.dtype(">u1"), torch.uint8),
    0x09: (np.dtype(">i1"), torch.int8),
    0x0B: (np.dtype(">i2"), torch.int16),
    0x0C: (np.dtype(">i4"), torch.int32),
    0x0D: (np.dtype(">f4"), torch.float32),
    0x0E: (np.dtype(">f8"), torch.float64),
}
"""IDX type code -> (numpy big-endian dtype, torch dtype)."""


def _raw_bytes(path: Path) -> bytes:
    """The (decompressed) content of ``path``."""
    data = path.read_bytes()
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        return gzip.decompress(data)
    except (EOFError, OSError, zlib.error) as e:
        raise ValueError(f"IDX file {str(path)!r} is a truncated or corrupt gzip file ({e}); "
                         "download it again") from e


def read_idx(path: str | os.PathLike) -> Tensor:
    """Read an IDX file (raw or gzip-compressed).

    Args:
        path: the file, e.g. ``t10k-images-idx3-ubyte.gz``.

    Returns:
        Tensor[*dims] of the file's type (uint8 for (Fashion-)MNIST images and labels).

    Raises:
        FileNotFoundError: ``path`` does not exist (naming it).
        ValueError: a bad magic number or type code, or fewer or more data bytes than
            the header's dimensions call for (a truncated or corrupt file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file {str(path)!r} does not exist")
    data = _raw_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{str(path)!r} is not an IDX file: bad magic number {data[:4].hex() or '(empty)'}")
    code, ndim = data[2], data[3]
    if code not in IDX_TYPES:
        raise ValueError(f"IDX file {str(path)!r} has unknown type code 0x{code:02x}; "
                         f"known: {[hex(c) for c in IDX_TYPES]}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"IDX file {str(path)!r} is truncated: {len(data)} bytes, its header alone needs {header}")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    np_dtype, torch_dtype = IDX_TYPES[code]
    expected = header + int(np.prod(dims, dtype=np.int64)) * np_dtype.itemsize
    if len(data) != expected:
        kind = "truncated" if len(data) < expected else "longer than its header says (corrupt)"
        raise ValueError(f"IDX file {str(path)!r} is {kind}: {len(data)} bytes, dims {dims} of "
                         f"{np_dtype.name} need {expected}")
    array = np.frombuffer(data, dtype=np_dtype, offset=header).reshape(dims)  # (*dims)
    return torch.from_numpy(array.astype(np_dtype.newbyteorder("="), copy=True))
