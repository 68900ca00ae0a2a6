"""Sampler specs, opening datasets by path, in-memory and subset datasets."""

import pytest
import torch
import torch.nn.functional as F

from inrnet.inr import sample
from inrnet.lightning import InMemoryINRDataset, SubsetINRDataset, open_dataset, parse_sampler, setting_name
from inrnet.sampling import grid


def test_parse_sampler_specs():
    s = parse_sampler("sobol:100", seed=3)
    assert (s.scheme, s.n, s.dim, s.rescramble) == ("sobol", 100, 2, True)
    g = parse_sampler("grid:4x6")
    assert g.shape == (4, 6) and g().n == 24 and g().lattice is not None
    assert parse_sampler(" shrunk : 64 ", dim=3).dim == 3
    assert parse_sampler("mc:10").scheme == "mc" and parse_sampler("halton:10").scheme == "halton"
    assert setting_name("grid:28x28") == "grid_28x28" and setting_name("sobol:784") == "sobol_784"
    assert setting_name(g) == "grid_4x6"
    mixed = parse_sampler("sobol: 784 - 3136", seed=1)
    assert mixed.n_range == (784, 3136) and 784 <= mixed().n <= 3136
    assert setting_name(mixed) == "sobol_784-3136" and setting_name("sobol:784-3136") == "sobol_784-3136"
    parts = parse_sampler("grid:8x8 | sobol:64-128", seed=2)
    assert [p.scheme for p in parts.samplers] == ["grid", "sobol"] and parts.samplers[1].n_range == (64, 128)
    draws = [parts() for _ in range(30)]
    assert any(p.lattice is not None for p in draws) and any(p.lattice is None for p in draws)  # both parts
    assert setting_name(parts) == "grid_8x8+sobol_64-128" == setting_name("grid:8x8|sobol:64-128")
    with pytest.raises(ValueError, match="training sampler"):
        parse_sampler("grid:8x8|sobol:64", rescramble=False)
    with pytest.raises(ValueError, match="3 axes"):
        parse_sampler("grid:8x8x8|sobol:64", dim=2)


@pytest.mark.parametrize("spec,match", [("sobol", "look like"), ("sobol:0", "positive"), ("foo:10", "unknown"),
                                        ("sobol:4x4", "one number"), ("grid:4x4x4", "3 axes"),
                                        ("grid:4-8", "not a range"), ("sobol:64-32", "range")])
def test_parse_sampler_rejects(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_sampler(spec, dim=2)


def test_training_sampler_rescrambles_and_eval_sampler_is_fixed():
    train_a, train_b = parse_sampler("sobol:64", seed=0), parse_sampler("sobol:64", seed=0)
    first, second = train_a(), train_a()
    assert not torch.equal(first.coords, second.coords)  # a fresh scramble each step
    assert torch.equal(first.coords, train_b().coords)  # same seed, same sequence (every DDP rank agrees)
    fixed = parse_sampler("sobol:64", rescramble=False)
    assert fixed() is fixed()  # one PointSet: its neighbour caches are reused across batches


def test_from_images_is_exact_on_its_grid_and_bilinear_at_2x():
    x = torch.rand(3, 2, 5, 7, dtype=torch.float64)
    ds = InMemoryINRDataset.from_images(x, torch.arange(3))
    inrs, labels = ds.batch([2, 0])
    assert torch.equal(labels, torch.tensor([2, 0]))
    on_grid = sample(inrs, grid((5, 7), dtype=torch.float64)).values  # (2, 35, 2)
    torch.testing.assert_close(on_grid, x[[2, 0]].flatten(2).transpose(1, 2), rtol=0, atol=0)
    fine = sample(inrs, grid((10, 14), dtype=torch.float64)).values
    ref = F.interpolate(x[[2, 0]], size=(10, 14), mode="bilinear", align_corners=False)
    torch.testing.assert_close(fine, ref.flatten(2).transpose(1, 2), rtol=1e-12, atol=1e-12)
    assert InMemoryINRDataset.from_images(torch.full((2, 4, 4), 255, dtype=torch.uint8), [0, 1]).inrs.params[
        "values"].max() == 1.0
    with pytest.raises(ValueError, match="one label"):
        InMemoryINRDataset.from_images(x, torch.arange(2))


def test_subset_renumbers(memory_data):
    sub = SubsetINRDataset(memory_data["train"], torch.tensor([5, 2, 9]))
    assert len(sub) == 3 and torch.equal(sub.labels, memory_data["train"].labels[[5, 2, 9]])
    inrs, labels = sub.batch([1, 2])
    ref, ref_labels = memory_data["train"].batch([2, 9])
    assert torch.equal(inrs.params["values"], ref.params["values"]) and torch.equal(labels, ref_labels)
    with pytest.raises(ValueError, match="subset indices"):
        SubsetINRDataset(memory_data["train"], torch.tensor([16]))


def test_open_dataset_by_directory(disk_data, memory_data):
    train = open_dataset(disk_data, "train")
    assert len(train) == 16 and train.family.out_features == 1
    assert open_dataset(memory_data["test"], "whatever") is memory_data["test"]
    with pytest.raises(ValueError, match=r"no split 'val'.*splits found: \['test', 'train'\]"):
        open_dataset(disk_data, "val")
    with pytest.raises(ValueError, match="does not exist"):
        open_dataset(str(disk_data / "nope"), "train")
