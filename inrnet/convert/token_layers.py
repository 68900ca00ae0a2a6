"""Patch tokenisation of a field: a vision transformer's patch embedding (paper App. C).

A ViT cuts the image into ``p x p`` patches and embeds each with one linear map, timm's
``PatchEmbed``: a convolution with kernel = stride = ``p`` (``proj``), the patches flattened
in row-major order into tokens, then ``norm``. Its twin here,
[`PatchEmbedOnField`][inrnet.convert.token_layers.PatchEmbedOnField], keeps the convolution's
weights as the taps of a B-spline kernel (a [`BSplineConv`][inrnet.nn.bspline_conv.BSplineConv],
built by the converter's own rule for ``nn.Conv2d``), so the embedding of patch ``j``
centred at ``c_j`` is ``int K(x - c_j) f(x) dx`` over the patch's support, with ``K`` the
B-spline surface interpolating the ``p x p`` embedding weights.

The patch centres ``c_j`` are fixed at conversion: the conv's output lattice on
``grid(input_shape)``, whatever points the input is sampled on (as the first window layer of
a ``latent="lattice"`` conversion, `inrnet.convert.ops.lattice_query`). On the grid the
integral is the discrete patch convolution, and the tokens are timm's; on scattered points
(Sobol) it is a quasi-Monte Carlo estimate of the integral over each patch's support. The
tokens are a plain tensor: the class token, position embeddings, attention and MLP blocks
and the head run unchanged on them.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from inrnet.convert.ops import lattice_query
from inrnet.field import Field, check_field
from inrnet.nn.conv import ContinuousConv

__all__ = ["TOKEN_FORMATS", "PatchEmbedOnField"]

TOKEN_FORMATS = ("NLC", "NCL", "NHWC", "NCHW")
"""The layouts of timm's ``PatchEmbed`` output (``output_fmt``; ``flatten=True`` is ``"NLC"``) a
[`PatchEmbedOnField`][inrnet.convert.token_layers.PatchEmbedOnField] returns."""


class PatchEmbedOnField(nn.Module):
    """timm's ``PatchEmbed`` on a field: a patch-lattice B-spline convolution, then the tokens and ``norm``.

    Parameters have timm's names (``proj.weight``, ``proj.bias``, ``norm.*``).

    Args:
        proj: the continuous patch convolution (kernel = stride = patch), ``C`` inputs,
            ``E`` outputs, whose output points for grid inputs are the ``h x w`` patch lattice.
        norm: applied to the formatted tokens, as timm's ``PatchEmbed.norm``.
        input_shape: the image size ``(H, W)`` the model was converted at; the patch
            centres are ``proj``'s output points on ``grid(input_shape)``.
        grid_size: ``(h, w)``, patches per axis.
        output_fmt: one of `TOKEN_FORMATS`.

    Shapes:
        ``Field[B, N, C]`` on any ``N`` points of ``[-1, 1]^2`` -> tokens
        ``Tensor[B, h * w, E]`` (``"NLC"``, patches in row-major order), ``[B, E, h * w]``
        (``"NCL"``), ``[B, h, w, E]`` (``"NHWC"``) or ``[B, E, h, w]`` (``"NCHW"``).
    """

    def __init__(self, proj: ContinuousConv, norm: nn.Module, input_shape: Sequence[int], grid_size: Sequence[int],
                 output_fmt: str = "NLC"):
        super().__init__()
        if output_fmt not in TOKEN_FORMATS:
            raise ValueError(f"output_fmt must be one of {TOKEN_FORMATS}, got {output_fmt!r}")
        self.proj, self.norm = proj, norm
        self.input_shape = tuple(int(s) for s in input_shape)
        self.grid_size = tuple(int(s) for s in grid_size)
        self.output_fmt = output_fmt

    def tokens(self, field: Field) -> Tensor:
        """The patch embeddings before ``norm``, in row-major patch order.

        Args:
            field: values Tensor[B, N, C] on ``N`` points of ``[-1, 1]^2``.

        Returns:
            Tensor[B, h * w, E].

        Raises:
            ValueError: the points are not on ``[-1, 1]^2`` (the box the patch lattice tiles).
        """
        check_field(field, type(self).__name__, self.proj.in_channels, module=self)
        dim = len(self.input_shape)
        if field.points.bounds != ((-1.0, 1.0),) * dim:
            raise ValueError(f"{type(self).__name__} puts its tokens on the patch lattice of grid({self.input_shape}) "
                             f"in [-1, 1]^{dim}; the input points' bounds are {field.points.bounds}")
        query = lattice_query(self.proj, field, self.input_shape)  # None on grid(input_shape): proj's own points
        return self.proj(field, query).values  # (B, h * w, E)

    def forward(self, field: Field) -> Tensor:
        """Embed the patches of a field.

        Args:
            field: values Tensor[B, N, C] on ``N`` points of ``[-1, 1]^2``.

        Returns:
            The tokens in ``output_fmt`` after ``norm`` (see the class docstring's shapes).
        """
        x = self.tokens(field)  # (B, L, E)
        b, _, e = x.shape
        if self.output_fmt == "NCL":
            x = x.transpose(1, 2)  # (B, E, L)
        elif self.output_fmt == "NHWC":
            x = x.reshape(b, *self.grid_size, e)  # (B, h, w, E)
        elif self.output_fmt == "NCHW":
            x = x.transpose(1, 2).reshape(b, e, *self.grid_size)  # (B, E, h, w)
        return self.norm(x)

    def extra_repr(self) -> str:
        return f"input_shape={self.input_shape}, grid_size={self.grid_size}, output_fmt={self.output_fmt!r}"
