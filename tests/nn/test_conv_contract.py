"""The kernel contract of `ContinuousConv`: the hooks are declared on the base, the fused path
is chosen by what a subclass implements (not by a sentinel), a kernel that implements
neither contract or half of one fails naming what is missing, and one kernel's fused and
per-pair paths agree."""

import pytest
import torch
from torch import nn

import inrnet.nn.conv
import inrnet.nn.functional
from inrnet.field import Field, PointSet
from inrnet.neighbors import Support
from inrnet.nn.gather import GatherPlan, atom_conv
from inrnet.nn.bspline_conv import BSplineConv
from inrnet.nn.conv import ContinuousConv
from inrnet.nn.learned_conv import LegendreConv, MLPConv
from inrnet.sampling import sobol

D64 = torch.float64


class BoxConv(ContinuousConv):
    """One atom, constant on the support: ``K(delta) = W / |S|``, the support's mean times ``W``."""

    def __init__(self, in_channels, out_channels, half_width, **kwargs):
        super().__init__(in_channels, out_channels, Support((half_width, half_width)), **kwargs)
        self.weight = nn.Parameter(torch.randn(1, in_channels // self.groups, out_channels))

    @property
    def num_atoms(self):
        return 1

    def expansion_key(self):
        return ("box",)

    def expand(self, offsets):
        e = offsets.shape[0]
        return (torch.zeros(e, 1, dtype=torch.long, device=offsets.device),  # (E, 1): atom 0
                torch.ones(e, 1, dtype=offsets.dtype, device=offsets.device))

    def atoms(self):
        return self.weight / self.support.volume


class PerPairBoxConv(BoxConv):
    """The same kernel forced onto the per-pair path (the base's `pair_kernel` from its atoms)."""

    @property
    def has_atoms(self):
        return False


def _field(c=4, n=80, b=2):
    return Field(torch.randn(b, n, c, dtype=D64, requires_grad=True), PointSet(sobol(n, 2, seed=4, dtype=D64)))


def test_the_hooks_are_declared_on_the_base():
    for hook in ("has_atoms", "num_atoms", "expansion_key", "expand", "atoms", "pair_kernel", "reflect_inset"):
        assert getattr(ContinuousConv, hook).__doc__, hook
    assert isinstance(ContinuousConv.num_atoms, property) and isinstance(ContinuousConv.has_atoms, property)


def test_the_fused_path_is_chosen_by_implementing_expand():
    assert BSplineConv(2, 2, 3, 0.1).has_atoms and LegendreConv(2, 2, 0.2).has_atoms
    assert BoxConv(2, 2, 0.2).has_atoms and not PerPairBoxConv(2, 2, 0.2).has_atoms
    mlp = MLPConv(2, 2, 0.2, n_bins=8)
    assert mlp.has_atoms
    mlp.n_bins = None  # the exact kernel: no atoms
    assert not mlp.has_atoms


@pytest.mark.parametrize("estimator", ["sum", "mean"])
@pytest.mark.parametrize("groups", [1, 2])
def test_fused_and_per_pair_paths_of_one_kernel_agree(estimator, groups):
    fused = BoxConv(4, 6, 0.2, groups=groups, estimator=estimator).double()
    per_pair = PerPairBoxConv(4, 6, 0.2, groups=groups, estimator=estimator).double()
    per_pair.load_state_dict(fused.state_dict())
    field = _field()
    a, b = fused(field).values, per_pair(field).values
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(a)
    for x, y in zip(torch.autograd.grad(a, (field.values, fused.weight), g),
                    torch.autograd.grad(b, (field.values, per_pair.weight), g)):
        torch.testing.assert_close(x, y, rtol=1e-11, atol=1e-11)
    kinds = {k[0] for k in field.points._cache}
    assert {"conv-plan", "conv-weights"} <= kinds


def test_the_gather_plan_is_built_once_per_point_set():
    layer = BoxConv(4, 6, 0.2).double()
    points = _field().points
    plan = layer.gather_plan(points, points)
    assert isinstance(plan, GatherPlan) and layer.gather_plan(points, points) is plan
    assert (plan.num_out, plan.num_atoms, plan.num_in) == (80, 1, 80)
    layer(Field(torch.randn(1, 80, 4, dtype=D64), points))
    assert sum(k[0] == "conv-plan" for k in points._cache) == 1


def test_a_kernel_without_either_contract_fails_at_construction():
    class NoKernel(ContinuousConv):
        pass

    with pytest.raises(TypeError, match="NoKernel defines no kernel: implement expand.*or pair_kernel"):
        NoKernel(2, 2, Support((0.2, 0.2)))


@pytest.mark.parametrize("missing", ["num_atoms", "expansion_key"])
def test_half_an_atom_contract_names_what_is_missing(missing):
    class Partial(BoxConv):
        pass

    setattr(Partial, missing, getattr(ContinuousConv, missing))
    with pytest.raises(NotImplementedError, match=f"Partial has atoms but does not define {missing}"):
        Partial(4, 6, 0.2)(_field())


def test_conv_atoms_is_gone_atom_conv_is_the_one_function():
    assert not hasattr(inrnet.nn.conv, "conv_atoms") and not hasattr(inrnet.nn.functional, "conv_atoms")
    assert inrnet.nn.functional.atom_conv is atom_conv
