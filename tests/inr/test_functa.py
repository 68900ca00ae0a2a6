"""The functa family: a shared modulated SIREN, batched evaluation, storage, import and latent fitting."""

import json
import math

import pytest
import torch
from torch import nn

from inrnet.inr import (CorruptShardError, FunctaFamily, INRBatch, INRDataset, build_dataset, fit, import_functa,
                        load_inrs, sample, save_inrs)
from inrnet.inr.importer import main as import_main
from inrnet.inr.store import MANIFEST, SHARED
from inrnet.sampling import grid


def _family(width=16, depth=3, latent_dim=8, seed=0, **kw):
    family = FunctaFamily(width=width, depth=depth, latent_dim=latent_dim, **kw)
    return family.with_shared(family.random_base(generator=torch.Generator().manual_seed(seed)))


def _reference(family, latents, coords):
    """One item at a time, written out: Tensor[B, N, c]."""
    base = family.shared
    out = []
    for z in latents:
        shift = base["shift_weight"] @ z + base["shift_bias"]  # ((depth - 1) width,)
        h = coords
        for i in range(family.depth - 1):
            omega = family.first_omega_0 if i == 0 else family.omega_0
            s = shift[i * family.width:(i + 1) * family.width]
            h = torch.sin(omega * (h @ base[f"weight{i}"].T + base[f"bias{i}"] + s))
        last = family.depth - 1
        out.append(h @ base[f"weight{last}"].T + base[f"bias{last}"])
    return torch.stack(out)


def test_batched_evaluation_equals_a_per_item_loop():
    family = _family(depth=4, first_omega_0=20.0)
    latents = torch.randn(5, 8, generator=torch.Generator().manual_seed(1))
    coords = torch.rand(1, 50, 2) * 2 - 1
    inrs = INRBatch(family, {"latent": latents})
    want = _reference(family, latents, coords[0])
    torch.testing.assert_close(inrs(coords), want, atol=1e-5, rtol=1e-4)
    per_item = coords.expand(5, -1, -1).clone()  # (B, N, d) coordinates work too
    torch.testing.assert_close(inrs(per_item), want, atol=1e-5, rtol=1e-4)
    field = sample(inrs, grid((6, 6)), chunk_size=2)
    torch.testing.assert_close(field.values, _reference(family, latents, grid((6, 6))), atol=1e-5, rtol=1e-4)
    assert inrs[2](coords[0]).shape == (50, 1)
    d64 = sample(inrs, grid((4, 4), dtype=torch.float64)).values
    assert d64.dtype == torch.float64


def test_family_identity_follows_the_base():
    a, b = _family(seed=0), _family(seed=1)
    assert a != b and a == _family(seed=0)
    assert a.config()["base_sha256"] == _family(seed=0).config()["base_sha256"]
    unbound = FunctaFamily(**a.config())
    assert unbound == a  # same config, base not bound yet
    with pytest.raises(ValueError, match="no base weights bound"):
        INRBatch(unbound, {"latent": torch.zeros(1, 8)})(torch.zeros(1, 3, 2))
    with pytest.raises(ValueError, match="not the base of"):
        unbound.with_shared(b.shared)


def test_save_load_round_trip_is_bit_exact(tmp_path):
    family = _family()
    latents = torch.randn(7, 8)
    inrs = INRBatch(family, {"latent": latents})
    save_inrs(tmp_path / "d", inrs, torch.arange(7), quality={"psnr_grid": torch.rand(7)}, shard_size=3)
    manifest = json.loads((tmp_path / "d" / MANIFEST).read_text())
    assert manifest["shared"]["file"] == SHARED and manifest["family"]["name"] == "functa"
    loaded, labels = load_inrs(tmp_path / "d")
    assert loaded.family == family and torch.equal(loaded.params["latent"], latents)
    for k, v in family.shared.items():
        assert torch.equal(loaded.family.shared[k], v), k
    coords = grid((5, 5)).unsqueeze(0)
    assert torch.equal(loaded(coords), inrs(coords))
    assert labels.tolist() == list(range(7))


def test_a_corrupt_or_missing_base_file_is_refused(tmp_path):
    save_inrs(tmp_path / "d", INRBatch(_family(), {"latent": torch.randn(2, 8)}), torch.zeros(2, dtype=torch.long))
    path = tmp_path / "d" / SHARED
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptShardError, match="sha256"):
        INRDataset(tmp_path / "d")
    path.unlink()
    with pytest.raises(CorruptShardError, match="missing"):
        INRDataset(tmp_path / "d")
    manifest = json.loads((tmp_path / "d" / MANIFEST).read_text())
    del manifest["shared"]
    (tmp_path / "d" / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="no 'shared' entry"):
        INRDataset(tmp_path / "d")


