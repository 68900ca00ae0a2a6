import json

import numpy as np
import pytest
import torch
from _dataset_helpers import TINY_FIT, TINY_RGB, load_script
from PIL import Image

from inrnet.datasets import IGNORE_INDEX, get_dataset
from inrnet.datasets import cityscapes as cs

# labelId -> category, written out from the Cityscapes label table by hand
EXPECTED = {**{i: 255 for i in range(7)}, **{i: 0 for i in (7, 8, 9, 10)}, **{i: 1 for i in range(11, 17)},
            **{i: 2 for i in range(17, 21)}, 21: 3, 22: 3, 23: 4, 24: 5, 25: 5, **{i: 6 for i in range(26, 34)}}
IGNORED_IN_EVAL = (9, 10, 14, 15, 16, 18, 29, 30)


def test_category_table():
    lut = cs.category_lut()
    assert [int(lut[i]) for i in range(34)] == [EXPECTED[i] for i in range(34)]
    assert bool((lut[34:] == IGNORE_INDEX).all())
    strict = cs.category_lut(ignore_in_eval=True)
    assert [int(strict[i]) for i in range(34)] == [255 if i in IGNORED_IN_EVAL else EXPECTED[i] for i in range(34)]
    assert [cs.CATEGORIES[EXPECTED[i]] for i in (7, 11, 17, 21, 23, 24, 26)] == list(cs.CATEGORIES)


def _write(root, split, stem, rng, annotations=("gtFine", "gtCoarse"), max_id=33):
    city = stem.split("_")[0]
    (root / "leftImg8bit" / split / city).mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (16, 32, 3), dtype=np.uint8)).save(
        root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
    for a in annotations:
        (root / a / split / city).mkdir(parents=True, exist_ok=True)
        ids = rng.integers(0, max_id + 1, (16, 32), dtype=np.uint8)
        Image.fromarray(ids, mode="L").save(root / a / split / city / f"{stem}{cs.ANNOTATIONS[a]}")


def _tree(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "cityscapes"
    for stem in ("aachen_000000_000019", "aachen_000001_000019", "bremen_000000_000019"):
        _write(root, "train", stem, rng)
    _write(root, "train", "bremen_000001_000019", rng, annotations=("gtFine",))  # no coarse labels
    _write(root, "train", "bremen_000002_000019", rng, max_id=40)  # not a labelIds file
    _write(root, "train", "zurich_000000_000019", rng)
    (root / "leftImg8bit/train/zurich/zurich_000000_000019_leftImg8bit.png").write_bytes(b"\x89PNG broken")
    for stem in ("frankfurt_000000_000294", "lindau_000000_000019"):
        _write(root, "val", stem, rng)
    return root


def test_build_cityscapes_end_to_end(tmp_path):
    root, out = _tree(tmp_path), tmp_path / "out"
    for split in ("train", "val"):
        cs.build_cityscapes(root, out, split, image_size=(4, 8), fit_kwargs=TINY_FIT, family=TINY_RGB,
                            chunk_size=2, progress=False)
    index = json.loads((out / "train" / "index.json").read_text())
    assert index["files"] == ["aachen/aachen_000000_000019", "aachen/aachen_000001_000019",
                              "bremen/bremen_000000_000019"]
    assert sorted(index["skipped"]) == ["bremen/bremen_000001_000019", "bremen/bremen_000002_000019",
                                        "zurich/zurich_000000_000019"]
    assert "gtCoarse" in index["skipped"]["bremen/bremen_000001_000019"]
    for split, folder, annotation in (("train", "train", "gtCoarse"), ("train_fine", "train", "gtFine"),
                                      ("test", "val", "gtFine"), ("test_coarse", "val", "gtCoarse")):
        ds = get_dataset("cityscapes", split, root=out)
        stems = json.loads((out / folder / "index.json").read_text())["files"]
        inrs, maps = ds.batch(range(len(stems)))
        assert maps.dtype == torch.int64 and maps.shape == (len(stems), 16, 32)  # full resolution
        for k, stem in enumerate(stems):
            ids = np.asarray(Image.open(root / annotation / folder / f"{stem}{cs.ANNOTATIONS[annotation]}"))
            expected = torch.tensor([[EXPECTED[int(v)] for v in row] for row in ids])
            assert torch.equal(maps[k], expected)
        assert inrs.family == TINY_RGB


def test_missing_annotation_folder_and_split(tmp_path):
    root = _tree(tmp_path)
    with pytest.raises(FileNotFoundError, match="--annotations"):
        cs.scan_cityscapes(root, "test", ["gtFine"])
    out = tmp_path / "out"
    cs.build_cityscapes(root, out, "val", annotations=["gtFine"], image_size=(4, 8), fit_kwargs=TINY_FIT,
                        family=TINY_RGB, progress=False)
    assert len(get_dataset("cityscapes", "test", root=out)) == 2
    with pytest.raises(ValueError, match="gtCoarse"):
        get_dataset("cityscapes", "test_coarse", root=out)
    with pytest.raises(FileNotFoundError, match="datasets/cityscapes/build.py"):
        get_dataset("cityscapes", "train", root=out)


def test_build_script(tmp_path):
    root, out = _tree(tmp_path), tmp_path / "out"
    build = load_script("cityscapes/build.py")
    assert build(["--cityscapes", str(root), "--split", "val", "--out", str(out), "--image-size", "4", "8",
                  "--label-size", "8", "16", "--steps", "2", "--no-compile", "--device", "cpu"]) == 0
    inrs, maps = get_dataset("cityscapes", "test_coarse", root=out).batch([1])
    assert maps.shape == (1, 8, 16) and inrs.family == cs.SIREN
