"""Vision transformers convert: timm's ``PatchEmbed`` becomes a patch-lattice B-spline convolution
(`inrnet.convert.token_layers`), the rest of the ViT runs on its tokens unchanged; exact on the grid.

Random weights, small inputs (and one at 224 x 224): 0.3-1.5 s a test on one thread. The input channels are
inferred from ``PatchEmbed.proj``.
"""

import copy

import pytest
import timm
import torch
from timm.layers import PatchEmbed
from torch import nn

from inrnet.convert import ConversionError, from_torch
from inrnet.convert.token_layers import PatchEmbedOnField
from inrnet.field import Field, PointSet
from inrnet.inr import PixelINR, sample
from inrnet.sampling import sobol

D64 = torch.float64


def vit(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, **kwargs).eval()


def smooth_image(coords: torch.Tensor) -> torch.Tensor:
    """Three smooth channels, Tensor[N, 3], of coordinates Tensor[N, 2]."""
    x, y = coords[:, 0], coords[:, 1]
    return torch.stack([torch.sin(2 * x) * torch.cos(3 * y), torch.exp(-x * x - 0.5 * y), 0.5 + 0.3 * x * y], -1)


class FixedTokens(nn.Module):
    """Stands in for a ViT's ``patch_embed``: returns the given tokens whatever the image."""

    def __init__(self, tokens: torch.Tensor):
        super().__init__()
        self.tokens = tokens

    def forward(self, x):
        return self.tokens


# (name, create_model options, input shape, batch)
MODELS = [
    ("vit_tiny_patch16_224", dict(), (224, 224), 1),  # as timm makes it: 14 x 14 patches, 1.2 s
    ("vit_tiny_patch16_224", dict(img_size=32), (32, 32), 2),
    ("vit_tiny_patch16_224", dict(img_size=(32, 48)), (32, 48), 1),  # non-square: a 2 x 3 patch lattice
    ("vit_tiny_patch16_224", dict(img_size=32, patch_size=8), (32, 32), 2),
    ("deit_tiny_patch16_224", dict(img_size=32), (32, 32), 2),
    ("deit_tiny_distilled_patch16_224", dict(img_size=32), (32, 32), 2),  # class and distillation tokens
    ("vit_small_patch16_224", dict(img_size=(48, 32)), (48, 32), 1),
    # NHWC tokens and position embeddings resampled to the patch lattice
    ("vit_tiny_patch16_224", dict(img_size=32, dynamic_img_size=True), (32, 32), 1),
    # the far sides zero-padded by half a patch: a cropped B-spline convolution
    ("vit_tiny_patch16_224", dict(img_size=40, dynamic_img_size=True, dynamic_img_pad=True), (40, 40), 1),
]


@pytest.mark.parametrize("name,options,shape,batch", MODELS)
def test_vision_transformer_is_exact_on_the_grid(name, options, shape, batch, h):
    cnn = h.randomize_norms(vit(name, **options))
    err, inet, out, ref = h.compare(cnn, shape, batch=batch)
    assert err < 1e-4, f"{name} {options}: relative error {err:.2e}"
    assert out.shape == ref.shape == (batch, 1000)
    assert isinstance(inet.patch_embed, PatchEmbedOnField)
    assert set(inet.state_dict()) == set(cnn.state_dict())  # timm's parameter names


def test_vit_float64_is_exact_to_rounding(h):
    cnn = h.randomize_norms(vit("vit_tiny_patch16_224", img_size=(32, 48)))
    err, *_ = h.compare(cnn, (32, 48), batch=2, dtype=D64)
    assert err < 1e-9


@pytest.mark.parametrize("options", [dict(), dict(norm_layer=nn.LayerNorm), dict(flatten=False),
                                     dict(output_fmt="NHWC", norm_layer=nn.LayerNorm), dict(output_fmt="NCL"),
                                     dict(patch_size=(8, 4), strict_img_size=False)])
def test_patch_embed_layouts_are_timms(options, h):
    torch.manual_seed(0)
    embed = PatchEmbed(**{"img_size": (24, 40), "patch_size": 8, "embed_dim": 16, **options})
    err, _, out, ref = h.compare(nn.Sequential(h.randomize_norms(embed)), (24, 40), dtype=D64)
    assert err < 1e-12 and out.shape == ref.shape


def test_vit_on_sobol_points_runs_the_transformer_on_the_qmc_tokens():
    cnn = vit("deit_tiny_distilled_patch16_224", img_size=32)
    inet = from_torch(cnn, (32, 32))
    field = sample(PixelINR(torch.randn(2, 3, 32, 32)), PointSet(sobol(2048, 2, seed=0)))
    with torch.no_grad():
        logits = inet(field)
        tokens = inet.patch_embed(field)  # (B, 4, 192): one per patch, from the 2048 points
        cnn.patch_embed = FixedTokens(tokens)
        ref = cnn(torch.zeros(2, 3, 32, 32))  # timm's transformer on the same tokens
    assert logits.shape == (2, 1000) and bool(torch.isfinite(logits).all())
    assert tokens.shape == (2, 4, 192)
    assert torch.allclose(logits, ref, rtol=1e-5, atol=1e-6)