def test_fitting_latents_with_a_fixed_base_lowers_the_error(tmp_path):
    family = _family(width=32, depth=3, latent_dim=16, omega_0=10.0, first_omega_0=10.0)
    truth = INRBatch(family, {"latent": torch.randn(3, 16, generator=torch.Generator().manual_seed(2))})
    images = ((sample(truth, grid((12, 12))).values + 1) / 2).clamp(0, 1)  # (3, 144, 1), in [0, 1]
    images = images.transpose(1, 2).reshape(3, 1, 12, 12)
    start = ((sample(INRBatch(family, family.init_params(3)), grid((12, 12))).values + 1) / 2).clamp(0, 1)
    err0 = (start.transpose(1, 2).reshape(3, 1, 12, 12) - images).pow(2).mean((1, 2, 3))
    fitted, quality = fit(images, family, steps=150, lr=5e-2, progress=False)
    assert fitted.family == family and set(fitted.params) == {"latent"}
    for k, v in family.shared.items():
        assert torch.equal(fitted.family.shared[k], v), k  # the base stays fixed
    err = 10 ** (-quality["psnr_grid"] / 10)  # MSE at peak 1
    assert bool((err < 0.5 * err0).all()), (err, err0)
    built = build_dataset(tmp_path / "b", [(img, i) for i, img in enumerate(images)], family, shard_size=2,
                          fit_kwargs={"steps": 5, "lr": 5e-2}, progress=False)
    assert built.family == family and (tmp_path / "b" / SHARED).is_file()
    assert INRDataset(tmp_path / "b").batch([0, 2])[0](grid((3, 3)).unsqueeze(0)).shape == (2, 9, 1)


class ModulatedSiren(nn.Module):
    """Someone else's functa base: SIREN layers net.{i} and a latent-to-shift map."""

    def __init__(self, width=16, depth=3, latent_dim=8, omega_0=30.0):
        super().__init__()
        dims = [2] + [width] * (depth - 1) + [1]
        self.net = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.latent_to_modulation = nn.Linear(latent_dim, (depth - 1) * width)
        self.width, self.omega_0 = width, omega_0
        for i, layer in enumerate(self.net):
            bound = 1 / layer.in_features if i == 0 else math.sqrt(6 / layer.in_features) / omega_0
            nn.init.uniform_(layer.weight, -bound, bound)

    def forward(self, x, z):  # x (N, 2), z (L,)
        shifts = self.latent_to_modulation(z).split(self.width)
        h = x
        for layer, s in zip(self.net[:-1], shifts):
            h = torch.sin(self.omega_0 * (layer(h) + s))
        return self.net[-1](h)


def test_import_from_files_matches_the_original(tmp_path):
    torch.manual_seed(0)
    model = ModulatedSiren()
    latents = torch.randn(4, 8)
    torch.save(model.state_dict(), tmp_path / "base.pth")
    torch.save(latents, tmp_path / "latents.pt")
    (tmp_path / "labels.txt").write_text("cat\ndog\ncat\nbird\n")
    ds = import_functa(tmp_path / "base.pth", tmp_path / "latents.pt", tmp_path / "labels.txt", tmp_path / "out")
    assert len(ds) == 4 and ds.labels.tolist() == [1, 2, 1, 0]
    assert json.loads((tmp_path / "out" / "import.json").read_text())["classes"] == ["bird", "cat", "dog"]
    x = torch.rand(30, 2) * 2 - 1
    with torch.no_grad():
        want = torch.stack([model(x, z) for z in latents])  # (4, N, 1)
    torch.testing.assert_close(sample(ds.batch(range(4))[0], x).values, want, atol=1e-5, rtol=1e-4)
    import_main(["--functa", str(tmp_path / "base.pth"), str(tmp_path / "latents.pt"), "--out",
                 str(tmp_path / "cli")])
    assert INRDataset(tmp_path / "cli").family == ds.family


def test_import_errors_name_the_parameter(tmp_path):
    model = ModulatedSiren()
    state = model.state_dict()
    torch.save(torch.randn(3, 8), tmp_path / "latents.pt")
    bad = dict(state, **{"latent_to_modulation.weight": torch.randn(31, 8),
                         "latent_to_modulation.bias": torch.randn(31)})
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="latent_to_modulation.weight.*32"):
        import_functa(tmp_path / "bad.pth", tmp_path / "latents.pt", None, tmp_path / "o1")
    torch.save(state, tmp_path / "base.pth")
    torch.save(torch.randn(3, 5), tmp_path / "wrong.pt")
    with pytest.raises(ValueError, match="wrong.pt.*latent_dim=8"):
        import_functa(tmp_path / "base.pth", tmp_path / "wrong.pt", None, tmp_path / "o2")
    with pytest.raises(ValueError, match="2 labels for 3 latents"):
        import_functa(tmp_path / "base.pth", tmp_path / "latents.pt", [0, 1], tmp_path / "o3")
    torch.save({k: v for k, v in state.items() if "modulation" not in k}, tmp_path / "plain.pth")
    with pytest.raises(ValueError, match="one shift map"):
        import_functa(tmp_path / "plain.pth", tmp_path / "latents.pt", None, tmp_path / "o4")
    torch.save(dict(state, **{"net.1.weight": torch.randn(16, 5)}), tmp_path / "chain.pth")
    with pytest.raises(ValueError, match="'net.1.weight' takes 5 inputs"):
        import_functa(tmp_path / "chain.pth", tmp_path / "latents.pt", None, tmp_path / "o5")
    family = _family()
    with pytest.raises(ValueError, match="base parameter 'weight1'.*\\[16, 16\\]"):
        FunctaFamily(width=16, depth=3, latent_dim=8).with_shared(dict(family.shared, weight1=torch.zeros(16, 3)))
    with pytest.raises(ValueError, match="missing \\['shift_bias'\\]"):
        FunctaFamily(width=16, depth=3, latent_dim=8).with_shared(
            {k: v for k, v in family.shared.items() if k != "shift_bias"})
    with pytest.raises(ValueError, match="parameter 'latent'"):
        INRBatch(family, {"latent": torch.zeros(2, 7)})
    with pytest.raises(SystemExit):
        import_main(["--out", str(tmp_path / "o6")])  # neither a folder nor --functa
