"""The paper's INR-Nets (App. D): INR-Net-2/4 classify INRs, INR-Net-3/5 segment them.

Every conv is a 3x3-footprint continuous convolution: a [`BSplineConv`][inrnet.nn.bspline_conv.BSplineConv]
(``conv="bspline"``, the default: fast, and on a grid the exact twin of the matching
pixel CNN in [`inrnet.models.baselines`][inrnet.models.baselines]) or an [`MLPConv`][inrnet.nn.learned_conv.MLPConv] with a box
support of the same size (``conv="mlp"``, the paper's choice; ``n_bins`` Voronoi bins or
``None`` for exact kernels). Sizes are set by ``base_resolution``: a 3x3 filter of the first
layer spans 3 pixels of a ``base_resolution``-pixel image on ``[-1, 1]^2``; each stride 2
doubles the spacing.

``INRNetClassifier(..., lipschitz_target=L)`` builds the Lipschitz-constrained variant: no
batch norms, every conv a [`LipschitzConv`][inrnet.nn.constrained.LipschitzConv] and every
linear layer a [`LipschitzLinear`][inrnet.nn.constrained.LipschitzLinear], each normalised to a
per-layer budget so that the certified bound of
[`inrnet.lipschitz.lipschitz_bound`][inrnet.lipschitz.lipschitz_bound] (quadrature L2 to
Euclidean logits) is at most ``L`` on every point set of ``[-1, 1]^2`` it runs on (whose
quadrature weights sum to the area 4, as the default weights of grids, Sobol sets and
their strided subsets do).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import torch
from torch import nn

from inrnet.field import Field, PointSet
from inrnet.neighbors import Support
from inrnet.nn import Add, BatchNorm, BSplineConv, Concat, GlobalAvgPool, MLPConv, Pointwise, Upsample
from inrnet.nn.bspline_conv import default_degree
from inrnet.nn.constrained import LipschitzConv, LipschitzLinear
from inrnet.nn.conv import ContinuousConv
from inrnet.sampling.points import grid

__all__ = ["INRNetClassifier", "INRNetSegmenter", "INRNetUNet", "make_conv", "LATENTS", "layer_budget"]

CONVS = ("bspline", "mlp")
LATENTS = ("points", "lattice")
"""Where a classifier's strided convs put their outputs (see `INRNetClassifier`'s ``latent``)."""


def make_conv(kind: str, c_in: int, c_out: int, spacing: float, stride: int = 1, n_bins: int | None = 64,
              dim: int = 2, estimator: str = "sum", support_extent: str = "taps", oversample: int = 1) -> ContinuousConv:
    """A 3x3-footprint continuous conv with taps ``spacing`` apart (``estimator``: see
    [`ContinuousConv`][inrnet.nn.conv.ContinuousConv]; ``support_extent``, B-spline convs only: see
    [`BSplineConv`][inrnet.nn.bspline_conv.BSplineConv]).

    ``oversample = s > 1`` (B-spline convs only) puts ``s`` spline knots per tap spacing:
    ``2s + 1`` taps per axis, ``spacing / s`` apart, over the same footprint, so the kernel
    can vary within a pixel (a sharper filter on dense points); the splines keep the 3x3
    filter's degree (1), so on the ``spacing`` grid the kernel is the 3x3 filter of its
    every ``s``-th tap, times ``s^d``.
    """
    if int(oversample) != oversample or oversample < 1:
        raise ValueError(f"oversample must be a positive integer, got {oversample!r}")
    if kind == "bspline":
        s = int(oversample)
        return BSplineConv(c_in, c_out, (2 * s + 1,) * dim, (spacing / s,) * dim, stride=stride,
                           estimator=estimator, support_extent=support_extent,
                           degree=default_degree((3,) * dim))
    if support_extent != "taps" or oversample != 1:
        raise ValueError(f"support_extent={support_extent!r} and oversample={oversample!r} are B-spline kernels' "
                         f"options; conv={kind!r} has a box support of the filter's footprint")
    if kind == "mlp":
        return MLPConv(c_in, c_out, Support((1.5 * spacing,) * dim), n_bins=n_bins, stride=stride,
                       estimator=estimator)
    raise ValueError(f"conv must be one of {CONVS}, got {kind!r}")


def layer_budget(target: float, strided: int, residual_blocks: int, dim: int = 2) -> tuple[float, float]:
    """How a classifier's ``lipschitz_target`` is split: ``(b, c)``.

    Each strided conv, each residual block (``1 + c^2``: two convs of ``c`` each) and each of
    the two linear layers gets the factor ``b``, and global average pooling over
    ``[-1, 1]^d`` has ``2^(-d / 2)`` (``1 / sqrt(sum of the weights)``, the weights summing to
    the volume ``2^d``), so ``target = 2^(-d / 2) * b^(strided + residual_blocks + 2)``.

    Args:
        target: the bound the whole network is normalised to (> 0).
        strided: strided convs.
        residual_blocks: residual blocks.
        dim: coordinate dimension ``d``.

    Raises:
        ValueError: a non-positive target, or one too small for residual blocks (``b <= 1``).
    """
    if not target > 0 or not math.isfinite(target):
        raise ValueError(f"lipschitz_target must be a positive number, got {target!r}")
    b = (target * 2.0 ** (dim / 2)) ** (1.0 / (strided + residual_blocks + 2))
    if residual_blocks and b <= 1:
        raise ValueError(f"lipschitz_target={target} gives each stage the factor {b:.4g} <= 1, but a residual block "
                         "x + F(x) has a factor above 1; use a larger target or no residual blocks")
    return b, math.sqrt(b - 1) if residual_blocks else 0.0


class _ConvBlock(nn.Module):
    """conv -> BatchNorm -> ReLU (the ReLU optional; ``norm=False``: no BatchNorm)."""

    def __init__(self, conv: nn.Module, relu: bool = True, norm: bool = True):
        super().__init__()
        self.conv, self.norm = conv, BatchNorm(conv.out_channels) if norm else nn.Identity()
        self.act = Pointwise(nn.ReLU()) if relu else None

    def forward(self, field: Field, query: PointSet | None = None) -> Field:
        """``field`` values Tensor[B, N, C_in] -> Tensor[B, M, C_out] on the conv's output points
        (``query``, if given: see [`ContinuousConv`][inrnet.nn.conv.ContinuousConv])."""
        out = self.norm(self.conv(field, query=query))
        return self.act(out) if self.act is not None else out


class _Residual(nn.Module):
    """``relu(x + bn(conv(relu(bn(conv(x))))))`` at one resolution (``norm=False``: without the BatchNorms)."""

    def __init__(self, make, channels: int, norm: bool = True):
        super().__init__()
        self.inner = nn.Sequential(_ConvBlock(make(channels, channels), norm=norm),
                                   _ConvBlock(make(channels, channels), relu=False, norm=norm))
        self.add, self.act = Add(), Pointwise(nn.ReLU())

    def forward(self, field: Field) -> Field:
        return self.act(self.add(field, self.inner(field)))


class INRNetClassifier(nn.Module):
    """Strided convs, optional residual blocks, global average pooling, two linear layers.

    ``INR-Net-2`` is ``widths=(32, 64), residual_blocks=0``; ``INR-Net-4`` adds one residual
    block of two convs after the strided ones.

    Args:
        in_channels: channels of the input INRs (1 for Fashion-MNIST, 3 for RGB).
        num_classes: number of classes.
        widths: output channels of the stride-2 convs.
        residual_blocks: residual blocks at the last resolution.
        hidden: width of the hidden linear layer.
        conv: ``"bspline"`` or ``"mlp"``.
        base_resolution: pixels per axis that the first filter's spacing refers to.
        n_bins: Voronoi bins of MLP kernels (``None``: exact).
        estimator: quadrature of every conv, ``"sum"`` (exact twin of the CNN on grids),
            ``"mean"`` (the paper's ratio estimator: lower variance on scattered points) or
            ``"tap_mean"`` (B-spline convs: each tap's own weighted mean, the discrete filter
            applied to the field interpolated at its taps; the twin on grids, no point-count
            noise on scattered points), ``"tap_linear"`` or ``"tap_quadratic"`` (the same with a
            least-squares plane / quadratic through each tap's points instead of their mean) or
            ``"tap_spline"`` (a local cubic spline through each tap's nearest points: the closest
            to the field at the taps of these, the default of the scene segmenters' configs).
        latent: where the first strided conv puts its outputs. ``"points"`` (the paper's):
            a prefix of the input points (every other pixel of a grid), so every layer
            integrates over the input's own scattered points. ``"lattice"``: the sub-lattice
            that a ``base_resolution``-pixel grid keeps after the first stride, whatever the
            input points are, so only the first conv is a quadrature over the input points
            and every later layer is an exact sum on a fixed lattice (a latent grid, as in
            GINO-style neural operators). On a ``base_resolution`` grid both are the same
            network (the pixel twin); on scattered points ``"lattice"`` carries one
            quadrature error instead of one per layer.
        support_extent: ``"taps"`` or ``"basis"``: how far each B-spline kernel reaches
            (see [`BSplineConv`][inrnet.nn.bspline_conv.BSplineConv]; both are the pixel twin on grids).
        lipschitz_target: ``None`` (default): the network above. A number ``L``: the
            Lipschitz-constrained variant, whose certified bound
            ([`lipschitz_bound`][inrnet.lipschitz.lipschitz_bound], quadrature L2 on the input
            points to Euclidean logits) is at most ``L`` on every point set of ``[-1, 1]^2``
            whose weights sum to its area (the default weights): no
            batch norms (each conv keeps a bias), every conv a
            [`LipschitzConv`][inrnet.nn.constrained.LipschitzConv] and every linear layer a
            [`LipschitzLinear`][inrnet.nn.constrained.LipschitzLinear], normalised to the
            per-stage factors of [`layer_budget`][inrnet.models.inr_nets.layer_budget]. Needs
            convs with atoms (not ``conv="mlp", n_bins=None``).

    Shapes:
        ``forward(field [B, N, in_channels]) -> logits [B, num_classes]``.
    """

    def __init__(self, in_channels: int, num_classes: int, widths: Sequence[int] = (32, 64), residual_blocks: int = 0,
                 hidden: int = 128, conv: str = "bspline", base_resolution: int = 28, n_bins: int | None = 64,
                 estimator: str = "sum", latent: str = "points", support_extent: str = "taps",
                 lipschitz_target: float | None = None):
        super().__init__()
        if latent not in LATENTS:
            raise ValueError(f"latent must be one of {LATENTS}, got {latent!r}")
        if latent == "lattice" and not widths:
            raise ValueError("latent='lattice' places the first strided conv's outputs; widths is empty")
        self.in_channels, self.latent, self.base_resolution = in_channels, latent, base_resolution
        self.lipschitz_target = None if lipschitz_target is None else float(lipschitz_target)
        self._latent_points: dict = {}
        constrained = lipschitz_target is not None
        if constrained:
            if conv == "mlp" and n_bins is None:
                raise ValueError("lipschitz_target needs convs with atoms; conv='mlp' with n_bins=None has none")
            budget, inner = layer_budget(self.lipschitz_target, len(widths), residual_blocks)
        spacing = 2.0 / base_resolution
        layers: list[nn.Module] = []
        c = in_channels

        def make(a: int, b: int, s: float, stride: int = 1, factor: float = 1.0) -> nn.Module:
            layer = make_conv(conv, a, b, s, stride=stride, n_bins=n_bins, estimator=estimator,
                              support_extent=support_extent)
            return LipschitzConv(layer, factor) if constrained else layer

        for w in widths:
            layers.append(_ConvBlock(make(c, w, spacing, 2, budget if constrained else 1.0), norm=not constrained))
            c, spacing = w, 2 * spacing
        layers += [_Residual(lambda a, b, s=spacing: make(a, b, s, factor=inner if constrained else 1.0), c,
                             norm=not constrained)
                   for _ in range(residual_blocks)]
        self.features = nn.Sequential(*layers)
        self.pool = GlobalAvgPool()
        if constrained:
            self.head = nn.Sequential(LipschitzLinear(c, hidden, budget), nn.ReLU(),
                                      LipschitzLinear(hidden, num_classes, budget))
        else:
            self.head = nn.Sequential(nn.Linear(c, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def latent_points(self, points: PointSet) -> PointSet | None:
        """The first strided conv's output points for inputs on ``points``: ``None`` (its
        own rule) for ``latent="points"``, else the stride-2 sub-lattice of the
        ``base_resolution`` grid on ``points``'s bounds, device and dtype (built once per
        such key).

        Raises:
            ValueError: ``points`` are not on ``[-1, 1]^d``, the box the lattice is laid out on.
        """
        if self.latent == "points":
            return None
        return _lattice(self._latent_points, points, self.base_resolution, self.features[0].conv.stride)

    def forward(self, field: Field) -> torch.Tensor:
        if self.latent == "points":
            return self.head(self.pool(self.features(field)))
        x = self.features[0](field, query=self.latent_points(field.points))
        return self.head(self.pool(self.features[1:](x)))


def _lattice(cache: dict, points: PointSet, resolution: int, stride: int = 1) -> PointSet:
    """The ``resolution``-pixel grid of cell centres on ``[-1, 1]^d`` (its stride-``stride``
    sub-lattice), on ``points``'s device and dtype, built once per key into ``cache``.

    Raises:
        ValueError: ``points`` are not on ``[-1, 1]^d``, the box the lattice is laid out on.
    """
    key = (points.device, points.dtype, points.bounds, stride)
    if key not in cache:
        d = points.dim
        if points.bounds != ((-1.0, 1.0),) * d:
            raise ValueError(f"latent='lattice' lays its lattice out on [-1, 1]^{d}; the input points' bounds "
                             f"are {points.bounds}")
        full = PointSet(grid((resolution,) * d, dtype=points.dtype, device=points.device), bounds=points.bounds)
        cache[key] = full.downsample(stride)  # stride 1: the grid itself
    return cache[key]


class _DenseINRNet(nn.Module):
    """What the dense INR-Nets share: where the first conv writes (``latent``), the head conv
    at the query points (``decode``), and ``forward = decode(encode(field), query)``.
    Subclasses build ``self.head`` and define ``encode``."""

    head: ContinuousConv

    def __init__(self, in_channels: int, latent: str, base_resolution: int):
        super().__init__()
        if latent not in LATENTS:
            raise ValueError(f"latent must be one of {LATENTS}, got {latent!r}")
        self.in_channels, self.latent, self.base_resolution = in_channels, latent, base_resolution
        self._lattices: dict = {}

    def latent_points(self, points: PointSet) -> PointSet | None:
        """The first conv's output points for inputs on ``points``: ``None`` (the input
        points) for ``latent="points"``, else the ``base_resolution`` grid on ``points``'s
        device and dtype (built once per key).

        Raises:
            ValueError: ``latent="lattice"`` and ``points`` are not on ``[-1, 1]^d``.
        """
        return None if self.latent == "points" else _lattice(self._lattices, points, self.base_resolution)

    def encode(self, field: Field) -> Field:
        """Every layer but the head (the subclass's)."""
        raise NotImplementedError

    def decode(self, features: Field, query: PointSet | torch.Tensor | None = None) -> Field:
        """The head conv at ``query`` (a PointSet or Tensor[M, d]; default: the features'
        points): Field [B, M, num_classes]. Each query point's logits depend on the features
        near it only, so the queries can be evaluated in any chunks."""
        if query is not None and not isinstance(query, PointSet):
            query = PointSet(query.to(features.points.device, features.points.dtype), bounds=features.points.bounds)
        return self.head(features, query=query)

    def forward(self, field: Field, query: PointSet | torch.Tensor | None = None) -> Field:
        return self.decode(self.encode(field), field.points if query is None else query)


class INRNetSegmenter(_DenseINRNet):
    """A dense INR-Net: its output is an INR, evaluated wherever the labels are.

    ``INR-Net-3`` (``multiscale=False``): three convs at the input resolution, the last one
    evaluated at the query points. ``INR-Net-5`` (``multiscale=True``): conv, strided conv,
    conv, nearest-neighbour upsampling back to the first conv's points, conv plus a residual
    connection to the first conv's output, and the head conv at the query points.

    Args:
        in_channels: channels of the input INRs.
        num_classes: classes of the output logits.
        width: channels of the first conv (the strided branch has twice as many).
        multiscale: INR-Net-5 instead of INR-Net-3.
        conv: ``"bspline"`` or ``"mlp"`` (see [`make_conv`][inrnet.models.inr_nets.make_conv]).
        base_resolution: pixels per axis that the first filter's spacing refers to.
        n_bins: Voronoi bins of MLP kernels (``None``: exact).
        estimator: quadrature of every conv (see
            [`INRNetClassifier`][inrnet.models.inr_nets.INRNetClassifier]).
        latent: ``"points"`` (the paper's): every layer integrates over the input's own
            points. ``"lattice"``: the first conv writes to the ``base_resolution`` grid
            whatever the input points are, every later layer is an exact sum on that fixed
            lattice, and the head conv is the only one evaluated at the query points; on a
            ``base_resolution`` grid both are the same network (the pixel twin).
        support_extent: ``"taps"`` or ``"basis"`` (B-spline convs; see
            [`BSplineConv`][inrnet.nn.bspline_conv.BSplineConv]).
        stem_oversample: spline knots per pixel of the first conv, the only one that
            integrates over the input points (B-spline convs; see
            [`make_conv`][inrnet.models.inr_nets.make_conv]): 1, the default, is the
            pixel twin's 3x3 filter.

    Shapes:
        ``forward(field [B, N, in_channels], query=None) -> Field [B, M, num_classes]`` on
        ``query`` (a PointSet or Tensor[M, d]; default the input points), which is
        ``decode(encode(field), query)``: ``encode`` runs the layers before the head once
        (features on the input points, or on the lattice), ``decode`` the head at any query points.
    """

    def __init__(self, in_channels: int, num_classes: int, width: int = 32, multiscale: bool = False,
                 conv: str = "bspline", base_resolution: int = 64, n_bins: int | None = 64,
                 estimator: str = "sum", latent: str = "points", support_extent: str = "taps",
                 stem_oversample: int = 1):
        super().__init__(in_channels, latent, base_resolution)
        self.multiscale = multiscale
        make = partial(make_conv, conv, n_bins=n_bins, estimator=estimator, support_extent=support_extent)
        h = 2.0 / base_resolution
        self.stem = _ConvBlock(make(in_channels, width, h, oversample=stem_oversample))
        if multiscale:
            self.down = _ConvBlock(make(width, 2 * width, h, stride=2))
            self.low = _ConvBlock(make(2 * width, 2 * width, 2 * h))
            self.up = Upsample()
            self.fuse = _ConvBlock(make(2 * width, width, h), relu=False)
            self.add, self.act = Add(), Pointwise(nn.ReLU())
        else:
            self.body = _ConvBlock(make(width, width, h))
        self.head = make(width, num_classes, h)

    def encode(self, field: Field) -> Field:
        """Every layer but the head: features Field [B, N, width] on the input points
        (``latent="lattice"``: on the lattice's points)."""
        x = self.stem(field, query=self.latent_points(field.points))
        if self.multiscale:
            low = self.up(self.low(self.down(x)), x.points)
            return self.act(self.add(x, self.fuse(low)))
        return self.body(x)


class INRNetUNet(_DenseINRNet):
    """A multi-scale INR-Net segmenter (the paper's Fig. 2, right): an encoder that halves
    the resolution at each level, a decoder that upsamples back, merging each level's
    encoder features by a skip connection, and a head conv at the query points.

    Level ``i`` has ``widths[i]`` channels on points ``2^i`` times sparser per axis: two
    conv blocks (conv, BatchNorm, ReLU; the first strided for ``i > 0``). Going up, the
    coarser decoder output is upsampled (nearest neighbour) to level ``i``'s points,
    concatenated with level ``i``'s encoder features ([`Concat`][inrnet.nn.resample.Concat])
    and mixed by one conv block to ``widths[i]`` channels. The head is a 3x3 conv to
    ``num_classes`` at the query points.

    Args:
        in_channels: channels of the input INRs.
        num_classes: classes of the output logits.
        widths: channels per level, finest first (at least two levels).
        conv: ``"bspline"`` or ``"mlp"``.
        base_resolution: pixels per axis of the finest level's grid (its filter spacing).
        n_bins: Voronoi bins of MLP kernels (``None``: exact).
        estimator: quadrature of every conv.
        latent: ``"lattice"`` (default): the first conv writes to the ``base_resolution``
            grid, every later layer is an exact sum on that lattice and its strided
            sub-lattices, and only the first conv integrates over the input points and only
            the head is evaluated at the query points. ``"points"``: every layer runs on the
            input points and their strided subsets (the paper's scheme).
        support_extent: ``"taps"`` or ``"basis"`` (B-spline convs).
        stem_oversample: spline knots per pixel of the first conv (see
            [`INRNetSegmenter`][inrnet.models.inr_nets.INRNetSegmenter]).

    Shapes:
        ``forward(field [B, N, in_channels], query=None) -> Field [B, M, num_classes]`` on
        ``query`` (default the input points) = ``decode(encode(field), query)``.
    """

    def __init__(self, in_channels: int, num_classes: int, widths: Sequence[int] = (16, 32, 64, 64),
                 conv: str = "bspline", base_resolution: int = 64, n_bins: int | None = 64,
                 estimator: str = "sum", latent: str = "lattice", support_extent: str = "basis",
                 stem_oversample: int = 1):
        super().__init__(in_channels, latent, base_resolution)
        widths = tuple(int(w) for w in widths)
        if len(widths) < 2 or min(widths) < 1:
            raise ValueError(f"widths must give at least two levels of positive widths, got {widths}")
        make = partial(make_conv, conv, n_bins=n_bins, estimator=estimator, support_extent=support_extent)
        h = 2.0 / base_resolution
        self.encoder = nn.ModuleList()
        c = in_channels
        for i, w in enumerate(widths):
            # a strided conv's taps are on the finer level's spacing; the level's own convs on its spacing
            first = make(c, w, h * 2 ** (i - 1), stride=2) if i else make(c, w, h, oversample=stem_oversample)
            self.encoder.append(nn.Sequential(_ConvBlock(first), _ConvBlock(make(w, w, h * 2 ** i))))
            c = w
        self.up, self.concat = Upsample(), Concat()
        self.decoder = nn.ModuleList(_ConvBlock(make(widths[i] + widths[i + 1], widths[i], h * 2 ** i))
                                     for i in range(len(widths) - 1))
        self.head = make(widths[0], num_classes, h)

    def encode(self, field: Field) -> Field:
        """Every layer but the head: features Field [B, N, widths[0]] on the finest level's points."""
        first, rest = self.encoder[0]
        x = rest(first(field, query=self.latent_points(field.points)))
        skips = [x]
        for level in self.encoder[1:]:
            skips.append(level(skips[-1]))
        x = skips.pop()
        for i in reversed(range(len(self.decoder))):
            skip = skips.pop()
            x = self.decoder[i](self.concat(skip, self.up(x, skip.points)))
        return x
