"""The build scripts under datasets/, run in-process on tiny sources."""

from pathlib import Path

import numpy as np
import pytest
import torch
from _dataset_helpers import load_script, write_idx

from inrnet.datasets import fashion_mnist as fm
from inrnet.datasets import get_dataset
from inrnet.datasets.embedded import EmbeddedDefault
from inrnet.inr import INRBatch, SirenFamily, save_inrs

_main = load_script


def _small_root(tmp_path, n=10):
    rng = np.random.default_rng(1)
    root = tmp_path / "fmnist10"
    root.mkdir()
    for prefix in ("train", "t10k"):
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, size=(n, 28, 28)))
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return root


def test_fashion_mnist_build_and_default(tmp_path, capsys):
    fmnist_root = _small_root(tmp_path)
    build = _main("fashion_mnist/build.py")
    out = tmp_path / "fm"
    common = ["--out", str(out), "--source", str(fmnist_root), "--no-compile", "--chunk-size", "5",
              "--steps", "5"]
    for split in ("train", "test", "test_fourier"):
        assert build(["--split", split, *common]) == 0
    test = get_dataset("fashion_mnist", "test", root=out)
    assert len(test) == 10 and test.labels.tolist() == list(range(10))
    assert get_dataset("fashion_mnist", "test_fourier", root=out).family.name == "fourier"
    shard = out / "test" / "parts" / "0000000-0000005" / "shard-00000.safetensors"
    stamp = shard.stat().st_mtime_ns
    assert build(["--split", "test", *common]) == 0  # a finished build is not refitted
    assert shard.stat().st_mtime_ns == stamp
    assert (out / "test" / "build.json").is_file() and _main("summarize.py")([str(out / "test")]) == 0
    assert f"| {out / 'test'} | 10 of 10 |" in capsys.readouterr().out

    target = tmp_path / "default.safetensors"
    assert _main("fashion_mnist/build_default.py")(["--full", str(out), "--source", str(fmnist_root),
                                                    "--output", str(target)]) == 0
    default = EmbeddedDefault(target)
    assert [len(default.split(s)) for s in ("train", "test", "test_fourier")] == [10, 10, 10]
    images, labels = default.images("test_fourier")
    assert images.shape == (10, 28, 28) and torch.equal(labels, default.split("test_fourier").labels)
    assert float(default.split("train").quality["psnr_grid"].min()) > 0


@pytest.mark.slow
def test_scenes_build_script(fmnist_root, tmp_path):
    out = tmp_path / "scenes"
    assert _main("fashion_mnist_scenes/build.py")(["--split", "test", "--count", "4", "--out", str(out),
                                                   "--source", str(fmnist_root), "--no-compile"]) == 0
    assert get_dataset("fashion_mnist_scenes", "test", root=out).batch([0, 3])[1].shape == (2, 64, 64)


@pytest.mark.slow
@pytest.mark.skipif(not Path(fm.DEBIAN_ROOT).is_dir(), reason="Fashion-MNIST (dataset-fashion-mnist) not installed")
def test_real_fashion_mnist_fit_quality(tmp_path):
    """The shipped settings reach the quality datasets/README.md reports (on 100 test items)."""
    out = tmp_path / "fm"
    assert _main("fashion_mnist/build.py")(["--split", "test", "--out", str(out), "--count", "100",
                                            "--chunk-size", "100", "--no-compile"]) == 0
    quality = get_dataset("fashion_mnist", "test", root=out).quality
    assert float(quality["psnr_grid"].quantile(0.05)) > 34.0
    assert float(quality["psnr_offgrid"].median()) > 23.0



def test_summarize_a_dataset_without_build_json(tmp_path, capsys):
    family = SirenFamily(2, 1, width=4, depth=2)
    inrs = INRBatch(family, family.init_params(4))
    psnr = torch.tensor([10.0, 20.0, 30.0, 40.0])
    save_inrs(tmp_path / "saved", inrs, torch.arange(4), quality={"psnr_grid": psnr})
    assert load_script("summarize.py")([str(tmp_path / "saved"), "--json"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith(f"| {tmp_path / 'saved'} |"))
    assert "| 4 of 4 |" in row and "| n/a |" in row and "11.5 / 25.0 / 38.5 | n/a |" in row
    assert '"fit_seconds": 0.0' in out and '"chunks_done": 1' in out
