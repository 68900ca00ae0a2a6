import json

import numpy as np
import pytest
import torch
from _dataset_helpers import TINY_FIT, TINY_RGB, load_script
from PIL import Image
from scipy.io import savemat

from inrnet.datasets import get_dataset, imagenet
from inrnet.datasets.wordnet import WordNet, read_wordnet
from inrnet.inr import FourierFamily

# parent child, with the real big-12 ids (dog n02084071 lies under carnivore n02075296)
IS_A = """n00001740 n00015388
n00015388 n02075296
n02075296 n02083346
n02083346 n02084071
n02084071 n02085620
n02075296 n02120997
n02120997 n02123045
n00001740 n04341686
n04341686 n02793495
n00015388 n02512053
n02512053 n01440764
n04341686 n09999999
n03405725 n09999999
n00001740 n03405725
n03405725 n08888888
n07777777 n08888888
n04341686 n07777777
"""
LEAVES = {"n02085620": 3, "n02123045": 2, "n02793495": 2, "n01440764": 1}  # chihuahua, tabby, barn, tench
WNIDS = [w for _, w in imagenet.BIG12]


def test_superclass_rule():
    wn = WordNet({c: {p} for p, c in (line.split() for line in IS_A.splitlines())})
    wn.parents["n09999999"] = {"n04341686", "n03405725"}
    wn.parents["n08888888"] = {"n03405725", "n07777777"}
    assert wn.superclass("n02085620", WNIDS) == 0  # dog, not carnivore
    assert wn.superclass("n02084071", WNIDS) == 0
    assert wn.superclass("n02123045", WNIDS) == 6  # a cat: carnivore
    assert wn.superclass("n02793495", WNIDS) == 1  # structure
    assert wn.superclass("n01440764", WNIDS) is None  # a fish: none of the 12
    assert wn.superclass("n09999999", WNIDS) == 1  # two incomparable parents at distance 1: first listed
    assert wn.superclass("n08888888", WNIDS) == 10  # furniture at 1 beats structure at 2


def _tree(tmp_path):
    (tmp_path / "wn").mkdir()
    (tmp_path / "wn" / "wordnet.is_a.txt").write_text(IS_A)
    (tmp_path / "wn" / "words.txt").write_text("n02084071\tdog, domestic dog\n")
    rng = np.random.default_rng(0)
    for folder in ("train", "val"):
        for wnid, n in LEAVES.items():
            d = tmp_path / "imagenet" / folder / wnid
            d.mkdir(parents=True)
            for i in range(n if folder == "train" else 1):
                Image.fromarray(rng.integers(0, 256, (10, 14, 3), dtype=np.uint8)).save(d / f"img{i}.JPEG")
        (tmp_path / "imagenet" / folder / "misc").mkdir()
    (tmp_path / "imagenet" / "train" / "n02085620" / "img1.JPEG").write_bytes(b"not a jpeg")
    return tmp_path / "imagenet", tmp_path / "wn" / "wordnet.is_a.txt"


def test_meta_mat_matches_is_a(tmp_path):
    pairs = [line.split() for line in IS_A.splitlines()]
    wnids = sorted({w for p in pairs for w in p})
    ids = {w: i + 1 for i, w in enumerate(wnids)}
    synsets = np.zeros(len(wnids), dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("children", "O")])
    for w in wnids:
        children = [ids[c] for p, c in pairs if p == w]
        synsets[ids[w] - 1] = (ids[w], w, w, np.array(children, dtype=float))
    savemat(tmp_path / "meta.mat", {"synsets": synsets})
    text = tmp_path / "wordnet.is_a.txt"
    text.write_text(IS_A)
    a, b = read_wordnet(tmp_path / "meta.mat"), read_wordnet(text)
    assert a.parents == b.parents
    for w in wnids:
        assert a.superclass(w, WNIDS) == b.superclass(w, WNIDS)


def test_bad_wordnet_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="wordnet.is_a.txt"):
        read_wordnet(tmp_path)
    (tmp_path / "wordnet.is_a.txt").write_text("n0001 n0002 n0003\n")
    with pytest.raises(ValueError, match="line 1"):
        read_wordnet(tmp_path)


