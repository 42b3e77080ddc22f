"""squeezeae::fire against the plain-PyTorch reference: values, gradients, layouts, dtypes, determinism."""
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import squeezeae_ext as sx
from squeezeae_ext import reference
from helpers import assert_close_to, fire_weights, layout, run_check, run_python, to64

# (N, C, S, E1, E3, H, W): odd channel counts, 1x1 and 1xW spatial, non-square, one SqueezeNet-sized layer
# (above the 1000 pixels from where NCHW takes planar tiles on every AVX-512 CPU; with 16 squeeze channels, below
# the 4096 pixels from where such narrow squeezes run the 3x3 as Winograd), one 13x13 with whole and partial 16x16 transpose blocks, a batch of 40 small images: more
# backward tiles than the 32 weight-gradient chunks, so some chunks sum two tiles (the first writes the chunk's
# accumulators, the next adds to them), and 48 squeeze channels over 1058 pixels (the backward's Winograd, in
# bands of 12 and 11 rows).
SHAPES = [
    (2, 5, 3, 4, 6, 7, 9),
    (3, 17, 5, 3, 7, 1, 1),
    (1, 9, 4, 5, 2, 1, 11),
    (2, 33, 7, 9, 11, 6, 5),
    (1, 48, 16, 40, 56, 33, 35),
    (2, 48, 8, 20, 29, 13, 13),
    (4, 8, 2, 1, 1, 3, 2),
    (40, 6, 3, 4, 5, 5, 4),
    (2, 20, 48, 8, 21, 23, 23),
]
LAYOUTS = ["nchw", "channels_last", "strided"]


