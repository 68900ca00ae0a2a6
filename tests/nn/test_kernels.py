"""Kernel bases: cardinal B-splines against scipy, and the interpolation of a filter's taps."""

import numpy as np
import torch
from _conv_helpers import D64
from scipy.interpolate import BSpline

from inrnet.nn.bspline_conv import BSplineConv
from inrnet.nn.kernels import bspline_interpolation_matrix, cardinal_bspline


def test_cardinal_bspline_matches_scipy_and_interpolates_taps():
    v = torch.linspace(-2.5, 2.5, 101, dtype=D64)
    for p in range(4):
        ref = BSpline.basis_element(np.arange(p + 2) - (p + 1) / 2, extrapolate=False)(v.numpy())
        torch.testing.assert_close(cardinal_bspline(v, p), torch.from_numpy(np.nan_to_num(ref)), atol=1e-12, rtol=0)
        a = bspline_interpolation_matrix(5, p)
        torch.testing.assert_close(a.sum(1)[1:-1], torch.ones(3, dtype=D64))  # partition of unity inside
    # the kernel of a degree-2 conv equals its weights at the taps and is continuous between
    layer = BSplineConv(1, 1, 5, 0.1).double()
    taps = torch.tensor([[i * 0.1, j * 0.1] for i in range(-2, 3) for j in range(-2, 3)], dtype=D64)
    k = layer.pair_kernel(taps)[:, 0, 0] * 0.01
    torch.testing.assert_close(k, layer.weight.detach().reshape(-1))
