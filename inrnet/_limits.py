"""Size checks run before a point set is allocated: a grid shape, and whether ``n`` points fit in memory.

The bottom of inrnet (it imports no other inrnet module), so that both the generators of
`inrnet.sampling.points` (which re-exports `check_count` and `total_memory`) and
[`PointSet.grid`][inrnet.field.PointSet.grid] refuse absurd sizes with the same message.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["check_shape", "check_count", "total_memory"]


def check_shape(shape: Sequence[int] | int) -> tuple[int, ...]:
    """``shape`` as a tuple of ints (an int is a 1-d shape); ``ValueError`` unless they are positive."""
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    if len(shape) == 0 or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1
                              for s in shape):
        raise ValueError(f"grid shape must be a non-empty sequence of positive integers, got {shape!r}")
    return tuple(int(s) for s in shape)


def total_memory(device=None) -> tuple[int | None, str]:
    """The total memory of ``device`` in bytes (``None`` where the platform does not say) and its name.

    A CUDA device reports its own memory; every other device (CPU, MPS, meta) the
    machine's physical memory.
    """
    device = torch.device("cpu" if device is None else device)
    if device.type == "cuda":
        index = torch.cuda.current_device() if device.index is None else device.index
        return torch.cuda.get_device_properties(index).total_memory, f"cuda:{index}"
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "this machine"
    except (AttributeError, ValueError, OSError):
        return None, "this machine"


def _bytes(nbytes: int) -> str:
    """``"2,097,152 bytes (2.0 MiB)"``."""
    power = min(max((nbytes.bit_length() - 1) // 10, 1), 5)
    return f"{nbytes:,} bytes ({nbytes / 2 ** (10 * power):,.1f} {'KMGTP'[power - 1]}iB)"


def check_count(n: int, dim: int, *, dtype: torch.dtype = torch.float32, device=None) -> None:
    """Raise ``ValueError`` unless ``n >= 1`` points in ``dim >= 1`` dimensions fit in memory.

    Checked before anything is allocated: the ``float64`` coordinates ``Tensor[n, dim]``
    every generator of `inrnet.sampling.points` computes on the CPU must fit in the machine's physical memory,
    and the ``dtype`` result in ``device``'s total memory.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"number of points must be a positive integer, got {n!r}")
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"dimension must be a positive integer, got {dim!r}")
    needs = [(int(n) * int(dim) * 8, "float64", None)]
    if device is not None and torch.device(device).type == "cuda":
        needs.append((int(n) * int(dim) * torch.empty((), dtype=dtype).element_size(), str(dtype), device))
    for nbytes, kind, where in needs:
        limit, name = total_memory(where)
        if limit is not None and nbytes > limit:
            raise ValueError(f"{n:,} points in {dim} dimensions need {_bytes(nbytes)} of {kind} coordinates, more "
                             f"than the {_bytes(limit)} of memory of {name}; use fewer points")
