"""Property asserts for INR-Net layers, reused by inrnet's tests and available to users.

* [`assert_matches_discrete`][inrnet.testing.asserts.assert_matches_discrete]: on grid points a layer equals its discrete twin,
  values and output positions.
* [`assert_converges`][inrnet.testing.asserts.assert_converges]: a quantity computed on Sobol point sets of growing size
  converges to its limit at a QMC-like rate (paper Property 3).
* [`gradcheck_field`][inrnet.testing.asserts.gradcheck_field]: float64 ``torch.autograd.gradcheck`` through a layer's input
  values and parameters.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from inrnet.field import Field, PointSet
from inrnet.nn.geometry import as_tuple
from inrnet.sampling.points import sobol

__all__ = ["grid_field", "discrete_positions", "assert_matches_discrete", "assert_converges", "gradcheck_field"]


def grid_field(x: Tensor) -> Field:
    """An image batch sampled exactly on its grid: ``Field(x.flatten(2).transpose(1, 2), grid(shape))``.

    Args:
        x: Tensor[B, C, *shape].

    Returns:
        Field with values Tensor[B, prod(shape), C] on ``PointSet.grid(shape)``.
    """
    if x.dim() < 3:
        raise ValueError(f"expected an image batch Tensor[B, C, *shape], got {tuple(x.shape)}")
    points = PointSet.grid(x.shape[2:], dtype=x.dtype, device=x.device)
    return Field(x.flatten(2).transpose(1, 2), points)  # (B, N, C)


def _discrete_geometry(module: nn.Module, d: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Stride and offset of a torch window layer: output pixel ``i`` sits at input pixel ``stride * i + offset``.

    The output position is the window tap ``(k - 1) // 2`` (the conventions of inrnet's
    window layers); layers without a ``stride`` attribute keep positions.
    """
    if not hasattr(module, "stride"):
        return (1,) * d, (0,) * d
    stride = as_tuple(module.stride, d)
    kernel = as_tuple(getattr(module, "kernel_size", 1), d)
    dilation = as_tuple(getattr(module, "dilation", 1), d)
    padding = getattr(module, "padding", 0)
    if padding == "same":
        return stride, (0,) * d
    padding = (0,) * d if padding == "valid" else as_tuple(padding, d)
    return stride, tuple(dl * ((k - 1) // 2) - p for k, dl, p in zip(kernel, dilation, padding))


def discrete_positions(shape: Sequence[int], out_shape: Sequence[int], stride: Sequence[int],
                       offset: Sequence[int], dtype: torch.dtype = torch.float64) -> Tensor:
    """Coordinates of the output pixels of a strided discrete layer on ``grid(shape)``.

    Returns:
        Tensor[prod(out_shape), d]: output pixel ``i`` at the centre of input pixel
        ``stride * i + offset`` along each axis, in C order.
    """
    axes = [-1.0 + (2.0 * (s * torch.arange(m, dtype=torch.float64) + o) + 1.0) / n
            for n, m, s, o in zip(shape, out_shape, stride, offset)]
    mesh = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([g.reshape(-1) for g in mesh], -1).to(dtype)  # (M, d)


def assert_matches_discrete(layer: nn.Module, discrete_layer: nn.Module, x: Tensor, *, atol: float | None = None,
                            rtol: float | None = None, stride: Sequence[int] | None = None,
                            offset: Sequence[int] | None = None, check_points: bool = True):
    """Assert that ``layer`` on grid points reproduces ``discrete_layer`` on the image batch.

    The field is ``x`` sampled exactly on ``PointSet.grid(shape)``. A Field output is
    compared with the discrete output flattened the same way, and (``check_points``) its
    point coordinates with the discrete output's pixel positions: pixel ``i`` at input
    pixel ``stride * i + offset``, inferred from ``discrete_layer.stride / kernel_size /
    padding / dilation`` unless given. A Tensor output is compared as is.

    Args:
        layer: the continuous layer, ``Field -> Field`` or ``Field -> Tensor``.
        discrete_layer: its twin, ``Tensor[B, C, *shape] -> Tensor``.
        x: Tensor[B, C, *shape], the input image batch.
        atol: absolute tolerance (default: ``torch.testing.assert_close``'s for the dtype).
        rtol: relative tolerance (default likewise).
        stride: the discrete output stride, one int per axis, when it cannot be read off
            ``discrete_layer`` (e.g. a Sequential).
        offset: the discrete output offset, one int per axis, likewise.

    Returns:
        The continuous layer's output.
    """
    field = grid_field(x)
    out = layer(field)
    ref = discrete_layer(x)
    if not isinstance(out, Field):
        assert tuple(out.shape) == tuple(ref.shape), f"output {tuple(out.shape)} != discrete {tuple(ref.shape)}"
        torch.testing.assert_close(out, ref, atol=atol, rtol=rtol)
        return out
    ref_values = ref.flatten(2).transpose(1, 2)  # (B, M, C)
    assert tuple(out.values.shape) == tuple(ref_values.shape), (
        f"output values {tuple(out.values.shape)} != discrete output {tuple(ref.shape)} "
        f"flattened to {tuple(ref_values.shape)}")
    torch.testing.assert_close(out.values, ref_values, atol=atol, rtol=rtol)
    if check_points:
        d = x.dim() - 2
        inferred = _discrete_geometry(discrete_layer, d)
        stride = as_tuple(stride, d) if stride is not None else inferred[0]
        offset = as_tuple(offset, d) if offset is not None else inferred[1]
        expected = discrete_positions(x.shape[2:], ref.shape[2:], stride, offset)
        torch.testing.assert_close(out.points.coords.double().cpu(), expected, atol=1e-6, rtol=0,
                                   msg=lambda m: f"output points are not the discrete output positions "
                                                 f"(stride {stride}, offset {offset}): {m}")
    return out


def assert_converges(fn: Callable[[PointSet], Tensor | float], ns: Sequence[int], *,
                     limit: Tensor | float | None = None, dim: int = 2, seeds: Sequence[int] = tuple(range(8)),
                     max_slope: float = -0.5, slack: float = 2.0, atol: float = 1e-12,
                     sampler: Callable[[int, int], PointSet] | None = None) -> Tensor:
    """Assert that ``fn`` on Sobol point sets of growing size converges to ``limit``.

    The error at each size is the root mean square over independently scrambled point sets
    of ``max |fn(points) - limit|``. It must shrink overall, may grow by at most a factor
    ``slack`` from one size to the next (QMC errors of single sizes are erratic), and its
    fitted log-log slope against ``n`` must be at most ``max_slope`` (-0.5 is the Monte
    Carlo rate; QMC achieves about -1 on smooth integrands).

    Args:
        fn: ``PointSet -> Tensor`` (or float), the quantity.
        ns: increasing point counts (powers of two suit Sobol points).
        limit: the exact value; default the mean value at the largest ``n``, against which
            the other sizes are measured.
        dim: dimension of the default Sobol points (float64, on ``[-1, 1]^dim``).
        seeds: scrambles to average over.
        max_slope: the largest allowed fitted exponent of the error against ``n``.
        slack: the largest allowed growth factor of the error between consecutive sizes.
        sampler: ``(n, seed) -> PointSet`` replacing the default Sobol points.
        atol: errors all below this count as exact convergence.

    Returns:
        Tensor[len(ns)] (or one fewer without ``limit``), the RMS errors.
    """
    ns = list(ns)
    if len(ns) < 2 + (limit is None) or any(b <= a for a, b in zip(ns, ns[1:])):
        raise ValueError(f"need at least {2 + (limit is None)} increasing point counts, got {ns}")
    sampler = sampler or (lambda n, seed: PointSet(sobol(n, dim, seed=seed, dtype=torch.float64)))
    values = [[torch.as_tensor(fn(sampler(n, s)), dtype=torch.float64).detach().cpu() for s in seeds] for n in ns]
    if limit is None:
        ref, values, ns = torch.stack(values[-1]).mean(0), values[:-1], ns[:-1]
    else:
        ref = torch.as_tensor(limit, dtype=torch.float64).cpu()
    errors = torch.tensor([math.sqrt(np.mean([(v - ref).abs().max().item() ** 2 for v in row])) for row in values])
    if bool((errors <= atol).all()):
        return errors
    assert errors[-1] < errors[0], f"errors do not decrease over n = {ns}: {errors.tolist()}"
    grows = [i for i in range(len(ns) - 1) if errors[i + 1] > slack * errors[i]]
    assert not grows, f"error grows from n = {ns[grows[0]]} to {ns[grows[0] + 1]}: {errors.tolist()}"
    slope = float(np.polyfit(np.log(ns), np.log(np.maximum(errors.numpy(), atol)), 1)[0])
    assert slope <= max_slope, f"error decays like n^{slope:.2f}, slower than n^{max_slope}: {errors.tolist()}"
    return errors


def gradcheck_field(layer: nn.Module, field: Field, *, params: bool = True, **kwargs) -> bool:
    """Float64 ``torch.autograd.gradcheck`` of ``layer`` through ``field.values`` (and its parameters).

    A float64 copy of ``layer`` is checked, so the layer itself is left untouched; the
    points are converted to float64 (a fresh PointSet, without parent links, if they were
    not float64 already).

    Args:
        layer: ``Field -> Field`` or ``Field -> Tensor``.
        field: the input, values Tensor[B, N, C] (keep it tiny).
        params: also check the gradients of the layer's trainable parameters.
        kwargs: passed to ``torch.autograd.gradcheck`` (e.g. ``atol``, ``fast_mode``).

    Returns:
        True (gradcheck raises on a mismatch).
    """
    module = copy.deepcopy(layer).double()
    points = field.points.to(dtype=torch.float64)
    values = field.values.detach().double().requires_grad_()
    named = [(n, p.detach().clone().requires_grad_()) for n, p in module.named_parameters() if p.requires_grad]
    named = named if params else []
    names = [n for n, _ in named]

    def fn(v: Tensor, *ps: Tensor) -> Tensor:
        out = torch.func.functional_call(module, dict(zip(names, ps)), (Field(v, points),))
        return out.values if isinstance(out, Field) else out
    return torch.autograd.gradcheck(fn, (values, *[p for _, p in named]), **kwargs)
