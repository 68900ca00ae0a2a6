"""INRDataModule / PixelDataModule: what a step receives, checked against plain loops."""

import pytest
import torch

from inrnet.inr import PixelINR, SirenFamily
from inrnet.inr.base import INRBatch
from inrnet.lightning import IGNORE_INDEX, InMemoryINRDataset, INRDataModule, PixelDataModule
from inrnet.sampling import grid


def _siren_data(n=6, seed=0):
    family = SirenFamily(in_features=2, out_features=1, width=8, depth=2)
    params = family.init_params(n, generator=torch.Generator().manual_seed(seed))
    return InMemoryINRDataset(INRBatch(family, params), torch.arange(n) % 3)


def test_batch_values_are_each_inr_at_the_step_points_mapped_to_unit_range():
    ds = _siren_data()
    dm = INRDataModule({"train": ds, "test": ds}, batch_size=4, train_sampler="sobol:32", test_samplers=["grid:4x4"])
    dm.setup("fit")
    inrs, labels = ds.batch([4, 1, 3])
    batch = dm.make_batch(inrs, labels, "train")
    pts = batch.inputs.points
    lo, hi = ds.family.value_range
    for b, i in enumerate([4, 1, 3]):  # reference: one INR at a time, one point at a time, float64
        single = ds.inrs[i]
        for j in range(pts.n):
            with torch.no_grad():
                ref = (single.double()(pts.coords[j:j + 1].double())[0, 0] - lo) / (hi - lo)
            assert abs(float(batch.inputs.values[b, j, 0]) - float(ref)) < 1e-5
    assert torch.equal(batch.target, labels) and batch.setting == "sobol_32" and batch.query is None
    again = dm.make_batch(inrs, labels, "train")
    assert not torch.equal(again.inputs.points.coords, pts.coords)  # fresh scramble per step
    test = dm.make_batch(inrs, labels, "test")
    assert test.inputs.points is dm.make_batch(inrs, labels, "test").inputs.points  # fixed eval points
    assert test.inputs.points.lattice.shape == (4, 4) and test.setting == "grid_4x4"


def test_pixel_datamodule_gives_images_and_needs_grids(memory_data):
    dm = PixelDataModule(memory_data, batch_size=4, test_samplers=["grid:8x8", "grid:16x16"])
    dm.setup("test")
    inrs, labels = memory_data["test"].batch([0, 1])
    ref = inrs.params["values"]  # (2, 1, 8, 8)
    one = dm.make_batch(inrs, labels, "test", 0)
    torch.testing.assert_close(one.inputs, ref, rtol=0, atol=0)
    two = dm.make_batch(inrs, labels, "test", 1)
    assert two.inputs.shape == (2, 1, 16, 16) and two.setting == "grid_16x16"
    with pytest.raises(ValueError, match="grid samplers"):
        PixelDataModule(memory_data, train_sampler="sobol:64")


def test_segmentation_batches_score_at_label_cell_centres():
    g = torch.Generator().manual_seed(0)
    maps = torch.randint(0, 3, (2, 6, 4), generator=g)
    maps[0, 0, 0] = IGNORE_INDEX
    ds = InMemoryINRDataset(PixelINR(torch.rand(2, 1, 3, 2, generator=g), "linear"), maps)
    dm = INRDataModule({"train": ds, "test": ds}, train_sampler="sobol:16", test_samplers=["grid:3x2"],
                       train_label_points=5, eval_label_stride=2)
    dm.setup()
    inrs, labels = ds.batch([0, 1])
    test = dm.make_batch(inrs, labels, "test")
    centres = grid((6, 4))
    kept = [(r, c) for r in range(0, 6, 2) for c in range(0, 4, 2)]
    assert test.query.n == len(kept)
    for m, (r, c) in enumerate(kept):  # label (r, c) sits at the centre of its cell
        assert torch.equal(test.query.coords[m], centres[r * 4 + c])
        assert torch.equal(test.target[:, m], maps[:, r, c])
    train = dm.make_batch(inrs, labels, "train")
    assert train.query.n == 5
    for m in range(5):
        rc = (centres == train.query.coords[m]).all(1).nonzero().item()
        assert torch.equal(train.target[:, m], maps.flatten(1)[:, rc])
    assert dm.input_spec() == {"dim": 2, "channels": 1, "label_dims": 2, "max_label": int(maps[maps != 255].max())}


def test_setup_holds_out_validation_and_limits(memory_data):
    dm = INRDataModule(memory_data, val_size=4, limit_train=12, test_samplers=["grid:8x8"])
    dm.setup("fit")
    train, val = dm.data["train"], dm.data["val"]
    assert (len(train), len(val)) == (8, 4)
    chosen = set(train.base.indices[train.indices].tolist()) | set(val.base.indices[val.indices].tolist())
    assert len(chosen) == 12  # disjoint, all from the 12-item subset
    assert len(dm.val_dataloader()) == 1 and len(dm.train_dataloader()) == 1  # batch_size 64
    assert dm.input_spec() == {"dim": 2, "channels": 1, "label_dims": 0, "max_label": 3}
    no_val = INRDataModule(memory_data)
    no_val.setup("fit")
    assert no_val.val_dataloader is None  # Lightning then runs no validation loop


def test_bad_configs_fail_early(memory_data):
    with pytest.raises(ValueError, match="look like"):
        INRDataModule(memory_data, train_sampler="sobol")
    with pytest.raises(ValueError, match="take a list"):
        INRDataModule(memory_data, test_samplers="grid:8x8")
    with pytest.raises(ValueError, match="no split 'test'"):
        INRDataModule({"train": memory_data["train"]}).setup("test")
    rgb = InMemoryINRDataset.from_images(torch.rand(2, 3, 8, 8), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"disagree.*train: \(2, 1\).*test: \(2, 3\)"):
        INRDataModule({"train": memory_data["train"], "test": rgb}).setup()
