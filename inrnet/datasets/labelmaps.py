"""Segmentation INR datasets: INRs paired with full-resolution label maps.

A label map ``[H, W]`` covers ``[-1, 1]^2`` the way [`inrnet.sampling.grid`][inrnet.sampling.points.grid] says:
pixel ``(i, j)`` is the cell ``[-1 + 2i/H, -1 + 2(i+1)/H) x [-1 + 2j/W, -1 + 2(j+1)/W)``
with its centre at ``grid((H, W))[i * W + j]``; coordinate 0 runs down the rows. Any
query point is scored against the label of the pixel cell it falls in
([`labels_at`][inrnet.datasets.labels_at]), so outputs evaluated at sub-pixel coordinates are scored against
the full-resolution labels. Void pixels hold `IGNORE_INDEX`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

from inrnet.inr import INRBatch, INRDataset
from inrnet.sampling.points import grid

__all__ = ["IGNORE_INDEX", "LabelMapDataset", "label_coords", "pixel_index", "labels_at"]

IGNORE_INDEX = 255
"""Label of void / unlabelled pixels, ignored by losses and metrics."""


def label_coords(shape: Sequence[int], *, device=None) -> Tensor:
    """Coordinates of the label-map pixels (cell centres), Tensor[H * W, 2] in ``flatten()`` order."""
    return grid(tuple(shape), device=device)


def pixel_index(coords: Tensor, shape: Sequence[int]) -> Tensor:
    """The flat index of the pixel cell each point falls in.

    Args:
        coords: Tensor[M, d] in ``[-1, 1]^d`` (points on a cell border go to the cell
            after it; ``1`` itself to the last cell).
        shape: the label map's spatial shape ``(H, W)`` (any d).

    Returns:
        int64 Tensor[M], indices into ``label_map.flatten()``.
    """
    shape = tuple(int(s) for s in shape)
    if coords.dim() != 2 or coords.shape[1] != len(shape):
        raise ValueError(f"coords must be [M, d={len(shape)}] for a label map of shape {shape}, "
                         f"got {tuple(coords.shape)}")
    if not bool(torch.isfinite(coords).all()) or bool((coords.abs() > 1).any()):
        raise ValueError("coords must be finite and lie in [-1, 1]")
    sizes = torch.tensor(shape, device=coords.device)  # (d,)
    cell = ((coords.double() + 1) * 0.5 * sizes).floor().long()  # (M, d)
    cell = torch.minimum(cell, sizes - 1)
    strides = torch.tensor([math.prod(shape[k + 1:]) for k in range(len(shape))], device=coords.device)  # (d,)
    return (cell * strides).sum(1)


def labels_at(label_maps: Tensor, coords: Tensor) -> Tensor:
    """The labels of the pixel cells the query points fall in.

    Args:
        label_maps: Tensor[B, H, W] (or [B, *shape]).
        coords: Tensor[M, d] in ``[-1, 1]^d``.

    Returns:
        Tensor[B, M] of ``label_maps``' dtype.
    """
    index = pixel_index(coords, label_maps.shape[1:])  # (M,)
    return label_maps.flatten(1)[:, index]  # (B, M)


class LabelMapDataset(Dataset):
    """INRs whose labels are label maps, read from a stored INR dataset.

    The stored labels are uint8 ``[n, H, W]``, or ``[n, A, H, W]`` with one map per
    annotation (e.g. Cityscapes fine and coarse), of which ``annotation`` picks one.

    Args:
        inrs: the stored dataset.
        annotation: which map of ``[n, A, H, W]`` labels (None for ``[n, H, W]``).

    ``dataset[i]`` is ``(params {name: Tensor[*shape]}, label map int64 Tensor[H, W])``.
    """

    def __init__(self, inrs: INRDataset, annotation: int | None = None):
        self.inrs = inrs
        self.family = inrs.family
        self.annotation = annotation
        _, first = inrs[0]
        want = 3 if annotation is not None else 2
        if first.dim() != want or (annotation is not None and not 0 <= annotation < first.shape[0]):
            raise ValueError(f"{inrs!r} holds labels of shape {tuple(first.shape)} per INR; annotation="
                             f"{annotation} needs {'[A, H, W] with A > annotation' if want == 3 else '[H, W]'}")
        self.label_shape = tuple(first.shape[-2:])

    def __len__(self) -> int:
        return len(self.inrs)

    def __repr__(self) -> str:
        pick = "" if self.annotation is None else f", annotation {self.annotation}"
        return f"LabelMapDataset({self.inrs!r}, labels {self.label_shape}{pick})"

    def _pick(self, labels: Tensor) -> Tensor:
        return labels if self.annotation is None else labels.select(1, self.annotation)

    def __getitem__(self, index: int) -> tuple[dict[str, Tensor], Tensor]:
        params, labels = self.inrs[index]
        return params, self._pick(labels[None])[0].long()

    def batch(self, indices: Sequence[int] | Tensor) -> tuple[INRBatch, Tensor]:
        """The INRs ``indices`` and their label maps int64 Tensor[len, H, W] (void = 255)."""
        inrs, labels = self.inrs.batch(indices)
        return inrs, self._pick(labels).long()

    @property
    def labels(self) -> Tensor:
        """All label maps, uint8 Tensor[n, H, W] (read in blocks of 256 INRs)."""
        blocks = [self._pick(self.inrs.batch(torch.arange(a, min(a + 256, len(self))))[1])
                  for a in range(0, len(self), 256)]
        return torch.cat(blocks)

    @property
    def quality(self) -> dict[str, Tensor]:
        """The stored fit quality of every INR, ``{key: Tensor[n]}``."""
        return self.inrs.quality
