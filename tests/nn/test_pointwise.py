import math

import pytest
import torch
from torch import nn

from inrnet.field import Field, PointSet, check_field
from inrnet.nn.pointwise import (ChannelMixing, Pointwise, PositionalEncoding, channel_mixing, positional_encoding,
                                 sinusoidal_features)


def grid_field(x: torch.Tensor) -> Field:
    """An image batch [B, C, H, W] as a Field on grid points (channels last)."""
    points = PointSet.grid(x.shape[2:], dtype=x.dtype)
    return Field(x.flatten(2).transpose(1, 2), points)


def as_image(values: torch.Tensor, shape) -> torch.Tensor:
    return values.transpose(1, 2).reshape(values.shape[0], -1, *shape)


# channel mixing ---------------------------------------------------------------------
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_channel_mixing_is_a_1x1_conv_on_the_grid(dtype, tol):
    x = torch.randn(2, 3, 5, 7, dtype=dtype)
    conv = nn.Conv2d(3, 4, kernel_size=1).to(dtype)
    mix = ChannelMixing(3, 4).to(dtype)
    with torch.no_grad():
        mix.weight.copy_(conv.weight[:, :, 0, 0])
        mix.bias.copy_(conv.bias)
    out = mix(grid_field(x))
    torch.testing.assert_close(as_image(out.values, (5, 7)), conv(x), rtol=tol, atol=tol)


def test_channel_mixing_without_bias_and_default_init_match_conv_bounds():
    mix = ChannelMixing(16, 8, bias=False)
    assert mix.bias is None and mix.weight.abs().max() <= 1 / 4
    values = torch.randn(2, 6, 16)
    torch.testing.assert_close(channel_mixing(values, mix.weight), values @ mix.weight.T)


def test_normalized_channel_mixing_matches_eq_127_by_loops():
    mix = ChannelMixing(3, 2, normalized=True).double()
    values = torch.randn(2, 4, 3, dtype=torch.float64)
    w, b = mix.weight.detach(), mix.bias.detach()
    expected = torch.zeros(2, 4, 2, dtype=torch.float64)
    for n in range(2):
        for p in range(4):
            for j in range(2):
                total = sum(w[j, k] for k in range(3))
                expected[n, p, j] = sum(w[j, i] / total * values[n, p, i] for i in range(3)) + b[j]
    field = Field(values, PointSet(torch.rand(4, 2, dtype=torch.float64)))
    torch.testing.assert_close(mix(field).values, expected)
    # normalised weights sum to one over the inputs: a constant field c maps to c + b
    const = field.replace(torch.full((2, 4, 3), 2.5, dtype=torch.float64))
    torch.testing.assert_close(mix(const).values, (2.5 + b).expand(2, 4, 2))
    assert bool((w > 0).all())


@pytest.mark.parametrize("normalized", [False, True])
def test_channel_mixing_gradcheck(normalized):
    mix = ChannelMixing(3, 2, normalized=normalized).double()
    points = PointSet(torch.rand(5, 2, dtype=torch.float64))
    values = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)

    def f(v, w, b):
        return channel_mixing(v, w, b, normalized)
    assert torch.autograd.gradcheck(f, (values, mix.weight, mix.bias))
    mix(Field(values, points)).values.sum().backward()
    assert mix.weight.grad is not None and mix.bias.grad is not None


def test_channel_mixing_rejects_bad_inputs():
    mix = ChannelMixing(3, 2)
    points = PointSet.grid((2, 2))
    with pytest.raises(ValueError, match="expects 3 input channels"):
        mix(Field(torch.randn(1, 4, 5), points))
    with pytest.raises(TypeError, match="expects a Field"):
        mix(torch.randn(1, 4, 3))
    with pytest.raises(ValueError, match="C_out, C_in"):
        channel_mixing(torch.randn(1, 4, 3), torch.randn(2, 5))


def test_check_field_with_a_module_checks_dtype_and_device():
    points = PointSet.grid((2, 2))
    labels = Field(torch.ones(1, 4, 3, dtype=torch.long), points)
    mix = ChannelMixing(3, 2)
    assert check_field(labels, "Labels", 3) is labels  # integer fields are fine where no module is named
    with pytest.raises(TypeError, match=r"^MyLayer needs floating-point values, got a field of torch\.int64 values "
                                        r"\(1, 4, 3\)"):
        check_field(labels, "MyLayer", 3, module=mix)
    with pytest.raises(TypeError, match="ChannelMixing needs floating-point values, got a field of torch.bool"):
        mix(Field(torch.ones(1, 4, 3, dtype=torch.bool), points))
    with pytest.raises(ValueError, match="^ChannelMixing is on meta but the field's values are on cpu"):
        mix.to("meta")(Field(torch.randn(1, 4, 3), points))
    assert check_field(labels.to(dtype=torch.float64), "Parameterless", module=nn.ReLU()).values.dtype == torch.float64


def test_channel_mixing_needs_its_parameters_dtype_outside_autocast():
    mix = ChannelMixing(3, 2)
    values = torch.randn(1, 4, 3, dtype=torch.float64)
    field = Field(values, PointSet.grid((2, 2)))
    with pytest.raises(TypeError, match="^ChannelMixing has torch.float32 parameters but the field's values are "
                                        "torch.float64"):
        mix(field)
    torch.testing.assert_close(mix.double()(field).values, values @ mix.weight.T + mix.bias)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast runs the matmul in bfloat16 whatever the dtypes
        assert mix.float()(field.to(dtype=torch.bfloat16)).values.dtype == torch.bfloat16


