"""The INR dataset format: round trip, resumable builds, corruption and missing paths."""

import hashlib
import json

import pytest
import torch
from torch.utils.data import DataLoader

import inrnet.inr.build as build_module
from inrnet.inr import (CorruptShardError, FourierFamily, INRBatch, INRDataset, SirenFamily, build_dataset,
                        load_inrs, read_manifest, save_inrs)
from inrnet.inr.fitting import fit as real_fit

FIT = {"steps": 3, "lr": 1e-3}
FAMILY = SirenFamily(2, 1, width=8, depth=3)


def _source(n=10):
    g = torch.Generator().manual_seed(0)
    return [(torch.rand(1, 5, 4, generator=g), i % 3) for i in range(n)]


@pytest.fixture
def counted_fit(monkeypatch):
    calls = []

    def counting(images, family, **kwargs):
        calls.append(len(images))
        return real_fit(images, family, **kwargs)
    monkeypatch.setattr(build_module, "fit", counting)
    return calls


def _assert_same(a: INRBatch, b: INRBatch):
    assert a.family == b.family
    for k in a.params:
        assert a.params[k].dtype == b.params[k].dtype and torch.equal(a.params[k], b.params[k])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_save_load_round_trip_is_bit_exact(tmp_path, dtype):
    fam = FourierFamily(2, 3, features=4, width=8, depth=2)
    inrs = INRBatch(fam, fam.init_params(7, dtype=dtype))
    labels = torch.randint(0, 5, (7, 2, 3))
    quality = {"psnr_grid": torch.rand(7), "psnr_offgrid": torch.rand(7)}
    save_inrs(tmp_path / "ds", inrs, labels, quality=quality, shard_size=3)
    loaded, loaded_labels = load_inrs(tmp_path / "ds")
    _assert_same(loaded, inrs)
    assert torch.equal(loaded_labels, labels)
    ds = INRDataset(tmp_path / "ds")
    assert len(ds) == 7 and len(ds.shards) == 3 and ds.family == fam
    assert all(torch.equal(ds.quality[k], q) for k, q in quality.items())
    params, label = ds[4]
    assert torch.equal(label, labels[4]) and all(torch.equal(v, inrs.params[k][4]) for k, v in params.items())
    order = [6, 0, 3, 4, 4, 1]
    batch, batch_labels = ds.batch(order)
    _assert_same(batch, inrs[order])
    assert torch.equal(batch_labels, labels[order])
    collated, collated_labels = next(iter(DataLoader(ds, batch_size=4)))
    _assert_same(INRBatch(ds.family, collated), inrs[:4])
    with pytest.raises(FileExistsError):
        save_inrs(tmp_path / "ds", inrs, labels)


def test_interrupted_build_resumes_without_refitting(tmp_path, counted_fit):
    items = _source(10)

    def flaky(start, stop):
        if start >= 6:
            raise RuntimeError("interrupted")
        images = torch.stack([items[i][0] for i in range(start, stop)])
        return images, torch.tensor([items[i][1] for i in range(start, stop)])

    out = tmp_path / "ds"
    with pytest.raises(RuntimeError, match="interrupted"):
        build_dataset(out, flaky, FAMILY, count=10, shard_size=3, fit_kwargs=FIT, progress=False)
    assert counted_fit == [3, 3]
    manifest = read_manifest(out)
    assert [s["start"] for s in manifest["shards"]] == [0, 3] and not manifest["complete"]
    with pytest.raises(ValueError, match="unfinished"):
        INRDataset(out)
    before = {s["file"]: (out / s["file"]).stat().st_mtime_ns for s in manifest["shards"]}

    counted_fit.clear()
    resumed = build_dataset(out, items, FAMILY, shard_size=3, fit_kwargs=FIT, progress=False)
    assert counted_fit == [3, 1]  # shards 2 and 3 only
    assert all((out / f).stat().st_mtime_ns == t for f, t in before.items())
    fresh = build_dataset(tmp_path / "fresh", items, FAMILY, shard_size=3, fit_kwargs=FIT, progress=False)
    a, la = load_inrs(out)
    b, lb = load_inrs(tmp_path / "fresh")
    _assert_same(a, b)
    assert torch.equal(la, lb) and torch.equal(resumed.labels, torch.tensor([i % 3 for i in range(10)]))
    assert not list(out.glob(".*.tmp"))

    counted_fit.clear()
    build_dataset(out, items, FAMILY, shard_size=3, fit_kwargs=FIT, progress=False)
    assert counted_fit == []


