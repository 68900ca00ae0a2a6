import pytest
import torch
from _dataset_helpers import TINY_FIT, TINY_GRAY

from inrnet.datasets import fashion_mnist as fm
from inrnet.datasets import get_dataset, scenes


def _item(fill: int, hole: bool) -> torch.Tensor:
    item = torch.zeros(28, 28, dtype=torch.uint8)
    item[4:24, 4:24] = fill
    if hole:
        item[10:18, 10:18] = 0  # enclosed: filled into the foreground
    return item


def test_compose_scene_against_loops():
    items = torch.stack([_item(200, True), _item(100, False)])
    classes, sides = torch.tensor([3, 7]), torch.tensor([28, 28])
    positions = torch.tensor([[0, 0], [14, 20]])
    image, labels = scenes.compose_scene(items, classes, sides, positions, canvas=64)
    exp_image, exp_labels = torch.zeros(64, 64), torch.zeros(64, 64, dtype=torch.uint8)
    for (r0, c0), item, cls in zip(positions.tolist(), items, classes.tolist()):
        for r in range(28):
            for c in range(28):
                if 4 <= r < 24 and 4 <= c < 24:  # the item's square, its hole filled
                    exp_image[r0 + r, c0 + c] = item[r, c] / 255
                    exp_labels[r0 + r, c0 + c] = 1 + cls
    assert torch.equal(labels, exp_labels)
    assert torch.allclose(image, exp_image, atol=1e-6)
    assert labels[15, 15] == 4 and image[15, 15] == 0  # the first item's hole: its label, black
    assert labels[20, 25] == 8  # the later item occludes the earlier one
    with pytest.raises(ValueError, match="does not fit"):
        scenes.compose_scene(items[:1], classes[:1], torch.tensor([28]), torch.tensor([[40, 0]]))


def test_make_scenes_deterministic_and_range_independent():
    pool = torch.randint(0, 256, (50, 28, 28), dtype=torch.uint8)
    classes = torch.full((50,), 4)
    images, labels = scenes.make_scenes(pool, classes, 0, 6, seed=3, split="train")
    assert images.shape == (6, 1, 64, 64) and labels.shape == (6, 64, 64) and labels.dtype == torch.uint8
    again = scenes.make_scenes(pool, classes, 4, 6, seed=3, split="train")
    assert torch.equal(again[0], images[4:]) and torch.equal(again[1], labels[4:])
    assert set(labels.unique().tolist()) == {0, 5}
    other = scenes.make_scenes(pool, classes, 0, 6, seed=4, split="train")[0]
    test = scenes.make_scenes(pool, classes, 0, 6, seed=3, split="test")[0]
    assert not torch.equal(other, images) and not torch.equal(test, images)
    with pytest.raises(ValueError, match="valid"):
        scenes.make_scenes(pool, classes, 0, 1, split="val")


def test_build_scenes_uses_test_items_for_test(fmnist_root, tmp_path, monkeypatch):
    asked = []
    load = fm.load_fashion_mnist_images
    monkeypatch.setattr(fm, "load_fashion_mnist_images",
                        lambda split, root=None: asked.append(split) or load(split, root))
    out = tmp_path / "scenes"
    scenes.build_scenes(out, "test", 5, source_root=fmnist_root, family=TINY_GRAY, fit_kwargs=TINY_FIT,
                        chunk_size=3, progress=False)
    assert asked == ["test"]
    ds = get_dataset("fashion_mnist_scenes", "test", root=out)
    inrs, maps = ds.batch([4, 1])
    pool, pool_labels = load("test", fmnist_root)
    expected = scenes.make_scenes(pool, pool_labels, 0, 5, split="test")[1]
    assert maps.dtype == torch.int64 and torch.equal(maps, expected[[4, 1]].long())
    assert len(inrs) == 2 and ds.label_shape == (64, 64)
