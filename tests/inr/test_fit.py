"""Batched fitting: real images reach a measured quality; INRs in a group are independent."""

import math

import numpy as np
import pytest
import torch

from inrnet.inr import INRBatch, PixelINR, SirenFamily, fit, fit_quality, psnr, sample
from inrnet.sampling import grid


def _real_images(size: int = 32) -> torch.Tensor:
    """Four scikit-image photos, RGB, resized to size x size, values in [0, 1]: Tensor[4, 3, size, size]."""
    data = pytest.importorskip("skimage.data")
    resize = pytest.importorskip("skimage.transform").resize
    photos = [data.astronaut(), data.coffee(), data.chelsea(), np.stack([data.camera()] * 3, -1)]
    x = np.stack([resize(p, (size, size), anti_aliasing=True) for p in photos])  # (4, size, size, 3)
    return torch.tensor(x, dtype=torch.float32).permute(0, 3, 1, 2).clamp(0, 1)


def test_real_images_reach_measured_quality():
    # Measured (4 seeds): on-grid PSNR >= 40.9 dB, off-grid >= 30.3 dB after 150 steps.
    images = _real_images()
    family = SirenFamily(2, 3, width=64, depth=3)
    inrs, quality = fit(images, family, steps=150, lr=1e-3, batch_size=4, progress=False)
    assert len(inrs) == 4 and set(quality) == {"psnr_grid", "psnr_offgrid", "lipschitz_bound"}
    assert quality["psnr_grid"].min() >= 36.0, quality
    assert quality["psnr_offgrid"].min() >= 28.0, quality
    # the INRs output the family's range [-1, 1]: 2 * image - 1
    values = sample(inrs, grid((32, 32))).values  # (4, P, 3)
    target = 2 * images.flatten(2).transpose(1, 2) - 1
    torch.testing.assert_close(psnr(values, target, peak=2.0), quality["psnr_grid"], rtol=1e-4, atol=1e-3)


def test_inrs_of_a_group_are_independent():
    images = torch.rand(3, 1, 6, 5, dtype=torch.float64)
    family = SirenFamily(2, 1, width=8, depth=3)
    init = {k: v[0] for k, v in family.init_params(1, dtype=torch.float64).items()}
    together, q_all = fit(images, family, steps=10, batch_size=3, init=init, dtype=torch.float64, progress=False)
    alone, q_one = fit(images, family, steps=10, batch_size=1, init=init, dtype=torch.float64, progress=False)
    for k in together.params:
        torch.testing.assert_close(together.params[k], alone.params[k], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(q_all["psnr_grid"], q_one["psnr_grid"])


def test_shared_init_and_lr_zero_keeps_it():
    family = SirenFamily(2, 1, width=8, depth=3)
    start = INRBatch(family, family.init_params(1))
    inrs, _ = fit(torch.rand(5, 1, 4, 4), family, steps=2, lr=0.0, init=start, batch_size=2, progress=False)
    for k, v in inrs.params.items():
        assert torch.equal(v, start.params[k].expand_as(v))


def test_random_point_subsets_and_data_range():
    images = 255 * torch.rand(2, 1, 8, 8)
    family = SirenFamily(2, 1, width=16, depth=3)
    _, before = fit(images, family, steps=1, lr=0.0, data_range=(0, 255), progress=False)
    _, after = fit(images, family, steps=60, points_per_step=32, data_range=(0, 255), progress=False)
    assert (after["psnr_grid"] > before["psnr_grid"] + 5).all()


def test_fit_quality_reference():
    images = torch.rand(2, 1, 4, 6, dtype=torch.float64)
    family = SirenFamily(2, 1, width=8, depth=3)
    params = family.init_params(2, dtype=torch.float64)
    q = fit_quality(family, params, images)
    out = (INRBatch(family, params)(grid((4, 6), dtype=torch.float64)[None]) + 1) / 2  # back to [0, 1]
    mse = ((out - images.flatten(2).transpose(1, 2)) ** 2).mean(dim=(1, 2))
    torch.testing.assert_close(q["psnr_grid"], (-10 * torch.log10(mse)).float())
    fine = grid((8, 12), dtype=torch.float64)
    out_fine = (INRBatch(family, params)(fine[None]) + 1) / 2
    ref = sample(PixelINR(images, "linear"), fine).values
    want = -10 * torch.log10(((out_fine - ref) ** 2).mean(dim=(1, 2)))
    torch.testing.assert_close(q["psnr_offgrid"], want.float())
    assert math.isinf(float(psnr(images, images)[0]))


def test_bad_images():
    family = SirenFamily(2, 3, width=8, depth=3)
    with pytest.raises(ValueError, match="C=3"):
        fit(torch.rand(2, 1, 4, 4), family, steps=1, progress=False)
    with pytest.raises(ValueError, match="data_range"):
        fit(2 * torch.rand(2, 3, 4, 4) + 1, family, steps=1, progress=False)
    with pytest.raises(ValueError, match="NaN"):
        fit(torch.full((1, 3, 4, 4), float("nan")), family, steps=1, progress=False)
    with pytest.raises(ValueError, match="points_per_step"):
        fit(torch.rand(1, 3, 4, 4), family, steps=1, points_per_step=17, progress=False)
    with pytest.raises(ValueError, match="one INR of"):
        fit(torch.rand(1, 3, 4, 4), family, steps=1, init=INRBatch(family, family.init_params(2)), progress=False)


@pytest.mark.slow
def test_compiled_fit_matches_eager():
    images = torch.rand(4, 1, 8, 8)
    family = SirenFamily(2, 1, width=16, depth=3)
    eager, q_eager = fit(images, family, steps=20, progress=False)
    compiled, q_comp = fit(images, family, steps=20, compile=True, progress=False)
    torch.testing.assert_close(q_comp["psnr_grid"], q_eager["psnr_grid"], rtol=1e-3, atol=0.05)