def test_vit_tokens_are_on_the_patch_lattice_for_either_latent():
    """``PatchEmbed`` always writes its tokens on the patch lattice: ``latent="lattice"`` changes nothing."""
    cnn = vit("vit_tiny_patch16_224", img_size=32)
    field = sample(PixelINR(torch.randn(1, 3, 32, 32)), PointSet(sobol(1000, 2, seed=0)))
    with torch.no_grad():
        points, lattice = (from_torch(cnn, (32, 32), latent=latent)(field) for latent in
                           ("points", "lattice"))
    assert torch.equal(points, lattice)


def test_converted_vit_deepcopies_and_pickles(tmp_path):
    inet = from_torch(vit("vit_tiny_patch16_224", img_size=32, patch_size=8), (32, 32))
    field = sample(PixelINR(torch.randn(1, 3, 32, 32)), PointSet(sobol(1024, 2, seed=1)))
    torch.save(inet, tmp_path / "vit.pt")
    with torch.no_grad():
        ref = inet(field)
        for other in (copy.deepcopy(inet), torch.load(tmp_path / "vit.pt", weights_only=False)):
            assert torch.equal(other(field), ref)


def test_patch_embedding_on_sobol_points_is_a_qmc_estimate():
    """On ``N`` Sobol points of a smooth image each token is a QMC estimate of the integral of the
    B-spline-interpolated 16 x 16 kernel against the image over its patch (float64, timm's random
    weights). Measured over 8 scrambles (seeds 0-7), max |error| / max |token|:

    * against that integral (the tokens on a 256 x 256 grid, itself within 5.2e-4 of a
      512 x 512 one): 6.9e-2-1.5e-1 at N = 2^12, at most 6.1e-3 at N = 2^16 (1.2e-3-6.1e-3),
      the error falling by a factor 20 or more;
    * against the tokens on ``grid(32, 32)`` (timm's): 4.2e-2-4.4e-2 at N = 2^16, i.e. the
      integral's own distance to the discrete sum, 4.4e-2 for random weights (the spline
      interpolating white-noise taps, and its edge basis functions cut at the patch's border;
      1.5e-2 for smooth weights).
    """
    inet = from_torch(vit("vit_tiny_patch16_224", img_size=32).to(D64), (32, 32))

    def tokens(points: PointSet) -> torch.Tensor:
        with torch.no_grad():
            return inet.patch_embed(Field(smooth_image(points.coords)[None], points))[0]  # (4, 192)

    def error(a, b):
        return float((a - b).abs().max() / b.abs().max())

    grid = tokens(PointSet.grid((32, 32), dtype=D64))
    integral = tokens(PointSet.grid((256, 256), dtype=D64))
    coarse = tokens(PointSet(sobol(2 ** 12, 2, seed=0, dtype=D64)))
    dense = tokens(PointSet(sobol(2 ** 16, 2, seed=0, dtype=D64)))
    assert error(dense, integral) < 1.5e-2
    assert error(dense, integral) < error(coarse, integral) / 5
    assert error(dense, grid) < 6e-2


@pytest.mark.parametrize("net,shape,match", [
    (nn.Sequential(PatchEmbed(img_size=None, patch_size=16, embed_dim=8, dynamic_img_pad=True)), (36, 32),
     r"dynamic_img_pad=True pads an axis of 36 pixels by 12"),
    (nn.Sequential(PatchEmbed(img_size=None, patch_size=1, embed_dim=8)), (8, 8), r"patch_size=\(1, 1\)"),
    (nn.Sequential(nn.Conv2d(3, 3, 3, stride=2, padding=1), PatchEmbed(img_size=16, patch_size=8, embed_dim=8)),
     (32, 32), r"PatchEmbed at '1': PatchEmbed converts on the input's points only"),
])
def test_unsupported_patch_embed_options_are_named(net, shape, match):
    with pytest.raises(ConversionError, match=match):
        from_torch(net, shape)


def test_padded_patch_projection_is_named():
    embed = PatchEmbed(img_size=32, patch_size=8, embed_dim=8)
    embed.proj = nn.Conv2d(3, 8, 8, stride=8, padding=1)
    with pytest.raises(ConversionError, match=r"proj.padding=\(1, 1\)"):
        from_torch(nn.Sequential(embed), (32, 32))


def test_first_conv_options_reach_the_patch_convolution():
    """``first_conv=`` sets the patch convolution's quadrature (the ratio estimator keeps the grid exact);
    ``support_extent="basis"`` needs piecewise-linear kernels, which 16 taps are not."""
    model = vit("vit_tiny_patch16_224", img_size=32)
    images = torch.randn(2, 3, 32, 32)
    inet = from_torch(model, (32, 32), first_conv={"estimator": "mean"})
    assert inet.patch_embed.proj.estimator == "mean"
    with torch.no_grad():
        out = inet(sample(PixelINR(images), PointSet.grid((32, 32))))
        torch.testing.assert_close(out, model(images), rtol=1e-4, atol=1e-4)
    with pytest.raises(ConversionError, match="piecewise-linear"):
        from_torch(model, (32, 32), first_conv={"support_extent": "basis"})
