"""Point dropout and coordinate augmentations (paper App. C), acting on points, never on a grid.

* [`drop_points`][inrnet.nn.augment.drop_points] / [`PointDropout`][inrnet.nn.augment.PointDropout]: keep a random subset of the sample points,
  their weights rescaled so the total measure is unchanged; later layers then integrate
  over fewer points (the paper's computation-saving dropout).
* Coordinate transforms ``T`` ([`RandomFlip`][inrnet.nn.augment.RandomFlip], [`RandomAffine`][inrnet.nn.augment.RandomAffine],
  [`Compose`][inrnet.nn.augment.Compose]) are callables ``coords -> coords`` for INR evaluation: sampling an INR
  ``f`` at ``T(x)`` gives the augmented function ``f o T`` at ``x`` with no interpolation.
  They take ``coords (Tensor[..., N, d])`` and draw independent parameters for every
  leading index (one draw for ``[N, d]``, one per INR for ``[B, N, d]``).
* [`jitter`][inrnet.nn.augment.jitter] moves the sample points themselves (Gaussian noise reflected back into
  the domain), a new point set to evaluate the INRs on.

Randomness comes from an explicit ``torch.Generator`` or an integer seed (``None``: the
global torch RNG); a transform holding a generator advances it at every call, so the same
seed replays the same sequence of augmentations.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from inrnet.field import Field, PointSet, check_field

__all__ = ["as_generator", "drop_points", "PointDropout", "flip", "affine", "RandomFlip", "RandomAffine",
           "Compose", "reflect", "jitter"]

GeneratorLike = torch.Generator | int | None


def as_generator(generator: GeneratorLike) -> torch.Generator | None:
    """A ``torch.Generator`` as is, a fresh CPU generator for an integer seed, ``None`` as is."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, bool) or not isinstance(generator, int):
        raise TypeError(f"expected a torch.Generator, an int seed or None, got {type(generator).__name__}")
    return torch.Generator().manual_seed(generator)