def run_both(x, weights, grad=None):
    """Fused and reference forward (and backward with `grad`), the reference in float64."""
    xs = x.detach().clone().requires_grad_(grad is not None)
    ws = [None if w is None else w.detach().clone().requires_grad_(grad is not None) for w in weights]
    out = sx.functional.fire(xs, *ws)
    xr = x.detach().double().cpu().requires_grad_(grad is not None)
    wr = [None if w is None else w.requires_grad_(grad is not None) for w in to64(weights)]
    ref = reference.fire(xr, *wr)
    if grad is None:
        return out, ref, None, None
    out.backward(grad)
    ref.backward(grad.double().cpu())
    return out, ref, [t.grad for t in [xs, *ws] if t is not None], [t.grad for t in [xr, *wr] if t is not None]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("memory", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_backward_matches_reference(device, shape, memory, dtype):
    N, C, S, E1, E3, H, W = shape
    x = layout(torch.randn(N, C, H, W, dtype=dtype, device=device), memory)
    weights = fire_weights(C, S, E1, E3, dtype, device)
    grad = torch.randn(N, E1 + E3, H, W, dtype=dtype, device=device)
    out, ref, grads, ref_grads = run_both(x, weights, grad)
    assert out.dtype == dtype and out.device == x.device
    assert_close_to(out, ref)
    for g, r in zip(grads, ref_grads):
        assert_close_to(g, r)
    if memory == "channels_last" and H * W > 1:
        assert out.is_contiguous(memory_format=torch.channels_last)
        assert grads[0].is_contiguous(memory_format=torch.channels_last)
    if memory == "nchw":
        assert out.is_contiguous()


@pytest.mark.parametrize("dims", [(12, 5, 7, 9), (24, 20, 16, 70)])  # the second: SIMD blocks and their edges
@pytest.mark.parametrize("weight_memory", ["nchw", "channels_last", "strided"])
@pytest.mark.parametrize("memory", ["nchw", "channels_last"])
def test_weights_in_any_layout(device, weight_memory, memory, dims):
    """Weights of a model moved to channels_last (or any strided views) are read in place, not assumed packed."""
    C, S, E1, E3 = dims
    x = layout(torch.randn(2, C, 6, 5, device=device), memory)
    weights = [w if w.dim() == 1 else layout(w, weight_memory) for w in fire_weights(C, S, E1, E3, device=device)]
    assert weights[4].is_contiguous() == (weight_memory == "nchw")
    for w in weights:
        w.requires_grad_()
    grad = torch.randn(2, E1 + E3, 6, 5, device=device)
    out = sx.functional.fire(x, *weights)  # not run_both: a clone of a strided view would come out packed
    out.backward(grad)
    wr = [w.detach().double().cpu().requires_grad_() for w in weights]
    ref = reference.fire(x.double().cpu(), *wr)
    ref.backward(grad.double().cpu())
    assert_close_to(out, ref)
    for w, r in zip(weights, wr):
        assert_close_to(w.grad, r.grad)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("memory", LAYOUTS)
def test_low_precision_accuracy_rule(device, dtype, memory):
    """Error against float64 at most ~2x that of PyTorch's own computation in the same dtype; the output and the
    input gradient keep the input's dtype and layout (on the CPU they are computed in float32 copies)."""
    N, C, S, E1, E3, H, W = 2, 24, 8, 16, 16, 9, 10
    x = layout(torch.randn(N, C, H, W, device=device), memory).to(dtype)
    weights = fire_weights(C, S, E1, E3, dtype, device)
    grad = torch.randn(N, E1 + E3, H, W, device=device).to(dtype)
    out, ref, grads, ref_grads = run_both(x, weights, grad)
    same_precision = reference.fire(x, *weights).double().cpu()
    assert out.dtype == dtype
    ours = (out.double().cpu() - ref).abs().max().item()
    torchs = (same_precision - ref).abs().max().item()
    assert ours <= 2 * torchs + 1e-3 * ref.abs().max().item(), (ours, torchs)
    for g, r in zip(grads, ref_grads):
        assert g.dtype == dtype
        assert_close_to(g, r, dtype)
    if memory == "channels_last":
        assert out.is_contiguous(memory_format=torch.channels_last)
        assert grads[0].is_contiguous(memory_format=torch.channels_last)
    elif memory == "nchw":
        assert out.is_contiguous() and grads[0].is_contiguous()


def check_nan_propagates():
    """A NaN input pixel gives NaN outputs exactly where the reference's do (ReLU(NaN) is NaN), in every layout
    and tile kind: 6x6 images take the pixel-major tiles (NCHW through the transposing stores, 16 x 16 blocks of
    the 32 output channels), 40x40 NCHW ones the planar tiles on Intel CPUs."""
    torch.manual_seed(0)
    for (N, C, S, E1, E3, H, W), memory in [(shape, memory) for shape in ((2, 12, 6, 16, 16, 6, 6),
                                                                          (1, 16, 4, 16, 16, 40, 40))
                                            for memory in LAYOUTS]:
        x = layout(torch.randn(N, C, H, W), memory)
        x[0, :, 0, 0] = float("nan")
        x[-1, :, H // 2, W // 2] = float("nan")  # odd row and column: its 3x3 neighbourhood spans two 2x2 blocks
        weights = fire_weights(C, S, E1, E3)
        ours, ref = sx.functional.fire(x, *weights).isnan(), reference.fire(x, *weights).isnan()
        assert ref.any() and torch.equal(ours, ref), (N, C, H, W, memory)


def check_infinity_propagates():
    """An infinite input value gives infinities, not NaNs, where the reference does: one squeeze channel +inf at
    one pixel (the others' ReLU(-inf) = 0), so every output near it is +-inf times a weight. Winograd's transforms
    would subtract such infinities (inf - inf = NaN): tiles with one take the direct taps."""
    torch.manual_seed(0)
    for (N, C, S, E1, E3, H, W), memory in [(shape, memory) for shape in ((2, 12, 6, 16, 16, 6, 6),
                                                                          (1, 16, 4, 16, 16, 40, 40))
                                            for memory in LAYOUTS]:
        x = layout(torch.randn(N, C, H, W), memory)
        x[-1, 0, H // 2, W // 2] = float("inf")
        weights = fire_weights(C, S, E1, E3)
        weights[0][:, 0] = -weights[0][:, 0].abs()
        weights[0][1, 0] = 1.0
        ours, ref = sx.functional.fire(x, *weights), reference.fire(x, *weights)
        assert ref.isinf().any() and not ref.isnan().any()
        assert torch.equal(ours.isinf(), ref.isinf()) and not ours.isnan().any(), (N, C, H, W, memory)
        finite = ref.isfinite()
        torch.testing.assert_close(ours[finite], ref[finite], rtol=1e-5, atol=1e-5)


def check_non_finite_weights():
    """An infinite or NaN 3x3 weight gives non-finite outputs exactly where the float64 reference's are (a call of
    1600 pixels and 32 squeeze channels, which runs Winograd with finite weights; these take the direct taps). Not
    the float32 reference: eager float32 here left out some of inf * 0's NaNs (1420 of 1499)."""
    torch.manual_seed(0)
    x = torch.randn(1, 16, 40, 40).relu_().contiguous(memory_format=torch.channels_last)
    for value in (float("inf"), float("nan")):
        weights = fire_weights(16, 32, 16, 16)
        weights[4][3, 1, 0, 2] = value
        ours, ref = sx.functional.fire(x, *weights), reference.fire(*to64([x, *weights]))
        assert torch.equal(ours.isnan(), ref.isnan()) and torch.equal(ours.isinf(), ref.isinf()), value
        assert (ours.isnan() | ours.isinf()).any()
        finite = ref.isfinite()
        torch.testing.assert_close(ours[finite].double(), ref[finite], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("isa,env", [(None, None), ("avx2", None), ("scalar", None),
                                     (None, {"SQUEEZEAE_CPU_WINOGRAD": "on"})])
def test_nan_propagates(isa, env):
    """Also with Winograd on every forward (whose transforms keep each output's NaNs to its own 3x3 window)."""
    run_check("test_fire", "check_nan_propagates", isa=isa, env=env)


@pytest.mark.parametrize("env", [None, {"SQUEEZEAE_CPU_WINOGRAD": "on"}])
def test_non_finite_weights(env):
    run_check("test_fire", "check_non_finite_weights", env=env)


def check_infinite_gradient():
    """An infinite output gradient gives infinities, not NaNs, in the input gradient where the reference does:
    one squeeze channel (no sums of infinities of either sign) kept active everywhere, so each input pixel near
    the infinity gets +-inf. The backward's Winograd (its squeeze gradient) would make NaNs of them: tiles with
    an infinity in their output gradient take the direct taps."""
    torch.manual_seed(0)
    for memory in LAYOUTS:
        x = layout(torch.rand(2, 4, 9, 8) + 0.1, memory)
        weights = [w.abs() + 0.1 if i < 2 else w for i, w in enumerate(fire_weights(4, 1, 2, 3))]
        out = reference.fire(x, *weights)
        grad = torch.zeros_like(out)
        e = 2 + out[1, 2:, 4, 5].argmax()  # an active expand3x3 output (ReLU passes its gradient)
        assert out[1, e, 4, 5] > 0
        grad[1, e, 4, 5] = float("inf")
        grads = []
        for fn in (sx.functional.fire, reference.fire):
            leaves = [t.clone().requires_grad_() for t in (x, *weights)]
            fn(*leaves).backward(grad)
            grads.append(leaves[0].grad)
        ours, ref = grads
        assert ref.isinf().any() and not ref.isnan().any()
        assert torch.equal(ours.isinf(), ref.isinf()) and not ours.isnan().any(), memory
        finite = ref.isfinite()
        torch.testing.assert_close(ours[finite], ref[finite], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("env", [None, {"SQUEEZEAE_CPU_WINOGRAD": "on"}])
def test_infinity_propagates(env):
    run_check("test_fire", "check_infinity_propagates", env=env)
    run_check("test_fire", "check_infinite_gradient", env=env)


def check_expand3x3_paths():
    """The two paths of the 3x3 convolution (the direct taps and Winograd F(2x2, 3x3)), whichever the process
    forces, against the float64 reference: forward and gradients on every shape (odd and even bands and widths,
    1x1 and 1xW images, channel counts off the SIMD widths), layout and dtype, with and without biases, through
    fire and unpool_fire; gradcheck; and float16 within the accuracy rule."""
    torch.manual_seed(0)
    for (N, C, S, E1, E3, H, W), memory, dtype in [(shape, memory, dtype) for shape in SHAPES for memory in LAYOUTS
                                                   for dtype in (torch.float32, torch.float64)]:
        x = layout(torch.randn(N, C, H, W, dtype=dtype), memory)
        grad = torch.randn(N, E1 + E3, H, W, dtype=dtype)
        for bias in (True, False):
            out, ref, grads, ref_grads = run_both(x, fire_weights(C, S, E1, E3, dtype, bias=bias), grad)
            assert_close_to(out, ref)
            for g, r in zip(grads, ref_grads):
                assert_close_to(g, r)
        if H < 3 or W < 3:
            continue
        weights = fire_weights(C, S, E1, E3, dtype)
        pooled, indices = F.max_pool2d(x, 3, 2, ceil_mode=True, return_indices=True)
        out = sx.functional.unpool_fire(pooled, indices, *weights, 3, 2, 0, (H, W))
        ref = reference.fire(sx.functional.max_unpool2d(*to64([pooled]), indices, 3, 2, 0, (H, W)), *to64(weights))
        assert_close_to(out, ref)
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64, requires_grad=True)
    weights = [w.requires_grad_() for w in fire_weights(3, 2, 2, 3, torch.float64)]
    for x_any in (x, x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()):
        assert torch.autograd.gradcheck(sx.functional.fire, (x_any, *weights))
    for memory in LAYOUTS:  # float16 runs the float32 tiles on float32 copies
        test_low_precision_accuracy_rule("cpu", torch.float16, memory)


@pytest.mark.parametrize("winograd", ["on", "off"])
def test_expand3x3_paths(winograd):
    """check_expand3x3_paths with SQUEEZEAE_CPU_WINOGRAD=on (every pixel-major call takes Winograd, forward and
    backward) and =off (none does); by default only calls of 1024 output pixels or more do
    (cpu_paths()['winograd_min_pixels']), and in the backward only from 48 squeeze channels."""
    run_check("test_fire", "check_expand3x3_paths", env={"SQUEEZEAE_CPU_WINOGRAD": winograd})




def check_forward_tiles():
    """The forward of fire and unpool_fire through whichever tiles the process forces (planar or pixel-major),
    against the float64 reference: every shape, input layout and dtype, with and without biases, and the weights
    in every layout (the planar tiles multiply contiguous and channels_last 3x3 weights as they are stored, their
    im2col's rows following the weights' column order, and pack the others); the output in the input's layout."""
    torch.manual_seed(0)
    for (N, C, S, E1, E3, H, W), memory, dtype in [(shape, memory, dtype) for shape in SHAPES for memory in LAYOUTS
                                                   for dtype in (torch.float32, torch.float64)]:
        x = layout(torch.randn(N, C, H, W, dtype=dtype), memory)
        for bias, weight_memory in ((True, "nchw"), (False, "channels_last"), (True, "strided")):
            weights = [w if w is None or w.dim() == 1 else layout(w, weight_memory)
                       for w in fire_weights(C, S, E1, E3, dtype, bias=bias)]
            out = sx.functional.fire(x, *weights)
            assert_close_to(out, reference.fire(*to64([x, *weights])))
            if memory != "strided" and H * W > 1:
                fmt = torch.channels_last if memory == "channels_last" else torch.contiguous_format
                assert out.is_contiguous(memory_format=fmt), (memory, out.stride())
            if H < 3 or W < 3:
                continue
            pooled, indices = F.max_pool2d(x, 3, 2, ceil_mode=True, return_indices=True)
            out = sx.functional.unpool_fire(pooled, indices, *weights, 3, 2, 0, (H, W))
            unpooled = sx.functional.max_unpool2d(*to64([pooled]), indices, 3, 2, 0, (H, W))
            assert_close_to(out, reference.fire(unpooled, *to64(weights)))


@pytest.mark.parametrize("tiles,isa", [("planar", None), ("pixel-major", None), ("planar", "avx2"),
                                       ("planar", "scalar")])
def test_forward_tiles(tiles, isa):
    """check_forward_tiles with SQUEEZEAE_CPU_FORWARD_TILES=planar and =pixel-major, the planar tiles also with
    the AVX2 and scalar transposes (their channels_last loads and bias + ReLU stores); by default float32 calls of
    up to 256 output pixels take the planar tiles on Intel AVX-512 CPUs (cpu_paths()['planar_max_call_pixels']),
    and NCHW images of over 1000 (400 on other CPUs) pixels the planar tiles, the rest pixel-major ones."""
    run_check("test_fire", "check_forward_tiles", isa=isa, env={"SQUEEZEAE_CPU_FORWARD_TILES": tiles})


# (N, C, S, E1, E3, H, W): even input and squeeze channels (oneDNN's bfloat16 micro-kernel where this CPU has one;
# expand widths off its 16- and 64-column blocks, a 1x1 image), then an odd input and an odd squeeze channel count
# (the float32 copies).
BF16_SHAPES = [(2, 24, 8, 16, 16, 9, 10), (3, 64, 16, 70, 40, 7, 5), (1, 6, 2, 3, 5, 1, 1), (2, 13, 6, 5, 7, 6, 6),
               (2, 12, 5, 5, 7, 6, 6)]


def check_bfloat16_forward():
    """bfloat16 forward, channels_last (read in place) and NCHW (through channels_last copies): within the
    accuracy rule of eager bfloat16, the input's layout out, and NaNs where eager has them."""
    torch.manual_seed(0)
    for shape, memory in [(shape, memory) for shape in BF16_SHAPES for memory in ("channels_last", "nchw")]:
        N, C, S, E1, E3, H, W = shape
        x = layout(torch.randn(N, C, H, W), memory)
        weights = fire_weights(C, S, E1, E3)
        ref = reference.fire(*to64([x, *weights]))
        x16, w16 = x.bfloat16(), [w.bfloat16() for w in weights]
        out = sx.functional.fire(x16, *w16)
        fmt = torch.channels_last if memory == "channels_last" else torch.contiguous_format
        assert out.dtype == torch.bfloat16 and out.is_contiguous(memory_format=fmt), (shape, memory)
        ours = (out.double() - ref).abs().max().item()
        torchs = (reference.fire(x16, *w16).double() - ref).abs().max().item()
        assert ours <= 2 * torchs + 1e-3 * ref.abs().max().item(), (shape, ours, torchs)
        for weight_memory in ("channels_last", "strided"):  # weights read in any layout (the float32 copies'
            # planar tiles sum the 3x3 taps in the stored weights' order: equal within the same rule, not bitwise)
            w_any = [w if w.dim() == 1 else layout(w, weight_memory) for w in w16]
            err = (sx.functional.fire(x16, *w_any).double() - ref).abs().max().item()
            assert err <= 2 * torchs + 1e-3 * ref.abs().max().item(), (shape, memory, weight_memory, err, torchs)
        x16[0, :, 0, 0] = float("nan")
        assert torch.equal(sx.functional.fire(x16, *w16).isnan(), reference.fire(x16, *w16).isnan()), shape


@pytest.mark.parametrize("isa,env", [(None, None), ("avx2", None), ("scalar", None),
                                     (None, {"SQUEEZEAE_CPU_GEMM": "plain"})])
def test_bfloat16_forward(isa, env):
    """Here, with the narrower SIMD epilogues, and with the plain GEMM (which runs bfloat16 through float32)."""
    run_check("test_fire", "check_bfloat16_forward", isa=isa, env=env)


def test_without_biases(device):
    x = torch.randn(2, 6, 5, 5, device=device)
    weights = fire_weights(6, 3, 4, 5, device=device, bias=False)
    grad = torch.randn(2, 9, 5, 5, device=device)
    out, ref, grads, ref_grads = run_both(x, weights, grad)
    assert_close_to(out, ref)
    for g, r in zip(grads, ref_grads):
        assert_close_to(g, r)


def test_unbatched_input(device):
    x = torch.randn(6, 5, 7, device=device)
    weights = fire_weights(6, 3, 4, 5, device=device)
    out = sx.functional.fire(x, *weights)
    assert out.shape == (9, 5, 7)
    assert_close_to(out, reference.fire(*to64([x.unsqueeze(0), *weights])).squeeze(0))


def test_empty_batch(device):
    x = torch.randn(0, 6, 5, 7, device=device, requires_grad=True)
    weights = [w.requires_grad_() for w in fire_weights(6, 3, 4, 5, device=device)]
    out = sx.functional.fire(x, *weights)
    assert out.shape == (0, 9, 5, 7)
    out.sum().backward()
    assert x.grad.shape == x.shape
    assert all(w.grad is not None and not w.grad.any() for w in weights)


def test_gradcheck(device):
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, device=device, requires_grad=True)
    weights = [w.requires_grad_() for w in fire_weights(3, 2, 2, 3, torch.float64, device)]
    assert torch.autograd.gradcheck(sx.functional.fire, (x, *weights))
    x_cl = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    assert torch.autograd.gradcheck(sx.functional.fire, (x_cl, *weights))


def test_opcheck(device):
    x = torch.randn(2, 5, 6, 4, device=device, requires_grad=True)
    weights = [w.requires_grad_() for w in fire_weights(5, 3, 2, 4, device=device)]
    torch.library.opcheck(torch.ops.squeezeae.fire.default, (x, *weights))
    torch.library.opcheck(torch.ops.squeezeae.fire.default, (x.detach(), *[w.detach() for w in weights]))
    x_cl = x.detach().contiguous(memory_format=torch.channels_last)
    out = torch.ops.squeezeae.fire(x_cl, *weights)
    grad = torch.randn_like(out)
    torch.library.opcheck(
        torch.ops.squeezeae.fire_backward.default,
        (grad, x_cl, out.detach(), weights[0].detach(), weights[1].detach(), weights[2].detach(), weights[4].detach()),
    )


def test_bit_identical_run_to_run(device):
    x = torch.randn(3, 40, 17, 19, device=device).contiguous(memory_format=torch.channels_last)
    weights = [w.requires_grad_() for w in fire_weights(40, 12, 20, 24, device=device)]
    results = []
    for _ in range(3):
        xs = x.clone().requires_grad_()
        for w in weights:
            w.grad = None
        out = sx.functional.fire(xs, *weights)
        out.backward(torch.ones_like(out))
        results.append([out, xs.grad, *[w.grad for w in weights]])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


def test_thread_count_does_not_change_results():
    """Tiles and gradient chunks are fixed by the shape, not by the number of threads."""
    x = torch.randn(2, 24, 15, 15).contiguous(memory_format=torch.channels_last)
    weights = [w.requires_grad_() for w in fire_weights(24, 8, 16, 16)]
    results = []
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            xs = x.clone().requires_grad_()
            for w in weights:
                w.grad = None
            out = sx.functional.fire(xs, *weights)
            out.backward(torch.ones_like(out))
            results.append([xs.grad, *[w.grad for w in weights]])
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    for a, b in zip(results[0][1:], results[1][1:]):  # weight gradients: same chunks, same order
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "env", [{"SQUEEZEAE_CPU_GEMM": "plain"}, {"SQUEEZEAE_CPU_ISA": "avx2"}, {"SQUEEZEAE_CPU_ISA": "scalar"}]
)
def test_fallback_paths_match(env):
    """CPUs without oneDNN's micro-kernel use the plain GEMM, CPUs without AVX-512 the AVX2 or scalar tile
    transposes: same results, forward and (float32 NCHW, which runs through the transposes) backward, each
    checked in a fresh process with the path forced by its environment variable."""
    code = (
        "import torch, squeezeae_ext as sx\n"
        "from squeezeae_ext import reference\n"
        "torch.manual_seed(0)\n"
        "# the first case's bound is the original one; the second sums 40 and 72 products of unit normals; the\n"
        "# third (1155 pixels) takes the planar forward tiles under SQUEEZEAE_CPU_ISA=scalar, pixel-major under avx2\n"
        "for shape, cw, tol in (((2, 7, 6, 9), (3, 4, 5), 1e-5), ((2, 40, 13, 13), (8, 20, 28), 1e-4),\n"
        "                       ((2, 9, 33, 35), (5, 6, 7), 1e-5)):\n"
        "    x = torch.randn(*shape)\n"
        "    C, (S, E1, E3) = shape[1], cw\n"
        "    w = [torch.randn(S, C, 1, 1), torch.randn(S), torch.randn(E1, S, 1, 1), torch.randn(E1),"
        " torch.randn(E3, S, 3, 3), torch.randn(E3)]\n"
        "    torch.testing.assert_close(sx.functional.fire(x, *w), reference.fire(x, *w), rtol=tol, atol=tol)\n"
        "    grads = []\n"
        "    for fn in (sx.functional.fire, reference.fire):\n"
        "        leaves = [t.clone().requires_grad_() for t in (x, *w)]\n"
        "        out = fn(*leaves)\n"
        "        out.backward(torch.cos(torch.arange(out.numel(), dtype=out.dtype)).view_as(out))\n"
        "        grads.append([t.grad for t in leaves])\n"
        "    for a, b in zip(*grads):\n"
        "        torch.testing.assert_close(a, b, rtol=10 * tol, atol=10 * tol)\n"
        "print('ok')\n"
    )
    env = dict(os.environ, **env)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_unknown_cpu_isa_is_reported():
    """A mistyped SQUEEZEAE_CPU_ISA is named in a warning; the kernels still run (on the scalar paths), correctly."""
    code = (
        "import torch, squeezeae_ext as sx\n"
        "from squeezeae_ext import reference\n"
        "x = torch.randn(2, 8, 5, 5)\n"
        "w = [torch.randn(4, 8, 1, 1), torch.randn(4), torch.randn(6, 4, 1, 1), torch.randn(6),"
        " torch.randn(6, 4, 3, 3), torch.randn(6)]\n"
        "torch.testing.assert_close(sx.functional.fire(x, *w), reference.fire(x, *w), rtol=1e-5, atol=1e-5)\n"
        "print('ok')\n"
    )
    assert "SQUEEZEAE_CPU_ISA=avx3 is not one of avx512, avx2, scalar" in run_python(code, SQUEEZEAE_CPU_ISA="avx3")
