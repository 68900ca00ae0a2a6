"""INRDataModule's training augmentations: coordinate transforms and point dropout, from code and configs."""

from pathlib import Path

import pytest
import torch
import yaml

from inrnet.cli import build
from inrnet.inr import PixelINR, sample
from inrnet.lightning import IGNORE_INDEX, InMemoryINRDataset, INRDataModule
from inrnet.nn import Compose, PointDropout, RandomAffine, RandomFlip
from inrnet.sampling import grid

CONFIG = Path(__file__).resolve().parents[2] / "experiments" / "configs" / "fashion_mnist" / "inrnet4_augment.yaml"


def _dm(data, **kw):
    return INRDataModule(data, batch_size=4, train_sampler="sobol:32", test_samplers=["grid:8x8"], **kw)


def test_training_batches_are_the_inrs_at_transformed_coords_eval_batches_are_not(memory_data):
    plain, flipped = _dm(memory_data), _dm(memory_data, train_transforms=[RandomFlip(dims=(1,), p=1.0)])
    inrs, labels = memory_data["train"].batch([0, 1, 2])
    ours, theirs = flipped.make_batch(inrs, labels, "train"), plain.make_batch(inrs, labels, "train")
    x = theirs.inputs.points.coords  # the same scramble: the samplers are seeded alike
    assert torch.equal(ours.inputs.points.coords, x)
    mirrored = x * torch.tensor([1.0, -1.0])  # (N, d)
    torch.testing.assert_close(ours.inputs.values, sample(inrs, mirrored).values)  # PixelINR values are in [0, 1]
    assert not torch.allclose(ours.inputs.values, theirs.inputs.values)
    for stage in ("val", "test", "predict"):
        torch.testing.assert_close(flipped.make_batch(inrs, labels, stage).inputs.values,
                                   plain.make_batch(inrs, labels, stage).inputs.values, rtol=0, atol=0)
    # on the grid, a flip of the pixel INR is torch.flip of the image, for the test grid too
    test = flipped.make_batch(inrs, labels, "test").inputs.values.reshape(3, 8, 8)
    torch.testing.assert_close(test, inrs.params["values"][:, 0])


def test_one_draw_per_inr_from_the_datamodules_seeded_generator(memory_data):
    def batch(seed):
        dm = _dm(memory_data, seed=seed, train_transforms=[Compose([RandomAffine(max_rotation=30.0)])])
        return dm, dm.make_batch(*memory_data["train"].batch(list(range(8))), "train").inputs.values

    (dm, one), (_, two), (_, other) = batch(0), batch(0), batch(1)
    assert torch.equal(one, two) and not torch.equal(one, other)
    state = dm.state_dict()["augment_rng"]
    assert not torch.equal(state, torch.Generator().manual_seed(2).get_state())  # it drew
    inrs, _ = memory_data["train"].batch([0, 0])
    same = _dm(memory_data, train_transforms=[RandomAffine(max_rotation=30.0)]).make_batch(inrs, torch.zeros(2),
                                                                                              "train")
    assert not torch.allclose(same.inputs.values[0], same.inputs.values[1])  # the same INR twice, two rotations


def test_point_dropout_keeps_a_subset_of_training_points_only(memory_data):
    dm = _dm(memory_data, point_dropout=0.5)
    inrs, labels = memory_data["train"].batch([0, 1])
    train = dm.make_batch(inrs, labels, "train").inputs
    parent = train.points.parent
    assert parent is not None and 0 < train.points.n < parent.n == 32
    torch.testing.assert_close(train.points.weights.sum(), parent.weights.sum())
    torch.testing.assert_close(train.values, sample(inrs, train.points.coords).values)
    assert dm.make_batch(inrs, labels, "test").inputs.points.n == 64


def test_segmentation_targets_are_the_labels_at_the_same_transform():
    g = torch.Generator().manual_seed(0)
    images, maps = torch.rand(3, 1, 6, 4, generator=g), torch.randint(0, 3, (3, 6, 4), generator=g)
    ds = InMemoryINRDataset(PixelINR(images, "linear"), maps)
    inrs, labels = ds.batch([0, 1, 2])
    data = {"train": ds, "test": ds}
    flip = INRDataModule(data, train_sampler="grid:6x4", test_samplers=["grid:6x4"],
                         train_transforms=[RandomFlip(dims=(0, 1), p=1.0)])
    batch = flip.make_batch(inrs, labels, "train")
    assert torch.equal(batch.query.coords, grid((6, 4)))  # scored at the untransformed label points
    assert torch.equal(batch.target, maps.flip(1, 2).flatten(1))  # image and labels flipped alike
    torch.testing.assert_close(batch.inputs.values[..., 0], images[:, 0].flip(1, 2).flatten(1))
    assert torch.equal(flip.make_batch(inrs, labels, "test").target, maps.flatten(1))
    # 10 random label points, and a shift of one cell off the domain: those targets are void
    shift = INRDataModule(data, train_sampler="sobol:16", test_samplers=["grid:6x4"], train_label_points=10,
                          train_transforms=[lambda x: x + torch.tensor([2.0 / 6, 0.0])])
    batch = shift.make_batch(inrs, labels, "train")
    row = ((batch.query.coords[:, 0] + 1) * 3).floor().long()  # (M,) the label row of each query point
    col = ((batch.query.coords[:, 1] + 1) * 2).floor().long()
    for m in range(10):
        want = maps[:, row[m] + 1, col[m]] if row[m] < 5 else torch.full((3,), IGNORE_INDEX)
        assert torch.equal(batch.target[:, m], want)


def test_bad_augmentations_fail_early(memory_data):
    with pytest.raises(ValueError, match="generator of its own"):
        _dm(memory_data, train_transforms=[RandomFlip(generator=3)])
    with pytest.raises(ValueError, match="generator of its own"):
        _dm(memory_data, train_transforms=[Compose([RandomFlip(generator=3)])])
    with pytest.raises(ValueError, match="use point_dropout"):
        _dm(memory_data, train_transforms=[PointDropout(0.2)])
    with pytest.raises(TypeError, match="callables"):
        _dm(memory_data, train_transforms=["flip"])
    with pytest.raises(ValueError, match=r"point_dropout must be in \[0, 1\)"):
        _dm(memory_data, point_dropout=1.0)
    dm = _dm(memory_data, train_transforms=[lambda x: x[..., :1]])
    with pytest.raises(ValueError, match="train_transforms must map coords"):
        dm.make_batch(*memory_data["train"].batch([0]), "train")


def test_the_augment_config_builds_its_transforms(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, _, dm = build(["--config", str(CONFIG), "--trainer.logger", "false"])
    spec = yaml.safe_load(CONFIG.read_text())["data"]["init_args"]
    assert [type(t) for t in dm.train_transforms] == [RandomFlip, RandomAffine]
    assert dm.train_transforms[0].p == 0.5 and dm.train_transforms[1].max_rotation == 10.0
    assert all(t.generator is dm._augment_rng for t in dm.train_transforms)
    assert dm.point_dropout == spec["point_dropout"] == 0.1