# activations ------------------------------------------------------------------------
@pytest.mark.parametrize("fn,ref", [(nn.ReLU(), torch.relu), (nn.GELU(), nn.functional.gelu),
                                    (nn.SiLU(), nn.functional.silu), (nn.Hardswish(), nn.functional.hardswish),
                                    (torch.tanh, torch.tanh)])
def test_pointwise_applies_the_function_to_every_value(fn, ref):
    field = Field(torch.randn(2, 6, 3), PointSet.grid((2, 3)))
    out = Pointwise(fn)(field)
    assert out.points is field.points
    torch.testing.assert_close(out.values, ref(field.values))


def test_pointwise_repr_names_the_function_and_registers_modules():
    assert repr(Pointwise(nn.ReLU())) == "Pointwise(ReLU())"
    assert repr(Pointwise(nn.functional.gelu)) == "Pointwise(gelu)"
    layer = Pointwise(nn.PReLU(3))
    assert len(list(layer.parameters())) == 1


def test_pointwise_gradcheck_and_errors():
    values = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    points = PointSet(torch.rand(4, 2, dtype=torch.float64))
    layer = Pointwise(nn.GELU())
    assert torch.autograd.gradcheck(lambda v: layer(Field(v, points)).values, (values,))
    with pytest.raises(ValueError, match="must be elementwise"):
        Pointwise(lambda v: v.sum(-1, keepdim=True))(Field(values, points))
    with pytest.raises(TypeError):
        Pointwise(3)
    with pytest.raises(TypeError, match="expects a Field"):
        layer(values)


# positional encoding ----------------------------------------------------------------
def test_sinusoidal_features_match_a_loop_reference():
    coords = torch.rand(5, 3, dtype=torch.float64) * 2 - 1
    freqs = torch.tensor([1.0, 2.5], dtype=torch.float64)
    feats = sinusoidal_features(coords, freqs)
    assert feats.shape == (5, 12)
    for n in range(5):
        for k in range(3):
            for l in range(2):
                phase = freqs[l].item() * coords[n, k].item()
                assert feats[n, 2 * (k * 2 + l)].item() == pytest.approx(math.sin(phase), abs=1e-14)
                assert feats[n, 2 * (k * 2 + l) + 1].item() == pytest.approx(math.cos(phase), abs=1e-14)


def test_positional_encoding_frequencies():
    expected = math.pi * torch.tensor([1.0, 2, 4, 8], dtype=torch.float64)
    assert torch.allclose(PositionalEncoding(4, 4).frequencies, expected)
    pe = PositionalEncoding(4, 3, max_frequency=9.0)
    assert torch.allclose(pe.frequencies, math.pi * torch.tensor([1.0, 3, 9], dtype=torch.float64))
    assert torch.allclose(PositionalEncoding(4, 1).frequencies, torch.tensor([math.pi], dtype=torch.float64))


def test_positional_encoding_add_sends_feature_c_mod_F_to_channel_c():
    pe = PositionalEncoding(channels=10, num_frequencies=2, dim=2)  # F = 8 features
    field = Field(torch.randn(2, 6, 10), PointSet.grid((2, 3)))
    out = pe(field)
    feats = sinusoidal_features(field.coords, pe.frequencies)
    for c in range(10):
        torch.testing.assert_close(out.values[..., c], field.values[..., c] + feats[:, c % 8])
    assert not isinstance(pe.projection, nn.Parameter)


def test_positional_encoding_1d_is_the_transformer_layout():
    pe = PositionalEncoding(channels=4, num_frequencies=2, dim=1, max_frequency=3.0)
    x = torch.linspace(-1, 1, 5, dtype=torch.float64)[:, None]
    out = pe(Field(torch.zeros(1, 5, 4, dtype=torch.float64), PointSet(x))).values[0]
    for c in range(4):
        w = math.pi * 3.0 ** (c // 2)
        expected = torch.sin(w * x[:, 0]) if c % 2 == 0 else torch.cos(w * x[:, 0])
        torch.testing.assert_close(out[:, c], expected)


def test_positional_encoding_concat_and_learned():
    field = Field(torch.randn(2, 6, 3), PointSet.grid((2, 3)))
    pe = PositionalEncoding(3, 2, mode="concat")
    out = pe(field)
    assert out.channels == pe.out_channels == 3 + 8
    torch.testing.assert_close(out.values[..., :3], field.values)
    torch.testing.assert_close(out.values[0, :, 3:], sinusoidal_features(field.coords, pe.frequencies).float())
    learned = PositionalEncoding(3, 2, learned=True)
    assert isinstance(learned.projection, nn.Parameter)
    torch.testing.assert_close(learned(field).values, PositionalEncoding(3, 2)(field).values)
    learned(field).values.sum().backward()
    assert learned.projection.grad is not None


def test_positional_encoding_gradcheck_and_errors():
    pe = PositionalEncoding(3, 2, learned=True).double()
    points = PointSet(torch.rand(4, 2, dtype=torch.float64))
    values = torch.randn(1, 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, p: positional_encoding(v, points.coords, pe.frequencies, p),
                                    (values, pe.projection))
    with pytest.raises(ValueError, match="expects 3 input channels"):
        pe(Field(torch.randn(1, 4, 2, dtype=torch.float64), points))
    with pytest.raises(ValueError, match="d=2"):
        pe(Field(torch.randn(1, 4, 3, dtype=torch.float64), PointSet(torch.rand(4, 3, dtype=torch.float64))))
    with pytest.raises(ValueError, match="mode"):
        PositionalEncoding(3, 2, mode="mul")
    with pytest.raises(ValueError, match="max_frequency"):
        PositionalEncoding(3, 2, max_frequency=0.5)
