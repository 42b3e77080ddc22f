"""squeezeae::unpool_fire == fire(max_unpool2d(...)): values, gradients, layouts, dtypes, odd indices."""
import pytest
import torch

import squeezeae_ext as sx
from squeezeae_ext import reference
from helpers import assert_close_to, fire_weights, layout, pooled_input, run_check, to64

# (N, C, S, E1, E3, H, W, kernel, stride, padding): H, W are the unpooled (output) size. The last: more backward
# tiles (one per image here) than the 32 weight-gradient chunks.
CASES = [
    (2, 5, 3, 4, 6, 7, 9, 2, 2, 0),
    (2, 16, 8, 8, 8, 27, 27, 3, 2, 0),
    (1, 6, 3, 5, 4, 10, 11, 3, 2, 1),
    (3, 7, 4, 3, 5, 9, 8, (3, 2), (2, 1), (1, 0)),
    (2, 3, 2, 3, 2, 1, 1, 1, 1, 0),
    (40, 5, 3, 2, 4, 6, 5, 2, 2, 0),
]


def run_both(pooled, indices, weights, pool, size, grad):
    k, s, p = pool
    xs = pooled.detach().clone().requires_grad_()
    ws = [w.detach().clone().requires_grad_() for w in weights]
    out = sx.functional.unpool_fire(xs, indices, *ws, k, s, p, size)
    xr = pooled.detach().double().cpu().requires_grad_()
    wr = [w.requires_grad_() for w in to64(weights)]
    ref = reference.unpool_fire(xr, indices.cpu(), *wr, k, s, p, size)
    out.backward(grad)
    ref.backward(grad.double().cpu())
    return out, ref, [t.grad for t in [xs, *ws]], [t.grad for t in [xr, *wr]]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("memory", ["nchw", "channels_last", "strided"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_reference(device, case, memory, dtype):
    N, C, S, E1, E3, H, W, k, s, p = case
    pooled, indices = pooled_input(N, C, H, W, k, s, p, dtype=dtype, device=device, ceil_mode=False)
    pooled = layout(pooled, memory)
    weights = fire_weights(C, S, E1, E3, dtype, device)
    grad = torch.randn(N, E1 + E3, H, W, dtype=dtype, device=device)
    out, ref, grads, ref_grads = run_both(pooled, indices, weights, (k, s, p), (H, W), grad)
    assert out.shape == (N, E1 + E3, H, W) and out.dtype == dtype
    assert_close_to(out, ref)
    for g, r in zip(grads, ref_grads):
        assert_close_to(g, r)
    if memory == "channels_last" and H * W > 1:
        assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision(device, dtype):
    """Output and gradients against float64 at most ~2x as far off as PyTorch's own unpooling + Fire in the same
    dtype (the bfloat16 forward rounds the squeeze activation to bfloat16 as eager does, so the backward's ReLU masks
    and eager's differ from float64's alike); dtype and channels_last layout kept."""
    pooled, indices = pooled_input(2, 12, 13, 13, 3, 2, device=device)
    pooled = pooled.to(dtype).contiguous(memory_format=torch.channels_last)
    weights = fire_weights(12, 6, 8, 8, dtype, device)
    grad = torch.randn(2, 16, 13, 13, device=device).to(dtype)
    out, ref, grads, ref_grads = run_both(pooled, indices, weights, (3, 2, 0), (13, 13), grad)
    assert out.dtype == dtype and out.is_contiguous(memory_format=torch.channels_last)
    assert grads[0].dtype == dtype and grads[0].is_contiguous(memory_format=torch.channels_last)
    leaves = [t.detach().clone().requires_grad_() for t in (pooled, *weights)]
    same_precision = reference.unpool_fire(leaves[0], indices, *leaves[1:], 3, 2, 0, (13, 13))
    same_precision.backward(grad)
    for ours, torchs, exact in zip([out, *grads], [same_precision, *[t.grad for t in leaves]], [ref, *ref_grads]):
        exact = exact.double().cpu()
        ours_err = (ours.double().cpu() - exact).abs().max().item()
        torchs_err = (torchs.double().cpu() - exact).abs().max().item()
        assert ours_err <= 2 * torchs_err + 1e-3 * exact.abs().max().item(), (ours_err, torchs_err)


def check_bfloat16_forward():
    """The bfloat16 forward (on oneDNN's bfloat16 micro-kernel where this CPU has one, over rows unpooled in
    bfloat16 for even input and squeeze channel counts; else on float32 copies): within the accuracy rule of
    unpooling + the Fire in bfloat16, the input's layout out, for pooled inputs in either layout and indices from a
    pooling or anywhere in the plane (duplicates: the latest wins, as in max_unpool2d), and NaNs where unpooling +
    the float64 Fire has them."""
    torch.manual_seed(0)
    cases = [(2, 24, 8, 16, 16, 13, 13, 3, 2), (3, 64, 16, 70, 40, 9, 10, 2, 2), (2, 13, 6, 5, 7, 7, 7, 3, 2)]
    for (N, C, S, E1, E3, H, W, k, st), kind, memory in [(case, kind, memory) for case in cases
                                                          for kind in ("pooled", "random")
                                                          for memory in ("channels_last", "nchw")]:
        pooled, indices = pooled_input(N, C, H, W, k, st, ceil_mode=False)
        if kind == "random":
            indices = torch.randint(0, H * W, indices.shape)
        x, idx = layout(pooled.bfloat16(), memory), layout(indices, memory)
        w16 = [w.bfloat16() for w in fire_weights(C, S, E1, E3)]
        out = sx.functional.unpool_fire(x, idx, *w16, k, st, 0, (H, W))
        fmt = torch.channels_last if memory == "channels_last" else torch.contiguous_format
        assert out.dtype == torch.bfloat16 and out.is_contiguous(memory_format=fmt), (C, kind, memory)
        ref = reference.fire(sx.functional.max_unpool2d(x.double(), idx, k, st, 0, (H, W)), *to64(w16))
        same_precision = reference.fire(sx.functional.max_unpool2d(x, idx, k, st, 0, (H, W)), *w16)
        ours = (out.double() - ref).abs().max().item()
        torchs = (same_precision.double() - ref).abs().max().item()
        assert ours <= 2 * torchs + 1e-3 * ref.abs().max().item(), (C, kind, memory, ours, torchs)
        x[0, :, 0, 0] = float("nan")
        out = sx.functional.unpool_fire(x, idx, *w16, k, st, 0, (H, W))
        ref = reference.fire(sx.functional.max_unpool2d(x.double(), idx, k, st, 0, (H, W)), *to64(w16))
        assert ref.isnan().any() and torch.equal(out.isnan(), ref.isnan()), (C, kind, memory)


@pytest.mark.parametrize("env", [None, {"SQUEEZEAE_CPU_GEMM": "plain"}])
def test_bfloat16_forward(env):
    """Here, and with the plain GEMM (no bfloat16 micro-kernel: float32 copies)."""
    run_check("test_unpool_fire", "check_bfloat16_forward", env=env)


def test_indices_outside_their_windows(device):
    """Any in-plane index is allowed (as in F.max_unpool2d), duplicates included: latest wins."""
    x = torch.randn(2, 3, 4, 4, device=device)
    indices = torch.randint(0, 81, (2, 3, 4, 4), device=device)
    weights = fire_weights(3, 5, 4, 6, device=device)
    out = sx.functional.unpool_fire(x, indices, *weights, 2, 2, 0, (9, 9))
    unpooled = sx.functional.max_unpool2d(x, indices, 2, 2, 0, (9, 9))
    assert_close_to(out, reference.fire(*to64([unpooled, *weights])))


@pytest.mark.parametrize("memory", ["nchw", "channels_last"])
def test_indices_in_their_window_rows_only(device, memory):
    """Indices inside their window's rows but anywhere along the row (the CPU kernels prune the pooled rows a band
    scans by rows alone): forward and gradients still match unpooling + the reference Fire."""
    N, C, Hp, Wp, H, W = 2, 5, 6, 5, 13, 11  # 3x3 windows, stride 2, output 13x11
    rows = (torch.arange(Hp) * 2).view(1, 1, Hp, 1) + torch.randint(0, 3, (N, C, Hp, Wp))
    indices = (rows.clamp(max=H - 1) * W + torch.randint(0, W, (N, C, Hp, Wp))).to(device)
    x = layout(torch.randn(N, C, Hp, Wp, device=device), memory).requires_grad_()
    indices = layout(indices, memory)
    weights = [w.requires_grad_() for w in fire_weights(C, 4, 6, 7, device=device)]
    out = sx.functional.unpool_fire(x, indices, *weights, 3, 2, 0, (H, W))
    grad = torch.randn_like(out)
    out.backward(grad)
    x64 = x.detach().double().cpu().requires_grad_()
    w64 = [w.detach().double().cpu().requires_grad_() for w in weights]
    unpooled = sx.functional.max_unpool2d(x64, indices.cpu(), 3, 2, 0, (H, W))
    ref = reference.fire(unpooled, *w64)
    ref.backward(grad.double().cpu())
    assert_close_to(out, ref)
    for a, b in zip([x, *weights], [x64, *w64]):
        assert_close_to(a.grad, b.grad)


def test_default_output_size_and_unbatched(device):
    pooled, indices = pooled_input(1, 4, 8, 10, 2, 2, device=device, ceil_mode=False)
    weights = fire_weights(4, 3, 2, 5, device=device)
    out = sx.functional.unpool_fire(pooled[0], indices[0], *weights, 2)
    assert out.shape == (7, 8, 10)
    ref = reference.unpool_fire(*to64([pooled]), indices.cpu(), *to64(weights), 2)
    assert_close_to(out, ref[0])


def test_gradcheck(device):
    pooled, indices = pooled_input(2, 3, 6, 8, 2, 2, dtype=torch.float64, device=device, ceil_mode=False)
    weights = fire_weights(3, 2, 2, 3, torch.float64, device)

    def fn(x, *w):
        return sx.functional.unpool_fire(x, indices, *w, 2, 2, 0, (6, 8))

    inputs = [pooled.requires_grad_(), *[w.requires_grad_() for w in weights]]
    assert torch.autograd.gradcheck(fn, inputs)


def test_opcheck(device):
    pooled, indices = pooled_input(2, 5, 9, 9, 3, 2, device=device)
    weights = [w.requires_grad_() for w in fire_weights(5, 3, 2, 4, device=device)]
    args = (pooled.requires_grad_(), indices, *weights, [3, 3], [2, 2], [0, 0], [9, 9])
    torch.library.opcheck(torch.ops.squeezeae.unpool_fire.default, args)
    out = torch.ops.squeezeae.unpool_fire(*args).detach()
    torch.library.opcheck(
        torch.ops.squeezeae.unpool_fire_backward.default,
        (torch.randn_like(out), pooled.detach(), indices, out, *[weights[i].detach() for i in (0, 1, 2, 4)],
         [3, 3], [2, 2], [0, 0]),
    )


def test_module_equals_unpool_then_fire(device):
    fused = sx.UnpoolFire(6, 3, 4, 4, kernel_size=3, stride=2).to(device)
    fire = sx.Fire(6, 3, 4, 4).to(device)
    fire.load_state_dict(fused.state_dict())
    pooled, indices = pooled_input(2, 6, 13, 13, 3, 2, device=device)
    out = fused(pooled, indices, output_size=(13, 13))
    torch.testing.assert_close(out, fire(sx.MaxUnpool2d(3, 2)(pooled, indices, (13, 13))), rtol=1e-5, atol=1e-5)


def check_simd_runs():
    """float32 loads and gathers whole runs (a pooled pixel's channels, or a pooled row of a plane) with SIMD
    scatters and masked gathers: rows of 8 or more, duplicates inside one run, NCHW images on either side of the
    planar-tile threshold, several bands per image. Forward and gradients against unpooling + the reference."""
    torch.manual_seed(0)
    for N, C, Hp, Wp, H, W in ((1, 19, 13, 13, 27, 27), (2, 16, 16, 17, 33, 35)):
        for kind in ("pooled", "random"):
            if kind == "pooled":
                rows = (torch.arange(Hp) * 2).view(1, 1, Hp, 1) + torch.randint(0, 3, (N, C, Hp, Wp))
                cols = (torch.arange(Wp) * 2).view(1, 1, 1, Wp) + torch.randint(0, 3, (N, C, Hp, Wp))
                indices = rows.clamp(max=H - 1) * W + cols.clamp(max=W - 1)
            else:  # anywhere in the plane, many duplicates within a run
                indices = torch.randint(0, H * W, (N, C, Hp, Wp))
            for memory in ("nchw", "channels_last", "strided"):
                x = layout(torch.randn(N, C, Hp, Wp), memory).requires_grad_()
                idx = layout(indices, memory)
                weights = [w.requires_grad_() for w in fire_weights(C, 6, 8, 10)]
                out = sx.functional.unpool_fire(x, idx, *weights, 3, 2, 0, (H, W))
                grad = torch.randn_like(out)
                out.backward(grad)
                x64 = x.detach().double().requires_grad_()
                w64 = [w.detach().double().requires_grad_() for w in weights]
                ref = reference.fire(sx.functional.max_unpool2d(x64, idx, 3, 2, 0, (H, W)), *w64)
                ref.backward(grad.double())
                assert_close_to(out, ref)
                for a, b in zip([x, *weights], [x64, *w64]):
                    assert_close_to(a.grad, b.grad)


@pytest.mark.parametrize("isa", [None, "avx2", "scalar"])
def test_simd_runs(isa):
    """check_simd_runs on this CPU's widest paths, and capped at AVX2 or scalar in a fresh process."""
    run_check("test_unpool_fire", "check_simd_runs", isa)