def test_build_refits_a_corrupt_shard_and_rejects_other_settings(tmp_path, counted_fit):
    items = _source(6)
    out = tmp_path / "ds"
    build_dataset(out, items, FAMILY, shard_size=3, fit_kwargs=FIT, progress=False)
    shard = out / "shard-00001.safetensors"
    shard.write_bytes(shard.read_bytes()[:-5])
    counted_fit.clear()
    build_dataset(out, items, FAMILY, shard_size=3, fit_kwargs=FIT, progress=False)
    assert counted_fit == [3]
    load_inrs(out)
    with pytest.raises(ValueError, match="shard_size"):
        build_dataset(out, items, FAMILY, shard_size=2, fit_kwargs=FIT, progress=False)
    with pytest.raises(ValueError, match="family"):
        build_dataset(out, items, SirenFamily(2, 1, width=4, depth=3), shard_size=3, fit_kwargs=FIT, progress=False)
    with pytest.raises(ValueError, match="fit"):
        build_dataset(out, items, FAMILY, shard_size=3, fit_kwargs={**FIT, "steps": 4}, progress=False)


def _saved(tmp_path):
    inrs = INRBatch(FAMILY, FAMILY.init_params(6))
    save_inrs(tmp_path / "ds", inrs, torch.arange(6), shard_size=3)
    return tmp_path / "ds", tmp_path / "ds" / "shard-00001.safetensors"


def test_truncated_shard_names_the_file(tmp_path):
    root, shard = _saved(tmp_path)
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(CorruptShardError, match=r"shard-00001\.safetensors.*truncated"):
        INRDataset(root)


def test_flipped_byte_fails_the_checksum(tmp_path):
    root, shard = _saved(tmp_path)
    data = bytearray(shard.read_bytes())
    data[-7] ^= 0xFF
    shard.write_bytes(bytes(data))
    ds = INRDataset(root)  # sizes are fine; the checksum is checked when the shard is opened
    ds[0]
    with pytest.raises(CorruptShardError, match=r"shard-00001\.safetensors.*sha256"):
        ds[4]
    with pytest.raises(CorruptShardError, match=r"shard-00001\.safetensors"):
        load_inrs(root)
    assert INRDataset(root, verify=False)[4][1] == 4  # without checksums the bytes are read as they are


def test_unparsable_header_names_the_file(tmp_path):
    root, shard = _saved(tmp_path)
    junk = b"\xff" * 8 + b"not a safetensors header" * 4
    shard.write_bytes(junk)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["shards"][1].update(bytes=len(junk), sha256=hashlib.sha256(junk).hexdigest())
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CorruptShardError, match=r"shard-00001\.safetensors.*header"):
        load_inrs(root)


