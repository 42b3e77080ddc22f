"""CUDA-only behaviour of the kernels: CUDA-graph capture, streams, invalid indices without killing the context,
deterministic duplicate indices, the fp16/bf16 accuracy rule and the kernels' less common code paths. The
op-vs-reference, gradcheck, opcheck and compile tests are device-parametrised elsewhere."""
import pytest
import torch
import torch.nn.functional as F

import squeezeae_ext  # noqa: F401  (registers the ops)
from squeezeae_ext import reference

ops = torch.ops.squeezeae
CUDA = torch.device("cuda")


def fire_weights(C, S, E1, E3, dtype=torch.float32, device=CUDA, bias=True):
    def conv(out_ch, in_ch, k):
        w = torch.randn(out_ch, in_ch, k, k, dtype=dtype, device=device) / (in_ch * k * k) ** 0.5
        b = torch.randn(out_ch, dtype=dtype, device=device) * 0.1 if bias else None
        return w, b

    wsq, bsq = conv(S, C, 1)
    w1, b1 = conv(E1, S, 1)
    w3, b3 = conv(E3, S, 3)
    return [wsq, bsq, w1, b1, w3, b3]


def pooled(N, C, H, W, dtype=torch.float32, channels_last=False, kernel=3, stride=2, padding=0):
    """A max_pool2d result (values, indices) of an [N, C, H, W] tensor, plus the unpool arguments."""
    x = torch.randn(N, C, H, W, dtype=dtype, device=CUDA)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    values, indices = F.max_pool2d(x, kernel, stride, padding, ceil_mode=True, return_indices=True)
    return values, indices, ([kernel, kernel], [stride, stride], [padding, padding], [H, W])


def to_layout(t, channels_last):
    return t.to(memory_format=torch.channels_last) if channels_last else t.contiguous()


# The float32 references below are computed in float64: reference.fire in float32 on CUDA runs cuDNN convs that
# use TF32 by default (torch.backends.cudnn.allow_tf32), ~1e-3 off, while the fused kernels compute in plain fp32.
FP32_TOL = dict(rtol=2e-5, atol=2e-5)  # 50x tighter than the TF32 error


def _double(tensors):
    return [t.double() if t is not None else None for t in tensors]


def fire_reference64(x, weights):
    return reference.fire(x.double(), *_double(weights))


def unpool_fire_reference64(values, indices, weights, pool):
    return reference.unpool_fire(values.double(), indices, *_double(weights), *pool)


# ---------------------------------------------------------------------------------------------- CUDA graphs
def _capture_and_replay(fn, static_inputs, new_inputs):
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = fn()
    for static, new in zip(static_inputs, new_inputs):
        static.copy_(new)
    graph.replay()
    torch.cuda.synchronize()
    return static_out


@pytest.mark.needs_cuda
@pytest.mark.parametrize("channels_last", [False, True])
def test_graph_capture_fire(channels_last):
    x = to_layout(torch.randn(2, 24, 13, 11, device=CUDA), channels_last)
    weights = fire_weights(24, 8, 16, 16)
    out = _capture_and_replay(lambda: ops.fire(x, *weights), [x], [torch.randn_like(x)])
    torch.testing.assert_close(out, ops.fire(x, *weights), rtol=0, atol=0)
    torch.testing.assert_close(out.double(), fire_reference64(x, weights), **FP32_TOL)


@pytest.mark.needs_cuda
@pytest.mark.parametrize("channels_last", [False, True])
def test_graph_capture_max_unpool2d(channels_last):
    values, indices, pool = pooled(2, 6, 15, 13, channels_last=channels_last)
    new_values, new_indices, _ = pooled(2, 6, 15, 13, channels_last=channels_last)
    out = _capture_and_replay(lambda: ops.max_unpool2d(values, indices, *pool), [values, indices],
                              [new_values, new_indices])
    torch.testing.assert_close(out, ops.max_unpool2d(values, indices, *pool), rtol=0, atol=0)
    expected = ops.max_unpool2d(values.cpu(), indices.cpu(), *pool)
    torch.testing.assert_close(out.cpu(), expected, rtol=0, atol=0)


@pytest.mark.needs_cuda
@pytest.mark.parametrize("channels_last", [False, True])
def test_graph_capture_unpool_fire(channels_last):
    values, indices, pool = pooled(2, 12, 15, 13, channels_last=channels_last)
    new_values, new_indices, _ = pooled(2, 12, 15, 13, channels_last=channels_last)
    weights = fire_weights(12, 8, 16, 8)
    out = _capture_and_replay(lambda: ops.unpool_fire(values, indices, *weights, *pool), [values, indices],
                              [new_values, new_indices])
    torch.testing.assert_close(out, ops.unpool_fire(values, indices, *weights, *pool), rtol=1e-5, atol=1e-5)
    expected = unpool_fire_reference64(values, indices, weights, pool)
    torch.testing.assert_close(out.double(), expected, **FP32_TOL)


