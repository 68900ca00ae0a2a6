"""``inrnet show``: a PNG grid of renders, one panel per item, titled with labels and PSNRs."""

import json

import pytest
import torch

from inrnet.cli import main
from inrnet.datasets.show import open_any, parse_shape, show
from inrnet.inr import INRBatch, Siren, save_inrs
from inrnet.inr.importer import IMPORT_RECORD

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def tiny(tmp_path):
    """tmp/data/train: 5 random 2-d SIRENs (3 channels), labels 0..4, a stored psnr_grid; class names in import.json."""
    g = torch.Generator().manual_seed(0)
    inrs = INRBatch.stack([Siren(2, 3, width=8, depth=2, generator=g) for _ in range(5)])
    save_inrs(tmp_path / "data" / "train", inrs, torch.arange(5), quality={"psnr_grid": torch.arange(5.0) + 20})
    (tmp_path / "data" / "train" / IMPORT_RECORD).write_text(json.dumps({"classes": list("abcde")}))
    return tmp_path / "data"


def test_show_a_tiny_dataset(tiny, tmp_path):
    fig = show(tiny / "train", out=tmp_path / "grid.png", count=4, shape="16x12")
    assert (tmp_path / "grid.png").read_bytes()[:8] == PNG
    assert len(fig.axes) == 4
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[1] == "#1 b (1)\n21.0 dB"
    assert fig.axes[0].get_images()[0].get_array().shape == (16, 12, 3)
    fig = show(tiny, split="train", count=16, seed=3)  # a directory of splits; count capped at the length
    assert len(fig.axes) == 5 and sorted(ax.get_title().split()[0] for ax in fig.axes) == [f"#{i}" for i in range(5)]


def test_the_command_line(tiny, tmp_path, capsys):
    out = tmp_path / "cli" / "grid.png"
    main(["show", str(tiny), "--out", str(out), "--count", "3", "--shape", "8x8"])
    assert out.read_bytes()[:8] == PNG and "wrote 3 renders" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["show", str(tiny), "--split", "test", "--out", str(out)])
    with pytest.raises(SystemExit):
        main(["show", "no_such_dataset", "--out", str(out)])


def test_show_the_embedded_default(tmp_path):
    fig = show("fashion_mnist_default", "test", out=tmp_path / "fm.png", count=6, shape=(28, 28))
    assert (tmp_path / "fm.png").read_bytes()[:8] == PNG and len(fig.axes) == 6
    dataset, classes = open_any("fashion_mnist_default", "test")
    first = int(dataset.labels[0])
    assert fig.axes[0].get_title().startswith(f"#0 {classes[first]} ({first})\n")
    assert fig.axes[0].get_title().endswith(" dB")


def test_parse_shape():
    assert parse_shape("64x32") == (64, 32) and parse_shape("7") == (7, 7) and parse_shape((3, 4)) == (3, 4)
    with pytest.raises(ValueError, match="HxW"):
        parse_shape("64x")
