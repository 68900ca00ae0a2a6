"""INRs on the device: batched evaluation (``inrnet.inr.sample``) against per-INR float64
loops, and batched fitting against a plain per-INR Adam loop."""

import math

import pytest
import torch
import torch.nn.functional as F

from inrnet.datasets.fashion_mnist import default_images
from inrnet.field import PointSet
from inrnet.inr import FourierFamily, INRBatch, PixelINR, SirenFamily, fit, sample
from inrnet.sampling import grid, sobol

pytestmark = pytest.mark.gpu

D64 = torch.float64
FAMILIES = {"siren": SirenFamily(2, 3, width=16, depth=3),
            "fourier": FourierFamily(2, 3, features=8, sigma=2.0, width=16, depth=3)}


def _one_inr(family, params: dict, x: torch.Tensor) -> torch.Tensor:
    """One INR written out layer by layer in float64: coords Tensor[N, d] -> Tensor[N, c]."""
    p = {k: v.double() for k, v in params.items()}
    h = x.double()
    if isinstance(family, FourierFamily):
        phase = 2 * math.pi * h @ p["freq"].T  # (N, F)
        h = torch.cat([phase.cos(), phase.sin()], -1)
    for i in range(family.depth):
        h = h @ p[f"weight{i}"].T + p[f"bias{i}"]
        if i < family.depth - 1 and isinstance(family, SirenFamily):
            h = torch.sin((family.first_omega_0 if i == 0 else family.omega_0) * h)
        elif i < family.depth - 1:
            h = h.relu()
    return h


def _item(batch: INRBatch, i: int) -> dict:
    return {k: v[i] for k, v in batch.params.items()}


@pytest.mark.parametrize("params_on", ["device", "cpu"])
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_batched_evaluation_matches_a_loop(name, params_on, device, close):
    """19 INRs in chunks of 8 (a short last chunk), shared coordinates and one transform per INR."""
    family = FAMILIES[name]
    batch = INRBatch(family, family.init_params(19, generator=torch.Generator().manual_seed(1)))
    coords = sobol(300, 2, seed=2)
    points = PointSet(coords.to(device))
    inrs = batch.to(device) if params_on == "device" else batch
    field = sample(inrs, points, chunk_size=8)
    assert field.values.device.type == device.type and field.points is points
    ref = torch.stack([_one_inr(family, _item(batch, i), coords) for i in range(19)])  # (19, N, 3)
    close(field.values, ref)
    scale = torch.linspace(0.5, 1.0, 19)
    moved = sample(inrs, points, chunk_size=8, transform=lambda c: c[None] * scale.to(c)[:, None, None])
    close(moved.values, torch.stack([_one_inr(family, _item(batch, i), coords * scale[i]) for i in range(19)]))


def test_float64_points_evaluate_float64_on_the_device(device, close):
    family = FAMILIES["siren"]
    batch = INRBatch(family, family.init_params(5))
    coords = sobol(200, 2, seed=3, dtype=D64)
    values = sample(batch.to(device), PointSet(coords.to(device))).values
    assert values.dtype == D64
    close(values, torch.stack([_one_inr(family, _item(batch, i), coords) for i in range(5)]), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode", ["linear", "nearest"])
def test_pixel_inrs_match_grid_sample(mode, device, close):
    images = torch.rand(5, 2, 7, 6)
    coords = torch.cat([sobol(200, 2, seed=4), grid((7, 6))])  # scattered points, then the 42 cell centres
    values = sample(PixelINR(images.to(device), mode), PointSet(coords.to(device))).values.cpu()
    assert torch.equal(values[:, 200:], images.flatten(2).transpose(1, 2))  # exact on the cell centres
    xy = coords.double().flip(-1).reshape(1, -1, 1, 2).expand(5, -1, -1, -1)  # grid_sample wants (column, row)
    ref = F.grid_sample(images.double(), xy, mode="bilinear" if mode == "linear" else "nearest",
                        padding_mode="border", align_corners=False)  # (B, C, N, 1)
    ref = ref.squeeze(-1).transpose(1, 2)  # (B, N, C)
    if mode == "nearest":  # on a cell boundary grid_sample rounds half to even, we take the cell above
        cell = (coords.double() + 1) * torch.tensor([7 / 2, 6 / 2], dtype=D64)
        keep = ((cell - cell.round()).abs() > 1e-4).all(-1)
        values, ref = values[:, keep], ref[:, keep]
    close(values, ref)


def _adam_loop(family, init: dict, image: torch.Tensor, steps: int, lr: float) -> dict:
    """One INR fitted alone in float64 with ``torch.optim.Adam``: MSE to the image mapped to
    the family's value range, on the pixel centres."""
    params = {k: v.detach().double().clone().requires_grad_() for k, v in init.items()}
    x = grid(tuple(image.shape[1:]), dtype=D64)
    lo, hi = family.value_range
    target = (lo + image.double() * (hi - lo)).flatten(1).T  # (P, C)
    opt = torch.optim.Adam(list(params.values()), lr=lr)
    for _ in range(steps):
        loss = (_one_inr(family, params, x) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {k: v.detach() for k, v in params.items()}


def test_float64_fitting_matches_a_plain_adam_loop(device, close):
    """Two groups (2 + 1 INRs) from one shared init, fitted on the device, against each INR
    fitted alone on the CPU; and the returned quality against PSNR by hand."""
    family = SirenFamily(2, 1, width=16, depth=3)
    init = {k: v[0] for k, v in family.init_params(1, dtype=D64).items()}
    images = torch.rand(3, 1, 6, 5, dtype=D64)
    inrs, quality = fit(images, family, steps=12, lr=1e-3, batch_size=2, init=init, device=device, dtype=D64,
                        progress=False)
    assert inrs.device == images.device and quality["psnr_grid"].device == images.device
    x = grid((6, 5), dtype=D64)
    for i in range(3):
        want = _adam_loop(family, init, images[i], steps=12, lr=1e-3)
        for k in want:
            close(inrs.params[k][i], want[k], rtol=1e-8, atol=1e-10)
        mse = ((_one_inr(family, want, x) + 1) / 2 - images[i].flatten(1).T).pow(2).mean()
        close(quality["psnr_grid"][i], -10 * torch.log10(mse), rtol=1e-6, atol=1e-6)


def test_float32_fitting_on_the_device_reaches_the_cpu_quality(device):
    """The Fashion-MNIST SIREN (2-32-32-1, omega_0 = 30) on 8 real images, random pixel subsets
    each step: float32 on the device against float64 on the CPU from the same seed."""
    images = default_images("test")[0][:8].unsqueeze(1).float().div(255)  # (8, 1, 28, 28)
    family = SirenFamily(2, 1, width=32, depth=3)
    kw = dict(steps=40, lr=3e-3, batch_size=8, points_per_step=392, seed=3, progress=False)
    inrs, q = fit(images.to(device), family, dtype=torch.float32, **kw)
    _, q64 = fit(images.double(), family, dtype=D64, **kw)
    assert inrs.device.type == device.type and inrs.dtype == torch.float32
    assert float(q64["psnr_grid"].min()) > 18.0, q64  # it learned something, so the comparison means something
    torch.testing.assert_close(q["psnr_grid"].cpu().double(), q64["psnr_grid"].double(), rtol=0, atol=0.05)