# ---------------------------------------------------------------------------------------------------- streams
@pytest.mark.needs_cuda
def test_non_default_stream_same_result():
    x = torch.randn(3, 32, 27, 27, device=CUDA).to(memory_format=torch.channels_last)
    weights = fire_weights(32, 16, 32, 32)
    values, indices, pool = pooled(3, 32, 27, 27, channels_last=True)
    grad = torch.randn(3, 64, 27, 27, device=CUDA)

    def run():
        xr = x.detach().requires_grad_()
        out = ops.fire(xr, *weights)
        (gx,) = torch.autograd.grad(out, xr, grad)
        return out, gx, ops.max_unpool2d(values, indices, *pool), ops.unpool_fire(values, indices, *weights, *pool)

    expected = run()
    torch.cuda.synchronize()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        got = run()
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


# ------------------------------------------------------------------------------------------ invalid indices
def _context_still_works():
    torch.cuda.synchronize()
    assert (torch.ones(5, device=CUDA) * 2).sum().item() == 10.0


@pytest.mark.needs_cuda
@pytest.mark.parametrize("bad", ["too_large", "negative"])
def test_invalid_index_raises_and_context_survives(bad):
    values, indices, pool = pooled(2, 3, 9, 9)
    indices = indices.clone()
    value = 81 if bad == "too_large" else -1
    indices[1, 2, 1, 0] = value
    # ATen's wording; with a single bad index the reported value is deterministic
    message = rf"Found an invalid max index: {value} \(output volumes are of size 9x9\)"
    with pytest.raises(RuntimeError, match=message):
        ops.max_unpool2d(values, indices, *pool)
    _context_still_works()
    weights = fire_weights(3, 4, 4, 4)
    with pytest.raises(RuntimeError, match=message):
        ops.unpool_fire(values, indices, *weights, *pool)
    _context_still_works()
    with pytest.raises(RuntimeError, match=message):
        ops.max_unpool2d_backward(torch.randn(2, 3, 9, 9, device=CUDA), indices)
    _context_still_works()
    # unpool_fire's backward op checks the indices again (it recomputes the unpooled input)
    wsq, bsq, w1, _, w3, _ = weights
    grad_out, out = torch.randn(2, 8, 9, 9, device=CUDA), torch.rand(2, 8, 9, 9, device=CUDA)
    with pytest.raises(RuntimeError, match=message):
        ops.unpool_fire_backward(grad_out, values, indices, out, wsq, bsq, w1, w3, *pool[:3])
    _context_still_works()
    # the valid case still works afterwards
    torch.testing.assert_close(ops.max_unpool2d(values, indices.clamp(0, 80), *pool).cpu(),
                               ops.max_unpool2d(values.cpu(), indices.clamp(0, 80).cpu(), *pool))


# --------------------------------------------------------------------------------------- duplicate indices
def _duplicate_case(in_window, channels_last):
    """Indices with many duplicates whose input values differ, so that the winner matters."""
    N, C, H, W = 2, 5, 17, 15
    _, indices, pool = pooled(N, C, H, W, channels_last=channels_last)  # overlapping 3x3/2 windows
    if not in_window:
        indices = torch.randint(0, 12, indices.shape, device=CUDA)  # out of window, heavily duplicated
        indices = to_layout(indices, channels_last)
    values = to_layout(torch.randn(indices.shape, device=CUDA), channels_last)
    return values, indices, pool


