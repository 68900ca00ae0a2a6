"""How well does each per-tap quadrature recover the field at its taps? (issue 13.3, label-free)

A B-spline conv whose filter is the identity (one tap of weight 1 at the centre) outputs, at
each query, its estimate of the input field there: for ``estimator="tap_mean"`` the points'
basis-weighted mean, for ``"tap_linear"`` / ``"tap_quadratic"`` the value at the tap of their
weighted least-squares plane / quadratic (ridge ``TAP_FIT_RIDGE[degree]``, here each of
``--ridges``). The INRs are evaluated on
``--points`` scrambled Sobol points and the estimate is compared with the INR itself at the
cell centres of a ``--side`` x ``--side`` grid (the taps of a first conv made for that
grid). No labels and no trained network are involved, so the ridge can be chosen here on
training INRs; scipy's Delaunay-linear and Clough-Tocher interpolants are printed beside
them for scale. The root-mean-square error over all INRs, grid points and channels::

    python experiments/tap_interpolation.py --dataset fashion_mnist_default --split train --points 784 --side 28
    python experiments/tap_interpolation.py --dataset fashion_mnist_scenes --root .cache/fashion_mnist_scenes \\
        --split train --points 4096 --side 64 --count 100

Prints one line per estimator and Sobol seed.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import inrnet.nn.conv as conv_module
from inrnet.datasets import get_dataset
from inrnet.field import Field, PointSet
from inrnet.inr import sample
from inrnet.nn import BSplineConv
from inrnet.sampling import sobol

D64 = torch.float64


def tap_estimate(values: torch.Tensor, coords: torch.Tensor, side: int, estimator: str) -> torch.Tensor:
    """The identity filter's output at the ``side`` x ``side`` cell centres.

    Args:
        values: Tensor[B, N, C] on the points ``coords`` Tensor[N, 2].

    Returns:
        Tensor[B, side * side, C].
    """
    conv = BSplineConv(1, 1, 3, 2 / side, estimator=estimator, bias=False).double()
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 1, 1] = 1.0
        query = PointSet.grid((side, side), dtype=D64)
        points = PointSet(coords)  # a new point set: its plans are built under today's ridge
        return torch.cat([conv(Field(values[..., k:k + 1].contiguous(), points), query=query).values
                          for k in range(values.shape[-1])], -1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="fashion_mnist_default")
    p.add_argument("--root", default=None)
    p.add_argument("--split", default="train")
    p.add_argument("--count", type=int, default=200, help="the first COUNT INRs of the split")
    p.add_argument("--points", type=int, default=784)
    p.add_argument("--side", type=int, default=28)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    p.add_argument("--ridges", type=float, nargs="+", default=[0.003, 0.01, 0.03, 0.1, 0.3])
    p.add_argument("--spline-neighbors", type=int, nargs="+", default=[16],
                   help="TAP_SPLINE_NEIGHBORS values to try for tap_spline")
    p.add_argument("--scipy", action="store_true", help="also scipy's griddata (linear, cubic)")
    args = p.parse_args()

    inrs, _ = get_dataset(args.dataset, args.split, root=args.root).batch(list(range(args.count)))
    query = PointSet.grid((args.side, args.side), dtype=D64)
    truth = sample(inrs, query).values.double()  # (B, M, C)
    print(f"{args.count} INRs of {args.dataset}/{args.split}, {args.points} Sobol points, taps on the "
          f"{args.side}x{args.side} cell centres; field std {float(truth.std()):.4f}")
    rmse = lambda est: float((est - truth).pow(2).mean().sqrt())  # noqa: E731
    for seed in args.seeds:
        coords = sobol(args.points, 2, seed=seed, dtype=D64)
        values = sample(inrs, PointSet(coords)).values.double()  # (B, N, C)
        mean = tap_estimate(values, coords, args.side, "tap_mean")
        print(f"seed {seed}  tap_mean                   {rmse(mean):.4f}")
        default = dict(conv_module.TAP_FIT_RIDGE)
        for estimator in ("tap_linear", "tap_quadratic"):
            degree = conv_module.TAP_ESTIMATORS[estimator]
            for ridge in args.ridges:
                conv_module.TAP_FIT_RIDGE = {**default, degree: ridge}
                est = tap_estimate(values, coords, args.side, estimator)
                mark = " (default)" if ridge == default[degree] else ""
                print(f"seed {seed}  {estimator + ', ridge ' + format(ridge, 'g'):<26s} {rmse(est):.4f}{mark}")
        conv_module.TAP_FIT_RIDGE = default
        default_k = conv_module.TAP_SPLINE_NEIGHBORS
        for k in args.spline_neighbors:
            conv_module.TAP_SPLINE_NEIGHBORS = k
            spline = tap_estimate(values, coords, args.side, "tap_spline")
            mark = " (default)" if k == default_k else ""
            print(f"seed {seed}  {'tap_spline, ' + str(k) + ' points':<26s} {rmse(spline):.4f}{mark}")
        conv_module.TAP_SPLINE_NEIGHBORS = default_k
        if args.scipy:
            from scipy.interpolate import griddata
            pts, q = coords.numpy(), query.coords.numpy()
            for method in ("linear", "cubic"):
                est = np.stack([np.stack([griddata(pts, v[:, c], q, method=method, fill_value=0.0)
                                          for c in range(v.shape[1])], -1) for v in values.numpy()])
                print(f"seed {seed}  scipy griddata {method:<11s} {rmse(torch.from_numpy(est)):.4f}")


if __name__ == "__main__":
    main()
