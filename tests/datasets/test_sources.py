import numpy as np
import pytest
import torch
from PIL import Image

from inrnet.datasets.sources import ImageDecodeError, check_images, load_image, write_index


def _png(path, array):
    Image.fromarray(array).save(path)
    return path


def test_load_image_crop_and_stretch(tmp_path):
    array = np.zeros((10, 20, 3), dtype=np.uint8)
    array[:, :5] = 255  # a white band on the left quarter, cropped away by the centred square
    path = _png(tmp_path / "a.png", array)
    full = load_image(path)
    assert full.shape == (3, 10, 20) and torch.equal(full, torch.from_numpy(array).permute(2, 0, 1) / 255.0)
    assert float(load_image(path, (10, 10)).max()) == 0.0  # centre crop: columns 5..15
    stretched = load_image(path, (10, 10), crop=False)
    assert stretched.shape == (3, 10, 10) and float(stretched[:, :, 0].min()) > 0.9
    assert load_image(path, (4, 4), mode="L").shape == (1, 4, 4)


def test_decode_errors_are_named_and_counted(tmp_path):
    good = _png(tmp_path / "good.png", np.zeros((4, 4, 3), dtype=np.uint8))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    truncated = tmp_path / "trunc.png"
    truncated.write_bytes(good.read_bytes()[:30])
    with pytest.raises(ImageDecodeError, match="bad.jpg"):
        load_image(bad)
    ok, failed = check_images([good, bad, truncated, tmp_path / "missing.png"])
    assert ok == [True, False, False, False] and len(failed) == 3


def test_write_index_refuses_other_settings(tmp_path):
    path = tmp_path / "s" / "index.json"
    first = write_index(path, {"settings": {"a": 1}, "files": ["x"]})
    assert write_index(path, {"settings": {"a": 1}}) == first
    with pytest.raises(ValueError, match="settings"):
        write_index(path, {"settings": {"a": 2}})
    path.write_text("{broken")
    with pytest.raises(ValueError, match="corrupt"):
        write_index(path, {"settings": {"a": 1}})
