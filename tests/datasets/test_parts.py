import json

import pytest
import torch
from _dataset_helpers import TINY_FIT, TINY_GRAY

from safetensors.torch import load_file

from inrnet.datasets.parts import (build_parts, build_report, chunk_ranges, merge_parts, parse_part, parts_done,
                                   read_items, select_chunks)
from inrnet.inr import CorruptShardError, INRDataset


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _source(n=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, 6, 6, generator=g)  # (n, 1, 6, 6)
    labels = torch.arange(n) % 3
    return lambda a, b: (images[a:b], labels[a:b])


def _build(root, **kw):
    return build_parts(root, _source(), TINY_GRAY, count=10, chunk_size=4, fit_kwargs=TINY_FIT, seed=5,
                       progress=False, **kw)


def test_parse_part():
    assert parse_part("2/5") == (2, 5)
    for bad in ("5/5", "-1/3", "1", "a/b"):
        with pytest.raises(ValueError, match="k/n"):
            parse_part(bad)


def test_select_chunks_against_loops():
    assert chunk_ranges(10, 4) == [(0, 4), (4, 8), (8, 10)]
    for start, stop in [(0, 10), (3, 5), (4, 8), (9, 10)]:
        expected = [i for i, (a, b) in enumerate(chunk_ranges(10, 4)) if any(start <= x < stop for x in range(a, b))]
        assert select_chunks(10, 4, start, stop) == expected
    for n in (1, 2, 3, 4):
        union = [c for k in range(n) for c in select_chunks(10, 4, part=(k, n))]
        assert union == [0, 1, 2]  # every chunk exactly once, in order
    with pytest.raises(ValueError, match="within"):
        select_chunks(10, 4, 5, 11)


def test_parts_equal_one_run_and_merge(tmp_path):
    whole = _build(tmp_path / "whole")
    assert isinstance(whole, INRDataset) and len(whole) == 10
    assert _build(tmp_path / "split", part=(1, 2)) is None  # chunks 1-2 of 0-2
    assert parts_done(tmp_path / "split", 10, 4) == [False, True, True]
    merged = _build(tmp_path / "split", part=(0, 2))  # the last part merges
    assert isinstance(merged, INRDataset)
    a, la = whole.batch(range(10))
    b, lb = merged.batch(range(10))
    assert torch.equal(la, lb) and torch.equal(la, torch.arange(10) % 3)
    for k in a.params:  # the same seeds per chunk, however the work was split
        assert torch.equal(a.params[k], b.params[k])
    assert set(merged.quality) == {"psnr_grid", "psnr_offgrid", "lipschitz_bound"}


def test_read_items_from_unfinished_build(tmp_path):
    _build(tmp_path / "b", start=0, stop=4)
    inrs, labels, quality = read_items(tmp_path / "b", torch.tensor([3, 0, 2]))
    assert labels.tolist() == [0, 0, 2] and len(inrs) == 3
    whole = _build(tmp_path / "b")
    ref, _ = whole.batch([3, 0, 2])
    for k in ref.params:
        assert torch.equal(inrs.params[k], ref.params[k])
    assert torch.equal(quality["psnr_grid"], whole.quality["psnr_grid"][[3, 0, 2]])
    _build(tmp_path / "p", stop=4)
    with pytest.raises(ValueError, match="not fitted"):
        read_items(tmp_path / "p", torch.tensor([9]))


def test_refuses_other_settings_and_refits_corrupt_chunk(tmp_path):
    root = tmp_path / "b"
    _build(root, stop=4)
    with pytest.raises(ValueError, match="other settings"):
        build_parts(root, _source(), TINY_GRAY, count=10, chunk_size=4, fit_kwargs={**TINY_FIT, "steps": 3},
                    seed=5, progress=False)
    shard = root / "parts" / "0000000-0000004" / "shard-00000.safetensors"
    reference = {k: v.clone() for k, v in load_file(shard).items()}
    shard.write_bytes(shard.read_bytes()[:-10])  # truncated: found on the next run and refitted
    assert parts_done(root, 10, 4) == [False, False, False]
    _build(root)
    _assert_same(load_file(shard), reference)
    assert json.loads((root / "manifest.json").read_text())["complete"]


def test_refits_chunk_failing_its_checksum(tmp_path):
    root = tmp_path / "b"
    _build(root)
    shard = root / "parts" / "0000000-0000004" / "shard-00000.safetensors"
    reference = {k: v.clone() for k, v in load_file(shard).items()}
    flipped = bytearray(shard.read_bytes())
    flipped[-3] ^= 0xFF  # same size, wrong content
    shard.write_bytes(bytes(flipped))
    assert parts_done(root, 10, 4)[0] and not parts_done(root, 10, 4, checksum=[0])[0]
    with pytest.raises(CorruptShardError, match="sha256"):
        INRDataset(root).batch([0])
    _build(root)
    _assert_same(load_file(shard), reference)
    assert len(INRDataset(root).batch(range(10))[0]) == 10  # the merged manifest has the new checksum


def test_merge_refuses_unfinished(tmp_path):
    _build(tmp_path / "b", stop=4)
    with pytest.raises(ValueError, match="2 of 3 chunks unfinished"):
        merge_parts(tmp_path / "b")


def test_build_report(tmp_path):
    _build(tmp_path / "b", stop=8)
    report = build_report(tmp_path / "b")
    assert (report["count"], report["done"], report["chunks"], report["chunks_done"]) == (10, 8, 3, 2)
    assert report["timed_items"] == 8 and report["fit_seconds"] > 0 and report["bytes"] > 0
    grid = torch.cat([INRDataset(p).quality["psnr_grid"] for p in sorted((tmp_path / "b" / "parts").iterdir())])
    assert report["quality"]["psnr_grid"]["p50"] == pytest.approx(float(grid.double().quantile(0.5)))