def test_missing_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        INRDataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        load_inrs(tmp_path / "empty")
    root, shard = _saved(tmp_path)
    shard.unlink()
    with pytest.raises(CorruptShardError, match=r"shard-00001\.safetensors.*missing"):
        INRDataset(root)
    (root / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        INRDataset(root)


def _edit_manifest(root, edit):
    path = root / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def test_an_edited_shard_start_is_refused(tmp_path):
    root, _ = _saved(tmp_path)
    assert INRDataset(root).batch([1])[1].tolist() == [1]
    _edit_manifest(root, lambda m: m["shards"][1].update(start=1))  # checksums untouched: batch([1]) gave INR 3
    with pytest.raises(ValueError, match=r"manifest\.json.*shard 1 \('shard-00001\.safetensors'\) starts at 1, "
                                         r"inside the shards listed before it \(they end at 3\)"):
        INRDataset(root)


@pytest.mark.parametrize("edit, match", [
    (lambda m: m["shards"][1].update(start=4), r"shard 1 .*starts at 4, but the shards listed before it end at 3"),
    (lambda m: m["shards"][0].update(start=1), r"shard 0 .*starts at 1, but the shards listed before it end at 0"),
    (lambda m: m["shards"].reverse(), r"shard 0 .*shard-00001.*starts at 3, but the shards listed before it end at 0"),
    (lambda m: m["shards"].pop(), r"the shards end at 3, not at the dataset's count 6"),
    (lambda m: m.update(count=9), r"the shards end at 6, not at the dataset's count 9"),
    (lambda m: m.update(count=2), r"shard 0 .*ends at 3, past the dataset's count 2"),
    (lambda m: m.update(count=-6), r"'count' must be a positive integer, got -6"),
    (lambda m: m.update(shard_size=0), r"'shard_size' must be a positive integer, got 0"),
    (lambda m: m["shards"][1].update(count=0), r"shard 1 .*'count' must be a positive integer, got 0"),
    (lambda m: m["shards"][1].update(bytes=-1), r"shard 1 .*'bytes' must be a non-negative integer, got -1"),
    (lambda m: m["shards"][1].update(start="3"), r"shard 1 .*'start' must be a non-negative integer, got '3'"),
    (lambda m: m["shards"][1].update(sha256="abc"), r"shard 1 .*'sha256' must be 64 lowercase hex digits"),
    (lambda m: m["shards"][1].pop("sha256"), r"shard 1 .*lacks the entries \['sha256'\]"),
    (lambda m: m["shards"][1].update(file=m["shards"][0]["file"]),
     r"shard 1 \('shard-00000\.safetensors'\) names the file of shard 0"),
    (lambda m: m["shards"][1].update(file="../x.safetensors"), r"shard 1 .*a relative path inside the dataset"),
    (lambda m: m["shards"][1].update(file="/tmp/x.safetensors"), r"shard 1 .*a relative path inside the dataset"),
    (lambda m: m.update(shards={}), r"'shards' must be a list"),
    (lambda m: m.update(complete="yes"), r"'complete' must be true or false, got 'yes'"),
    (lambda m: m.update(fit=[]), r"'fit' must be an object"),
    (lambda m: m.pop("fit"), r"lacks the entries \['fit'\]"),
    (lambda m: m["family"].pop("config"), r"'family' must be an object with a 'name' and a 'config'"),
    (lambda m: m["family"]["config"].update(hidden=3),
     r"its 'family' entry does not rebuild: .*'hidden'.*family 'siren'.*width"),
    (lambda m: m["family"]["config"].update(depth=1), r"its 'family' entry does not rebuild: .*depth"),
    (lambda m: m["family"].update(name="nerf"), r"its 'family' entry does not rebuild: unknown INR family 'nerf'"),
])
def test_bad_manifests_are_refused_naming_the_file(tmp_path, edit, match):
    root, _ = _saved(tmp_path)
    _edit_manifest(root, edit)
    with pytest.raises(ValueError, match=r"INR dataset manifest '[^']*ds/manifest\.json': " + match):
        INRDataset(root)


def test_an_unfinished_manifest_may_have_gaps_but_no_overlaps(tmp_path, counted_fit):
    items = _source(9)
    out = tmp_path / "ds"
    build_dataset(out, items, FAMILY, shard_size=3, fit_kwargs=FIT, progress=False)
    _edit_manifest(out, lambda m: m.update(complete=False, shards=[m["shards"][0], m["shards"][2]]))
    assert [s["start"] for s in read_manifest(out)["shards"]] == [0, 6]
    with pytest.raises(ValueError, match="unfinished"):
        INRDataset(out)
    counted_fit.clear()
    build_dataset(out, items, FAMILY, shard_size=3, fit_kwargs=FIT, progress=False)
    assert counted_fit == [3] and len(INRDataset(out)) == 9
    _edit_manifest(out, lambda m: m.update(complete=False))
    _edit_manifest(out, lambda m: m["shards"][1].update(start=2))
    with pytest.raises(ValueError, match=r"manifest\.json.*shard 1 .*starts at 2, inside the shards listed before it"):
        read_manifest(out)
