"""SqueezeAutoencoder / ConvAutoencoder: shapes, fused vs plain-PyTorch twin, state dicts, parameter counts."""
import pytest
import torch

import squeezeae_ext as sx
from squeezeae_ext.models import build_model, count_parameters

SMALL = dict(widths=(8, 16, 32), latent_channels=8)


def fused_and_reference(device, dtype=torch.float32, **kwargs):
    torch.manual_seed(0)
    fused = sx.SqueezeAutoencoder(**{**SMALL, **kwargs}).to(device, dtype)
    reference = sx.SqueezeAutoencoder(**{**SMALL, **kwargs}, reference=True).to(device, dtype)
    reference.load_state_dict(fused.state_dict())
    return fused, reference


@pytest.mark.parametrize("model", ["squeeze", "conv"])
@pytest.mark.parametrize("size", [(32, 32), (33, 31), (17, 20), (8, 8)])
def test_shapes(model, size):
    extra = {"reference": True} if model == "squeeze" else {}
    net = build_model(model, in_channels=3, **SMALL, **extra)
    x = torch.rand(2, 3, *size)
    latent, indices, sizes = net.encode(x)
    assert latent.shape[:2] == (2, 8)
    assert len(indices) == len(sizes) == 3
    assert sizes[0] == size
    h, w = size
    for level, (idx, level_size) in enumerate(zip(indices, sizes)):
        assert level_size == (h, w)
        h, w = h // 2, w // 2
        assert idx.shape[-2:] == (h, w)
    assert latent.shape[-2:] == (h, w)
    y = net.decode(latent, indices, sizes)
    assert y.shape == x.shape
    assert 0 <= y.min() and y.max() <= 1  # sigmoid head


def test_fused_forward_shapes_odd(device):
    fused, _ = fused_and_reference(device)
    for size in [(32, 32), (33, 31), (9, 14)]:
        x = torch.rand(3, 1, *size, device=device)
        assert fused(x).shape == x.shape


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
@pytest.mark.parametrize("size", [(32, 32), (19, 22)])
def test_fused_matches_reference(device, dtype, tol, size):
    fused, reference = fused_and_reference(device, dtype)
    x = torch.rand(4, 1, *size, device=device, dtype=dtype)
    out_fused, out_reference = fused(x), reference(x)
    torch.testing.assert_close(out_fused, out_reference, atol=tol, rtol=tol)
    target = torch.rand_like(x)
    ((out_fused - target) ** 2).mean().backward()
    ((out_reference - target) ** 2).mean().backward()
    grads_reference = {name: p.grad for name, p in reference.named_parameters()}
    for name, p in fused.named_parameters():
        torch.testing.assert_close(p.grad, grads_reference[name], atol=tol * 10, rtol=tol * 10, msg=name)


def test_fused_channels_last_matches(device):
    fused, reference = fused_and_reference(device)
    x = torch.rand(2, 1, 21, 32, device=device)
    expected = reference(x)
    fused = fused.to(memory_format=torch.channels_last)
    torch.testing.assert_close(fused(x.contiguous(memory_format=torch.channels_last)), expected,
                               atol=2e-5, rtol=2e-5)


def test_state_dict_moves_both_ways():
    torch.manual_seed(1)
    fused = sx.SqueezeAutoencoder(**SMALL)
    reference = sx.SqueezeAutoencoder(**SMALL, reference=True)
    assert list(fused.state_dict()) == list(reference.state_dict())
    assert [(n, p.shape) for n, p in fused.named_parameters()] == \
        [(n, p.shape) for n, p in reference.named_parameters()]
    reference.load_state_dict(fused.state_dict())
    fused2 = sx.SqueezeAutoencoder(**SMALL)
    fused2.load_state_dict(reference.state_dict())
    for (name, a), b in zip(fused.state_dict().items(), fused2.state_dict().values()):
        assert torch.equal(a, b), name


def test_decoder_uses_unpool_fire_and_only_stem_head_are_convs():
    net = sx.SqueezeAutoencoder()
    assert all(isinstance(block, sx.UnpoolFire) for block in net.decoder)
    assert all(isinstance(block, sx.Fire) and not isinstance(block, sx.UnpoolFire) for block in net.encoder)
    top_level_convs = [name for name, m in net.named_children() if isinstance(m, torch.nn.Conv2d)]
    assert top_level_convs == ["stem", "head"]


@pytest.mark.parametrize("widths", [(16, 32, 64), (32, 64, 128)])
def test_parameter_ratio_vs_conv(widths):
    squeeze = count_parameters(sx.SqueezeAutoencoder(widths=widths))
    conv = count_parameters(sx.ConvAutoencoder(widths=widths))
    assert conv / squeeze > 3, (conv, squeeze)


def test_widths_depth_and_config_roundtrip():
    net = sx.SqueezeAutoencoder(widths=8, depth=4, latent_channels=4, squeeze_ratio=0.5)
    assert net.widths == [8, 16, 32, 64]
    again = build_model(**net.config)
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in net.state_dict().items()}
    conv = sx.ConvAutoencoder(widths=(4, 8))
    assert build_model(**conv.config).config == conv.config
    with pytest.raises(ValueError, match="depth=2 contradicts"):
        sx.SqueezeAutoencoder(widths=(8, 16, 32), depth=2)


def test_pct3x3_splits_the_expand_planes():
    """SqueezeNet's pct3x3: the share of a Fire's expand planes that are 3x3; kept in the config."""
    net = sx.SqueezeAutoencoder(widths=(16, 32), pct3x3=0.75)
    assert (net.encoder[1].expand1x1.out_channels, net.encoder[1].expand3x3.out_channels) == (8, 24)
    assert build_model(**net.config).config == net.config
    for bad in (0, 1, 1.5):
        with pytest.raises(ValueError, match="pct3x3 must be in"):
            sx.SqueezeAutoencoder(pct3x3=bad)


def test_bad_inputs():
    net = sx.SqueezeAutoencoder(**SMALL, reference=True)
    with pytest.raises(ValueError, match=r"expected input \[N, 1, H, W\]"):
        net(torch.rand(2, 3, 32, 32))
    with pytest.raises(ValueError, match="too small"):
        net(torch.rand(2, 1, 7, 32))
    with pytest.raises(ValueError, match="model must be one of"):
        build_model("unet")