def _draw(kind: Callable, shape: Sequence[int], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """``torch.rand``/``randn`` on the generator's device in float64, then cast like ``like``."""
    device = generator.device if generator is not None else torch.device("cpu")
    return kind(tuple(shape), generator=generator, dtype=torch.float64, device=device).to(like)


def _check_probability(p: float, what: str, allow_one: bool = True) -> float:
    p = float(p)
    if not (0.0 <= p <= 1.0) or (p == 1.0 and not allow_one):
        raise ValueError(f"{what} must be in [0, {'1]' if allow_one else '1)'}, got {p}")
    return p


def drop_points(points: PointSet, p: float, generator: GeneratorLike = None) -> PointSet:
    """Keep each point with probability ``1 - p`` (at least one), weights rescaled to the same total.

    Returns:
        ``points.subset(index)`` with ``index`` (its ``parent_index``, Tensor[M]) ascending,
        and weights ``w_index * sum(w) / sum(w_index)``; ``points`` itself when ``p == 0``.
    """
    p = _check_probability(p, "drop probability", allow_one=False)
    if p == 0.0:
        return points
    u = _draw(torch.rand, (points.n,), as_generator(generator), points.weights)  # (N,)
    keep = u >= p
    if not bool(keep.any()):
        keep = u == u.max()
    index = keep.nonzero().squeeze(-1)  # (M,)
    w = points.weights[index]
    return points.subset(index, weights=w * (points.weights.sum() / w.sum()))


class PointDropout(nn.Module):
    """In training, keep a random subset of the points ([`drop_points`][inrnet.nn.augment.drop_points]); identity in eval.

    The whole minibatch shares the kept points (it shares one point set).

    Args:
        p: probability of dropping a point, in ``[0, 1)``.
        generator: a ``torch.Generator`` or seed (advanced at every training call).

    Shapes:
        ``Field[B, N, C] -> Field[B, M, C]`` on ``points.subset(index)``.
    """

    def __init__(self, p: float = 0.5, generator: GeneratorLike = None):
        super().__init__()
        self.p = _check_probability(p, "PointDropout p", allow_one=False)
        self.generator = as_generator(generator)

    def forward(self, field: Field) -> Field:
        check_field(field, "PointDropout")
        if not self.training or self.p == 0.0:
            return field
        points = drop_points(field.points, self.p, self.generator)
        return Field(field.values[:, points.parent_index], points)  # (B, M, C)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def _check_coords(coords: Tensor, name: str) -> Tensor:
    if not isinstance(coords, Tensor) or coords.dim() < 2 or not coords.is_floating_point():
        raise ValueError(f"{name} expects floating coords [..., N, d], got "
                         f"{tuple(getattr(coords, 'shape', ())) or type(coords).__name__}")
    return coords


def flip(coords: Tensor, sign: Tensor) -> Tensor:
    """Mirror coordinates about the origin (the centre of ``[-1, 1]^d``): ``x_k -> sign_k x_k``.

    Args:
        coords (Tensor[..., N, d]): the points to mirror.
        sign (Tensor[..., d]): ``+1`` or ``-1`` per coordinate and leading index.

    Returns:
        Tensor[..., N, d].
    """
    return coords * sign.unsqueeze(-2)


def affine(coords: Tensor, matrix: Tensor, translation: Tensor) -> Tensor:
    """``T(x) = A x + t`` for every point.

    Args:
        coords (Tensor[..., N, d]): the points to map.
        matrix (Tensor[..., d, d]): ``A``.
        translation (Tensor[..., d]): ``t``.

    Returns:
        Tensor[..., N, d].
    """
    return torch.einsum("...ij,...nj->...ni", matrix, coords) + translation.unsqueeze(-2)


class RandomFlip:
    """Flip each coordinate axis in ``dims`` independently with probability ``p``.

    Axes follow the grid convention: for an image ``[H, W]``, ``dims=(1,)`` is a
    horizontal flip (the default) and ``dims=(0,)`` a vertical one. On grid points the
    flip maps cell centres to cell centres, so a flipped pixel INR sampled on its grid is
    ``torch.flip`` of the image.

    Args:
        dims: the axes that may flip.
        p: probability of flipping each of them.
        generator: a ``torch.Generator`` or seed.
    """

    def __init__(self, dims: Sequence[int] = (1,), p: float = 0.5, generator: GeneratorLike = None):
        self.dims = tuple(int(k) for k in dims)
        if not self.dims or any(k < 0 for k in self.dims):
            raise ValueError(f"dims must be non-empty non-negative axis indices, got {dims!r}")
        self.p = _check_probability(p, "flip probability")
        self.generator = as_generator(generator)

    def __call__(self, coords: Tensor) -> Tensor:
        _check_coords(coords, "RandomFlip")
        if max(self.dims) >= coords.shape[-1]:
            raise ValueError(f"cannot flip axes {self.dims} of coords {tuple(coords.shape)} ([..., N, d])")
        batch = coords.shape[:-2]
        flipped = _draw(torch.rand, (*batch, len(self.dims)), self.generator, coords) < self.p  # (..., k)
        sign = torch.ones(*batch, coords.shape[-1], dtype=coords.dtype, device=coords.device)  # (..., d)
        sign[..., list(self.dims)] = 1.0 - 2.0 * flipped.to(coords)
        return flip(coords, sign)

    def __repr__(self) -> str:
        return f"RandomFlip(dims={self.dims}, p={self.p})"


class RandomAffine:
    """A small random affine map ``T(x) = s R(theta) S(m) x + t`` of ``[-1, 1]^d`` coordinates.

    ``theta ~ U(-max_rotation, max_rotation)`` in degrees with ``R`` the 2-d rotation,
    ``S(m) = [[1, m], [0, 1]]`` a shear with ``m ~ U(-max_shear, max_shear)``, the isotropic
    scale ``s ~ U(1 - max_scale, 1 + max_scale)`` and ``t_k ~ U(-max_translation,
    max_translation)`` in coordinate units. Rotation and shear need ``d = 2``; scale and
    translation work for any ``d``. Points mapped outside the domain are evaluated by the
    INR as it extends (e.g. its padding).

    Args:
        max_rotation: degrees.
        max_scale: in ``[0, 1)``.
        max_shear: shear factor.
        max_translation: coordinate units.
        generator: a ``torch.Generator`` or seed.
    """

    def __init__(self, max_rotation: float = 0.0, max_scale: float = 0.0, max_shear: float = 0.0,
                 max_translation: float = 0.0, generator: GeneratorLike = None):
        limits = (max_rotation, max_scale, max_shear, max_translation)
        if any(not math.isfinite(v) or v < 0 for v in limits) or max_scale >= 1:
            raise ValueError(f"affine limits must be finite and >= 0 with max_scale < 1, got rotation={max_rotation}, "
                             f"scale={max_scale}, shear={max_shear}, translation={max_translation}")
        self.max_rotation, self.max_scale, self.max_shear, self.max_translation = map(float, limits)
        self.generator = as_generator(generator)

    def sample(self, batch: Sequence[int], d: int, like: Tensor) -> tuple[Tensor, Tensor]:
        """Draw ``A (Tensor[*batch, d, d])`` and ``t (Tensor[*batch, d])``."""
        if d != 2 and (self.max_rotation or self.max_shear):
            raise ValueError(f"rotation and shear are defined for d=2 coordinates, got d={d}")
        u = 2.0 * _draw(torch.rand, (*batch, 3 + d), self.generator, like) - 1.0  # (..., 3 + d) in [-1, 1)
        scale = 1.0 + self.max_scale * u[..., 1]  # (...,)
        matrix = scale[..., None, None] * torch.eye(d, dtype=like.dtype, device=like.device)  # (..., d, d)
        if d == 2:
            theta = math.radians(self.max_rotation) * u[..., 0]
            c, s, m = theta.cos(), theta.sin(), self.max_shear * u[..., 2]
            rs = torch.stack([c, c * m - s, s, s * m + c], dim=-1).reshape(*batch, 2, 2)  # (..., 2, 2): R S
            matrix = scale[..., None, None] * rs
        return matrix, self.max_translation * u[..., 3:]

    def __call__(self, coords: Tensor) -> Tensor:
        _check_coords(coords, "RandomAffine")
        matrix, translation = self.sample(coords.shape[:-2], coords.shape[-1], coords)
        return affine(coords, matrix, translation)

    def __repr__(self) -> str:
        return (f"RandomAffine(max_rotation={self.max_rotation}, max_scale={self.max_scale}, "
                f"max_shear={self.max_shear}, max_translation={self.max_translation})")


class Compose:
    """Apply coordinate transforms in order: ``Compose([T1, T2])(x) = T2(T1(x))``."""

    def __init__(self, transforms: Sequence[Callable[[Tensor], Tensor]]):
        self.transforms = list(transforms)
        if any(not callable(t) for t in self.transforms):
            raise TypeError("Compose needs callables coords -> coords")

    def __call__(self, coords: Tensor) -> Tensor:
        for transform in self.transforms:
            coords = transform(coords)
        return coords

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


def reflect(coords: Tensor, bounds) -> Tensor:
    """Fold coordinates back into the box by mirror reflection at its faces (period ``2 (hi - lo)``).

    Args:
        coords (Tensor[N, d]): the points to fold, anywhere in ``R^d``.
        bounds: ``d`` pairs ``(lo, hi)``.

    Returns:
        Tensor[N, d] inside the box.
    """
    lo = torch.tensor([b[0] for b in bounds], dtype=coords.dtype, device=coords.device)
    length = torch.tensor([b[1] - b[0] for b in bounds], dtype=coords.dtype, device=coords.device)
    y = torch.remainder(coords - lo, 2.0 * length)  # (N, d) in [0, 2 L)
    return lo + length - (y - length).abs()


def jitter(points: PointSet, sigma: float | Sequence[float], generator: GeneratorLike = None) -> PointSet:
    """Move every point by Gaussian noise ``N(0, sigma_k^2)`` per axis, reflected into the domain.

    The weights (measure per point) and bounds are kept; the result is scattered (no lattice),
    ``"nested"`` if ``points`` are, else ``"unordered"`` (a jittered grid is still in scan order).

    Args:
        sigma: standard deviation in coordinate units, one for all axes or one per axis.

    Returns:
        A new [`PointSet`][inrnet.field.PointSet] (``points`` itself when ``sigma`` is 0).
    """
    sigma_t = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1)
    if sigma_t.numel() not in (1, points.dim) or not bool(torch.isfinite(sigma_t).all() and (sigma_t >= 0).all()):
        raise ValueError(f"sigma must be one or {points.dim} finite values >= 0, got {sigma!r}")
    if not bool(sigma_t.any()):
        return points
    noise = _draw(torch.randn, points.coords.shape, as_generator(generator), points.coords)  # (N, d)
    moved = points.coords + noise * sigma_t.to(points.coords)
    order = "nested" if points.order == "nested" else "unordered"  # a jittered grid is still in scan order
    return PointSet(reflect(moved, points.bounds), points.weights, bounds=points.bounds, order=order)
