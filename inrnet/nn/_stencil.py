"""The ``"stencil"`` route of [`atom_conv`][inrnet.nn.gather.atom_conv]: a gather plan between two
lattices that is a discrete convolution, run as one ``F.conv{1,2,3}d``.

When the input points are a lattice and the output points a sub-lattice of it (a grid, the
latent lattice of ``INRNetClassifier(latent="lattice")``, a strided layer's outputs on a
grid), the plan ``S [M * A, N]`` of a translation-invariant kernel with equal quadrature
weights is a stencil: entry ``((m, a), j)`` depends only on the atom ``a`` and the lattice
offset ``delta = idx(j) - (start + stride * idx(m))``, and every in-bounds ``(m, a, delta)``
of a non-zero tap is present (the domain's edge is zero padding). Then

    g_m = sum_a sum_delta taps[a, delta] f[start + stride * m + delta] W_a
        = (f * K)[m],   K[delta] = sum_a taps[a, delta] W_a,

one discrete convolution with the kernel ``K`` assembled from the atoms each call (a few
KB), which torch runs through its best kernels (oneDNN on CPU, cuDNN on CUDA) instead of a
gather. [`stencil_of`][inrnet.nn._stencil.stencil_of] finds the stencil of a plan's entries
and checks that it is one (every entry agrees with the taps, no entry is missing or
repeated), or returns None, and the plan keeps its gather backends: mirrored paddings, the
ratio estimator near edges, scattered points. It is built once with the plan; the
registered gather backends, tested against the per-pair reference, are its reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from inrnet.field import Lattice

__all__ = ["Stencil", "stencil_of", "stencil_conv", "TAP_ULPS"]

TAP_ULPS = 1000
"""Entries of one tap may differ by ``TAP_ULPS * eps`` of the plan's dtype relative to its largest
entry, and entries that small count as zero (``1.2e-4`` for float32, ``2.2e-13`` for
float64). The points' coordinates are rounded to their dtype, which moves a degree-1
B-spline's value at an offset by about ``eps`` over the tap spacing (about ``1e-5`` of it on a
256-site float32 axis) and leaves tails of that size where a basis function vanishes at the
edge of its support: the plan's own entries carry that error, and a tap's entries spread by
it. Whatever breaks translation invariance (a mirrored edge, the ratio estimator's edge
weights) changes entries by far more."""

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


@dataclass(frozen=True, eq=False)
class Stencil:
    """A gather plan as a discrete convolution between two lattices.

    Attributes:
        taps: Tensor[A, k_0, ..., k_{d-1}], ``taps[a, t]`` is the plan's entry of atom ``a`` at
            lattice offset ``delta = t + low`` (in the plan's dtype).
        low: the smallest offset ``delta`` per axis.
        start: the input lattice index of output index 0, per axis.
        stride: input lattice steps per output step, per axis.
        in_shape: the input lattice's shape (``N = prod(in_shape)``).
        out_shape: the output lattice's shape (``M = prod(out_shape)``).
    """

    taps: Tensor
    low: tuple[int, ...]
    start: tuple[int, ...]
    stride: tuple[int, ...]
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]

    @property
    def padding(self) -> tuple[tuple[int, int], ...]:
        """``(before, after)`` padding of the input per axis (negative: crop) so that an
        unpadded strided convolution with ``taps`` gives exactly ``out_shape``."""
        pads = []
        for lo, a, s, n, m, k in zip(self.low, self.start, self.stride, self.in_shape, self.out_shape,
                                     self.taps.shape[1:]):
            before = -(a + lo)
            after = a + s * (m - 1) + lo + k - 1 - (n - 1)
            pads.append((before, after))
        return tuple(pads)


def _sub_lattice(inner: Lattice, outer: Lattice) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """``(start, stride)`` with ``outer = inner[start::stride]`` site for site, or None."""
    if len(inner.shape) != len(outer.shape):
        return None
    start, stride = [], []
    for o_in, h_in, o_out, h_out in zip(inner.origin, inner.step, outer.origin, outer.step):
        s, a = round(h_out / h_in), round((o_out - o_in) / h_in)
        tol = 1e-9 * max(abs(h_in), abs(h_out))
        if s < 1 or abs(s * h_in - h_out) > tol or abs(o_in + a * h_in - o_out) > tol * (1 + abs(a)):
            return None
        start.append(a)
        stride.append(s)
    return tuple(start), tuple(stride)


def stencil_of(row: Tensor, col: Tensor, atom: Tensor, value: Tensor, num_atoms: int, points: Lattice,
               queries: Lattice, dtype: torch.dtype) -> Stencil | None:
    """The stencil of a gather plan's entries between two lattices, or None if it is none.

    Args:
        row: Tensor[nnz], the output point ``m`` of each entry (index into ``queries``, C order).
        col: Tensor[nnz], its input point ``j`` (index into ``points``).
        atom: Tensor[nnz], its atom ``a``.
        value: Tensor[nnz], its value (float64 for the check).
        num_atoms: A.
        points: the input lattice (the plan's ``N`` points in C order).
        queries: the output lattice (its ``M`` points in C order).
        dtype: the plan's dtype: of the returned taps, and the rounding `TAP_ULPS` allows.

    Returns:
        The [`Stencil`][inrnet.nn._stencil.Stencil] if ``queries`` is a sub-lattice of
        ``points``, the entries are exactly the in-bounds ``(m, a, delta)`` of the non-zero
        taps, and each tap's entries agree within `TAP_ULPS` (smaller entries count as zero); None otherwise.
    """
    d = len(points.shape)
    if d not in _CONV or value.numel() == 0:
        return None
    v = value.double()
    scale = v.abs().max().item()
    tol = TAP_ULPS * torch.finfo(dtype).eps * scale
    keep = v.abs() > tol  # rounding tails count as zero
    row, col, atom, v = row[keep], col[keep], atom[keep], v[keep]
    placement = _sub_lattice(points, queries)
    if placement is None:
        return None
    start, stride = placement
    device = row.device
    q = torch.stack(torch.unravel_index(row, queries.shape), -1)  # (nnz, d)
    x = torch.stack(torch.unravel_index(col, points.shape), -1)  # (nnz, d)
    delta = x - (torch.tensor(start, device=device) + torch.tensor(stride, device=device) * q)  # (nnz, d)
    low, high = delta.amin(0), delta.amax(0)
    ks = tuple(int(k) for k in (high - low + 1).tolist())
    t = delta - low  # (nnz, d) tap multi-index
    tap = torch.zeros_like(row)
    for k in range(d):
        tap = tap * ks[k] + t[:, k]
    n_taps = math.prod(ks)
    key = atom * n_taps + tap  # (nnz,) the (a, t) of each entry
    # every entry once: (m, a, t) unique
    if torch.unique(row * (num_atoms * n_taps) + key).numel() != row.numel():
        return None
    size = num_atoms * n_taps
    hi = torch.full((size,), -math.inf, dtype=torch.float64, device=device).scatter_reduce(0, key, v, "amax")
    lo = torch.full((size,), math.inf, dtype=torch.float64, device=device).scatter_reduce(0, key, v, "amin")
    present = hi > -math.inf
    if bool(((hi - lo)[present] > tol).any()):
        return None
    taps = torch.where(present, hi, torch.zeros_like(hi))  # (A * T,)
    # no entry missing: the (m, a, t) in bounds of each present tap, counted per axis
    counts = torch.ones(n_taps, dtype=torch.long, device=device)
    grids = torch.meshgrid(*[torch.arange(k, device=device) for k in ks], indexing="ij")
    for k in range(d):
        qs = torch.arange(queries.shape[k], device=device)
        offs = torch.arange(ks[k], device=device) + int(low[k])
        pos = start[k] + stride[k] * qs[None, :] + offs[:, None]  # (k_k, M_k)
        per_axis = ((pos >= 0) & (pos < points.shape[k])).sum(1)  # (k_k,)
        counts = counts * per_axis[grids[k].reshape(-1)]
    expected = int((counts.repeat(num_atoms) * present).sum())
    if expected != row.numel():
        return None
    return Stencil(taps.reshape(num_atoms, *ks).to(dtype), tuple(int(v) for v in low.tolist()), start, stride,
                   tuple(points.shape), tuple(queries.shape))


def stencil_conv(values: Tensor, stencil: Stencil, atoms: Tensor, groups: int = 1) -> Tensor:
    """``g[b, m] = sum_a sum_delta taps[a, delta] f[b, start + stride * m + delta] W_a`` as one
    discrete convolution.

    Args:
        values: Tensor[B, N, C_in], ``N = prod(in_shape)`` in C order.
        stencil: the plan's [`Stencil`][inrnet.nn._stencil.Stencil].
        atoms: Tensor[A, C_in / groups, C_out].
        groups: channel groups.

    Returns:
        Tensor[B, M, C_out], differentiable in ``values`` and ``atoms``.
    """
    b, n, c = values.shape
    d = len(stencil.in_shape)
    taps = stencil.taps.to(atoms.dtype)
    kernel = torch.einsum("at,aio->oit", taps.reshape(taps.shape[0], -1), atoms)  # (O, C / g, T)
    kernel = kernel.reshape(kernel.shape[0], kernel.shape[1], *taps.shape[1:])
    x = values.reshape(b, *stencil.in_shape, c).movedim(-1, 1)  # (B, C, *in_shape), channels last in memory
    pads = stencil.padding
    if all(lo >= hi >= 0 for lo, hi in pads):
        # the conv's own (symmetric) padding: outputs start where the stencil's do, and any extra
        # ones at the far end (there the stencil pads less) are cropped, a view
        y = _CONV[d](x, kernel, stride=stencil.stride, padding=tuple(lo for lo, _ in pads), groups=groups)
        y = y[(slice(None), slice(None), *(slice(0, m) for m in stencil.out_shape))]
    else:
        flat = [p for lo_hi in reversed(pads) for p in lo_hi]  # F.pad: last axis first; negative crops
        y = _CONV[d](F.pad(x, flat), kernel, stride=stencil.stride, groups=groups)
    if tuple(y.shape[2:]) != stencil.out_shape:
        raise RuntimeError(f"stencil conv gave {tuple(y.shape[2:])}, expected {stencil.out_shape}")
    return y.movedim(1, -1).reshape(b, -1, y.shape[1]).contiguous()  # a view for 2-d (channels last)