@pytest.mark.needs_cuda
@pytest.mark.parametrize("in_window", [True, False], ids=["gather", "winner"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_duplicate_indices_deterministic(in_window, channels_last):
    values, indices, pool = _duplicate_case(in_window, channels_last)
    runs = [ops.max_unpool2d(values, indices, *pool) for _ in range(5)]
    for r in runs[1:]:
        assert torch.equal(r, runs[0])
    expected = ops.max_unpool2d(values.cpu(), indices.cpu(), *pool)
    assert torch.equal(runs[0].cpu(), expected)
    assert runs[0].is_contiguous(memory_format=torch.channels_last) == channels_last


@pytest.mark.needs_cuda
@pytest.mark.parametrize("in_window", [True, False], ids=["gather", "winner"])
def test_unpool_fire_duplicates_match_unpool_then_fire(in_window):
    values, indices, pool = _duplicate_case(in_window, channels_last=True)
    values = values.double()
    weights = fire_weights(values.shape[1], 6, 7, 9, dtype=torch.float64)
    runs = [ops.unpool_fire(values, indices, *weights, *pool) for _ in range(5)]
    for r in runs[1:]:
        assert torch.equal(r, runs[0])
    unpooled = ops.max_unpool2d(values.cpu(), indices.cpu(), *pool).to(CUDA)
    torch.testing.assert_close(runs[0], reference.fire(unpooled, *weights), rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------------------- fp16 / bf16 accuracy rule
def _max_err(t, ref):
    return (t.double() - ref).abs().max().item()


def _assert_within_rule(ours, torch_same_precision, ref64, dtype, what):
    slack = 2 * torch.finfo(dtype).eps * max(1.0, ref64.abs().max().item())
    err_ours, err_torch = _max_err(ours, ref64), _max_err(torch_same_precision, ref64)
    assert err_ours <= 2 * err_torch + slack, f"{what}: error {err_ours:.3g} vs PyTorch's {err_torch:.3g} ({dtype})"


@pytest.mark.needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shape", [(4, 64, 27, 27, 16, 64, 64), (2, 35, 11, 9, 7, 19, 21)], ids=["fire3", "odd"])
def test_low_precision_accuracy_rule(dtype, channels_last, shape):
    N, C, H, W, S, E1, E3 = shape
    x64 = to_layout(torch.randn(N, C, H, W, device=CUDA, dtype=torch.float64), channels_last)
    w64 = fire_weights(C, S, E1, E3, dtype=torch.float64)
    x_lp = x64.to(dtype).requires_grad_()
    w_lp = [w.to(dtype).requires_grad_() for w in w64]
    # the fp64 reference sees the same (rounded) inputs
    x_ref = x_lp.detach().double().requires_grad_()
    w_ref = [w.detach().double().requires_grad_() for w in w_lp]
    x_pt = x_lp.detach().clone().requires_grad_()
    w_pt = [w.detach().clone().requires_grad_() for w in w_lp]

    ours = ops.fire(x_lp, *w_lp)
    ref = reference.fire(x_ref, *w_ref)
    pt = reference.fire(x_pt, *w_pt)
    _assert_within_rule(ours, pt, ref.detach(), dtype, "fire forward")

    grad = torch.randn_like(ref)
    g_ours = torch.autograd.grad(ours, [x_lp, *w_lp], grad.to(dtype))
    g_ref = torch.autograd.grad(ref, [x_ref, *w_ref], grad)
    g_pt = torch.autograd.grad(pt, [x_pt, *w_pt], grad.to(dtype))
    names = ["x", "squeeze_weight", "squeeze_bias", "expand1x1_weight", "expand1x1_bias", "expand3x3_weight",
             "expand3x3_bias"]
    for name, a, b, r in zip(names, g_ours, g_pt, g_ref):
        _assert_within_rule(a, b, r, dtype, f"fire grad {name}")


@pytest.mark.needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_accuracy_rule_unpool_fire(dtype):
    values, indices, pool = pooled(2, 32, 27, 27, dtype=torch.float64, channels_last=True)
    w64 = fire_weights(32, 16, 32, 32, dtype=torch.float64)
    v_lp, w_lp = values.to(dtype), [w.to(dtype) for w in w64]
    ours = ops.unpool_fire(v_lp, indices, *w_lp, *pool)
    pt = reference.unpool_fire(v_lp, indices, *w_lp, *pool)
    ref = reference.unpool_fire(v_lp.double(), indices, *[w.double() for w in w_lp], *pool)
    _assert_within_rule(ours, pt, ref, dtype, "unpool_fire forward")


# ----------------------------------------------------------------------------- less common kernel paths
@pytest.mark.needs_cuda
@pytest.mark.parametrize("channels_last", [False, True])
def test_fire_many_squeeze_channels_and_odd_chunks(channels_last):
    """S > 64 (squeeze recomputed per chunk), C > 32 with a ragged last chunk, E1/E3 not multiples of 64."""
    x = to_layout(torch.randn(2, 45, 10, 9, device=CUDA, dtype=torch.float64), channels_last).requires_grad_()
    weights = [w.requires_grad_() if w is not None else None
               for w in fire_weights(45, 80, 70, 130, dtype=torch.float64)]
    out = ops.fire(x, *weights)
    ref_inputs = [t.detach().clone().requires_grad_() for t in [x, *weights]]
    ref = reference.fire(*ref_inputs)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    assert out.is_contiguous(memory_format=torch.channels_last) == channels_last
    grad = torch.randn_like(ref)
    got = torch.autograd.grad(out, [x, *weights], grad)
    expected = torch.autograd.grad(ref, ref_inputs, grad)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.needs_cuda
def test_fire_without_biases_and_non_contiguous_views():
    base = torch.randn(2, 20, 14, 30, device=CUDA, dtype=torch.float64)
    x = base[:, ::2, :, ::3]  # [2, 10, 14, 10], neither NCHW nor channels_last contiguous
    weights = fire_weights(10, 5, 6, 7, dtype=torch.float64, bias=False)
    torch.testing.assert_close(ops.fire(x, *weights), reference.fire(x, *weights), rtol=1e-10, atol=1e-10)


@pytest.mark.needs_cuda
def test_empty_batch_and_one_pixel():
    weights = fire_weights(8, 4, 4, 4)
    empty = torch.randn(0, 8, 5, 5, device=CUDA)
    assert ops.fire(empty, *weights).shape == (0, 8, 5, 5)
    one = torch.randn(3, 8, 1, 1, device=CUDA)
    torch.testing.assert_close(ops.fire(one, *weights).double(), fire_reference64(one, weights), **FP32_TOL)
