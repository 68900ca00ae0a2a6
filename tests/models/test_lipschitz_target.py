"""INRNetClassifier's ``lipschitz_target``: certified at most the target on every point set, trained or not;
the default is today's model."""

import pytest
import torch
from torch import nn

from inrnet import Field, PointSet
from inrnet.lipschitz import conv_matrix, lipschitz_bound
from inrnet.models import create_model, model_config
from inrnet.models.inr_nets import layer_budget
from inrnet.nn.constrained import LIPSCHITZ_MARGIN, LipschitzConv, LipschitzLinear, atom_schur_bound
from inrnet.nn import BatchNorm, BSplineConv, GlobalAvgPool, MLPConv
from inrnet.neighbors import Support
from inrnet.sampling import sobol

F64 = torch.float64
SMALL = {"widths": (4, 6), "hidden": 12, "base_resolution": 16}


def _points():
    return [PointSet.grid((16, 16), dtype=F64), PointSet.grid((11, 13), dtype=F64),
            PointSet(sobol(300, 2, seed=9, dtype=F64))]


def test_default_is_the_unconstrained_model():
    model = create_model("inrnet4", **SMALL)
    assert model.lipschitz_target is None and "lipschitz_target" not in model_config(model)
    assert not any(isinstance(m, (LipschitzConv, LipschitzLinear)) for m in model.modules())
    assert sum(isinstance(m, BatchNorm) for m in model.modules()) == 4
    assert "features.0.conv.weight" in model.state_dict() and "features.0.norm.running_var" in model.state_dict()


def test_constrained_model_rebuilds_from_its_config():
    torch.manual_seed(0)
    model = create_model("inrnet4", lipschitz_target=20.0, latent="lattice", support_extent="basis", **SMALL).eval()
    config = model_config(model)
    assert config["lipschitz_target"] == 20.0
    rebuilt = create_model(**config).eval()
    rebuilt.load_state_dict(model.state_dict())
    assert not any(isinstance(m, BatchNorm) for m in model.modules())
    field = Field(torch.rand(2, 200, 1), PointSet(sobol(200, 2, seed=1)))
    torch.testing.assert_close(rebuilt(field), model(field), rtol=0, atol=0)


def test_layer_budget_splits_the_target():
    b, c = layer_budget(10.0, 2, 1)
    assert 2.0 ** -1 * b ** 5 == pytest.approx(10.0) and 1 + c * c == pytest.approx(b)
    assert layer_budget(3.0, 2, 0)[1] == 0.0
    with pytest.raises(ValueError, match="residual"):
        layer_budget(0.4, 2, 1)
    with pytest.raises(ValueError, match="positive"):
        layer_budget(0.0, 2, 0)
    with pytest.raises(ValueError, match="atoms"):
        create_model("inrnet2", conv="mlp", n_bins=None, lipschitz_target=5.0)


@pytest.mark.parametrize("name,kw,target", [("inrnet2", {}, 5.0), ("inrnet4", {}, 30.0),
                                            ("inrnet4", {"latent": "lattice", "support_extent": "basis"}, 8.0),
                                            ("inrnet2", {"conv": "mlp", "n_bins": 16}, 5.0)])
def test_trained_constrained_model_is_certified_within_its_target(name, kw, target):
    """A few optimiser steps on other point sets move the weights; on grids and Sobol points alike the
    certified bound stays at most the target, and so does every normalised stage's factor its budget."""
    torch.manual_seed(1)
    model = create_model(name, lipschitz_target=target, **kw, **SMALL)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for step in range(3):
        points = PointSet(sobol(256, 2, seed=step))
        loss = -model(Field(torch.rand(4, 256, 1), points)).std()  # push towards large logits
        opt.zero_grad()
        loss.backward()
        opt.step()
    model = model.double().eval()
    budget, inner = layer_budget(target, len(SMALL["widths"]), 1 if name == "inrnet4" else 0)
    for points in _points():
        bound = lipschitz_bound(model, points)
        assert bound.total <= target
        for stage in bound.layers:
            if stage.kind.startswith(("LipschitzConv", "LipschitzLinear", "_Residual")):
                assert stage.factor <= budget * (1 + 1e-9), stage.name
            if stage.kind.startswith("LipschitzConv"):
                assert stage.candidates["atoms"] == pytest.approx(budget * (1 - LIPSCHITZ_MARGIN), rel=1e-8)
            for part in stage.parts:
                if part.kind.startswith("LipschitzConv"):
                    assert part.factor <= inner * (1 + 1e-9)


CONVS = {
    "bspline-stride2": lambda: BSplineConv(2, 4, 3, 2 / 8, stride=2),
    "bspline-basis-mean": lambda: BSplineConv(3, 2, 3, 2 / 8, support_extent="basis", estimator="mean"),
    "bspline-symmetric-groups": lambda: BSplineConv(4, 4, 3, 2 / 8, padding="symmetric", groups=2),
    "mlp-binned": lambda: MLPConv(2, 3, Support((1.5 * 2 / 8,) * 2), n_bins=16),
}


@pytest.mark.parametrize("kind", list(CONVS))
def test_atom_schur_bound_is_an_upper_bound(kind):
    """Never below the exact operator norm, on a grid, on Sobol points and on points with uneven weights."""
    torch.manual_seed(2)
    conv = CONVS[kind]().double().eval().requires_grad_(False)
    g = torch.Generator().manual_seed(3)
    coords = torch.rand(70, 2, generator=g, dtype=F64) * 2 - 1
    uneven = PointSet(coords, torch.rand(70, generator=g, dtype=F64) * 0.1 + 0.01)
    for points in (PointSet.grid((8, 8), dtype=F64), PointSet(sobol(64, 2, seed=0, dtype=F64)), uneven):
        true = float(torch.linalg.matrix_norm(conv_matrix(conv, points), ord=2))
        assert float(atom_schur_bound(conv, points)) >= true * (1 - 1e-12)
        assert float(atom_schur_bound(conv, points)) <= 10 * true


def test_lipschitz_conv_scale_normalises_on_each_point_set():
    conv = LipschitzConv(BSplineConv(1, 3, 3, 2 / 8, stride=2), budget=1.5).double().eval().requires_grad_(False)
    assert conv.conv.bias is None and isinstance(conv.bias, nn.Parameter)
    for points in _points():
        queries = conv.output_points(points)
        s = conv.scale(points, queries)
        assert float(s * atom_schur_bound(conv.conv, points, queries)) == pytest.approx(1.5 * (1 - LIPSCHITZ_MARGIN))
        assert lipschitz_bound(conv, points).total <= 1.5
    lin = LipschitzLinear(7, 5, budget=2.0).requires_grad_(False)
    sigma = float(torch.linalg.matrix_norm(lin.normalized_weight(), ord=2))
    assert sigma == pytest.approx(2.0 * (1 - LIPSCHITZ_MARGIN))
    head = nn.Sequential(GlobalAvgPool(), lin).double().eval()
    assert lipschitz_bound(head, PointSet.grid((4, 4)), in_channels=7).layers[1].factor == pytest.approx(sigma)