def test_build_big12_end_to_end(tmp_path, caplog):
    root, wordnet = _tree(tmp_path)
    out = tmp_path / "out"
    ds = imagenet.build_big12(root, wordnet, out, "train", per_class=0, image_size=8, family=TINY_RGB,
                              fit_kwargs=TINY_FIT, chunk_size=4, progress=False)
    assert len(ds) == 6 and ds.labels.tolist() == [0, 0, 1, 1, 6, 6]
    index = json.loads((out / "train" / "index.json").read_text())
    assert list(index["skipped"]) == ["n02085620/img1.JPEG"]  # the undecodable file, skipped and listed
    assert index["scan"]["unknown"] == ["misc"] and index["scan"]["outside"] == ["n01440764"]
    assert "n02085620/img1.JPEG" not in index["files"] and index["short"] == {}
    assert "misc" in caplog.text and "skipped 1 unreadable" in caplog.text
    assert get_dataset("imagenet_big12", "train", root=out).labels.tolist() == [0, 0, 1, 1, 6, 6]
    # the source items, resized as fitted
    image = imagenet.load_image(root / "train" / index["files"][0], (8, 8))
    assert image.shape == (3, 8, 8) and 0 <= float(image.min()) and float(image.max()) <= 1


def test_test_and_fourier_splits_share_items(tmp_path):
    root, wordnet = _tree(tmp_path)
    out = tmp_path / "out"
    siren = imagenet.build_big12(root, wordnet, out, "test", image_size=8, family=TINY_RGB, fit_kwargs=TINY_FIT,
                                 progress=False)
    fourier = imagenet.build_big12(root, wordnet, out, "test_fourier", image_size=8,
                                   family=FourierFamily(2, 3, features=4, width=4, depth=2), fit_kwargs=TINY_FIT,
                                   progress=False)
    assert torch.equal(siren.labels, fourier.labels) and siren.labels.tolist() == [0, 1, 6]
    files = [json.loads((out / s / "index.json").read_text())["files"] for s in ("test", "test_fourier")]
    assert files[0] == files[1]
    assert get_dataset("imagenet_big12", "test_fourier", root=out).family.name == "fourier"


def test_per_class_draws_replacements_for_unreadable_files(tmp_path):
    root, wordnet = _tree(tmp_path)
    index = imagenet.index_big12(root, wordnet, tmp_path / "o", "train", per_class=3, image_size=8)
    assert index["labels"].count(0) == 2 and index["short"]["dog"] == 1  # 3 dog files, 1 unreadable
    assert index["labels"].count(6) == 2 and index["short"]["carnivore"] == 1
    assert list(index["skipped"]) == ["n02085620/img1.JPEG"]
    again = imagenet.index_big12(root, wordnet, tmp_path / "o", "train", per_class=3, image_size=8)
    assert again == index
    with pytest.raises(ValueError, match="settings"):
        imagenet.index_big12(root, wordnet, tmp_path / "o", "train", per_class=2, image_size=8)


def test_missing_folders(tmp_path):
    root, wordnet = _tree(tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        imagenet.build_big12(tmp_path / "nowhere", wordnet, tmp_path / "o", "train", family=TINY_RGB,
                             fit_kwargs=TINY_FIT, progress=False)
    with pytest.raises(ValueError, match="valid"):
        imagenet.index_big12(root, wordnet, tmp_path / "o", "val")


def test_build_script(tmp_path):
    root, wordnet = _tree(tmp_path)
    out = tmp_path / "out"
    args = ["--imagenet", str(root), "--wordnet", str(wordnet.parent), "--out", str(out), "--image-size", "8",
            "--width", "8", "--depth", "2", "--steps", "2", "--batch-size", "4", "--no-compile", "--device", "cpu"]
    build = load_script("imagenet_big12/build.py")
    train = ["--split", "train", "--per-class", "0", "--chunk-size", "4"]  # 6 items: 2 chunks
    assert build([*train, "--part", "0/2", *args]) == 0
    with pytest.raises(FileNotFoundError, match=r"unfinished \(1 of 2 chunks\)"):
        get_dataset("imagenet_big12", "train", root=out)
    assert build([*train, "--part", "1/2", *args]) == 0
    ds = get_dataset("imagenet_big12", "train", root=out)
    assert ds.labels.tolist() == [0, 0, 1, 1, 6, 6] and ds.family.width == 8
    assert build(["--split", "test_fourier", *args]) == 0
    assert get_dataset("imagenet_big12", "test_fourier", root=out).family.name == "fourier"
