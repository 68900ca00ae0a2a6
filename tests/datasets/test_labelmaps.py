import pytest
import torch
from _dataset_helpers import TINY_GRAY

from inrnet.datasets.labelmaps import LabelMapDataset, label_coords, labels_at, pixel_index
from inrnet.inr import INRBatch, INRDataset, save_inrs
from inrnet.sampling.points import grid


def _pixel_index_loop(coords, shape):
    """Reference: for each point, search the cell whose [lo, hi) interval holds it on every axis (float64)."""
    out = []
    for x in coords.double().tolist():
        cell = []
        for k, n in enumerate(shape):
            edges = [-1 + 2 * i / n for i in range(n + 1)]
            cell.append(next(i for i in range(n) if edges[i] <= x[k] < edges[i + 1]) if x[k] < 1 else n - 1)
        flat = 0
        for k, n in enumerate(shape):
            flat = flat * n + cell[k]
        out.append(flat)
    return torch.tensor(out)


@pytest.mark.parametrize("shape", [(4, 6), (3, 5), (1, 7)])
def test_pixel_index_matches_loop(shape):
    coords = torch.rand(200, 2) * 2 - 1
    coords[:4] = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [-1.0, 1.0], [0.0, 0.0]])
    assert torch.equal(pixel_index(coords, shape), _pixel_index_loop(coords, shape))


def test_label_coords_are_cell_centres_of_their_own_pixel():
    shape = (5, 7)
    coords = label_coords(shape)
    assert torch.equal(coords, grid(shape))
    assert torch.equal(pixel_index(coords, shape), torch.arange(35))


def test_labels_at_sub_pixel_queries():
    maps = torch.arange(2 * 2 * 4).reshape(2, 2, 4)  # (B, H, W)
    queries = torch.tensor([[-0.9, -0.9], [-0.1, 0.6], [0.1, -0.45], [0.99, 0.99]])  # rows, then columns
    assert labels_at(maps, queries).tolist() == [[0, 3, 5, 7], [8, 11, 13, 15]]
    with pytest.raises(ValueError, match=r"\[M, d=2\]"):
        labels_at(maps, torch.zeros(3, 3))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        labels_at(maps, torch.tensor([[1.5, 0.0]]))


def _stored(tmp_path, labels):
    inrs = TINY_GRAY.init_params(len(labels))
    save_inrs(tmp_path / "d", INRBatch(TINY_GRAY, inrs), labels, shard_size=2)
    return INRDataset(tmp_path / "d")


def test_label_map_dataset_single_annotation(tmp_path):
    labels = torch.randint(0, 4, (5, 3, 4), dtype=torch.uint8)
    labels[0, 0, 0] = 255
    ds = LabelMapDataset(_stored(tmp_path, labels))
    inrs, maps = ds.batch([4, 0])
    assert len(inrs) == 2 and maps.dtype == torch.int64 and torch.equal(maps, labels[[4, 0]].long())
    params, one = ds[0]
    assert one.shape == (3, 4) and one[0, 0] == 255 and set(params) == set(TINY_GRAY.param_shapes())
    assert torch.equal(ds.labels, labels) and ds.label_shape == (3, 4) and len(ds) == 5


def test_label_map_dataset_picks_annotation(tmp_path):
    labels = torch.randint(0, 7, (3, 2, 4, 8), dtype=torch.uint8)  # (n, A, H, W)
    stored = _stored(tmp_path, labels)
    ds = LabelMapDataset(stored, annotation=1)
    assert torch.equal(ds.batch([2, 1])[1], labels[[2, 1], 1].long())
    assert torch.equal(ds.labels, labels[:, 1])
    with pytest.raises(ValueError, match="annotation"):
        LabelMapDataset(stored, annotation=2)
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        LabelMapDataset(stored)
