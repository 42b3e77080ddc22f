"""squeezeae::max_unpool2d: F.max_unpool2d semantics, the duplicate-index rule, gradients, layouts."""
import pytest
import torch
import torch.nn.functional as F

import squeezeae_ext as sx
from helpers import layout, pooled_input, run_check, run_python


def latest_wins(values, indices, out_h, out_w):
    """The documented rule, written as the plainest loop: per plane, later pooled elements overwrite."""
    N, C = values.shape[:2]
    out = torch.zeros(N, C, out_h * out_w, dtype=torch.float64)
    v = values.detach().double().cpu().reshape(N, C, -1)
    i = indices.cpu().reshape(N, C, -1)
    for n in range(N):
        for c in range(C):
            for k in range(v.shape[-1]):
                out[n, c, i[n, c, k]] = v[n, c, k]
    return out.view(N, C, out_h, out_w)


def latest_wins_fast(values, indices, out_h, out_w):
    """latest_wins without the Python loop: per plane, the position of the last element naming each slot."""
    N, C = values.shape[:2]
    i = indices.reshape(N, C, -1)
    order = torch.arange(i.shape[-1]).expand_as(i)
    last = torch.zeros(N, C, out_h * out_w, dtype=torch.long).scatter_reduce_(2, i, order, "amax", include_self=False)
    hit = torch.zeros(N, C, out_h * out_w, dtype=torch.bool).scatter_(2, i, True)
    out = values.reshape(N, C, -1).gather(2, last) * hit
    return out.view(N, C, out_h, out_w)


# (N, C, H, W, kernel, stride, padding): non-overlapping, SqueezeNet's overlapping 3x3/2, padded, rectangular.
CASES = [
    (2, 3, 8, 8, 2, 2, 0),
    (2, 5, 13, 13, 3, 2, 0),
    (1, 4, 11, 10, 3, 2, 1),
    (3, 2, 9, 7, (3, 2), (2, 1), (1, 0)),
    (1, 1, 1, 1, 1, 1, 0),
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("memory", ["nchw", "channels_last", "strided"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_matches_rule_and_pytorch(device, case, memory, dtype):
    N, C, H, W, k, s, p = case
    pooled, indices = pooled_input(N, C, H, W, k, s, p, dtype=dtype, device=device, ceil_mode=False)
    pooled = layout(pooled, memory)
    out = sx.functional.max_unpool2d(pooled, indices, k, s, p, output_size=(H, W))
    assert out.dtype == dtype and out.shape == (N, C, H, W)
    assert torch.equal(out.double().cpu(), latest_wins(pooled, indices, H, W))
    if memory == "channels_last" and H * W > 1:
        assert out.is_contiguous(memory_format=torch.channels_last)
    # Where no two pooled elements share an index PyTorch's result is defined: equal bit for bit.
    flat = indices.reshape(N * C, -1)
    if all(len(set(row.tolist())) == row.numel() for row in flat):
        ref = F.max_unpool2d(pooled.cpu().float(), indices.cpu(), k, s, p, output_size=(H, W))
        assert torch.equal(out.cpu().float(), ref)


def check_large_output_and_uneven_channel_blocks():
    """Outputs of 8 MiB or more are big: the CPU kernel streams them out of per-block buffers where they exceed a
    quarter of the L3, and otherwise writes them in place (channels_last: one image's range of pixels per work
    item). Over the threshold (float32) and under it (float16), with a channel count no block size divides, random
    in-plane indices with duplicates, batches below, at and above the thread count: the rule, exactly."""
    torch.manual_seed(0)
    before = torch.get_num_threads()
    try:
        for threads in (2, 3):
            torch.set_num_threads(threads)
            for N in (1, 2, 3):
                C, H, W = 37, 160, 150  # float32: 3.55 MB an image, so batch 3 (10.7 MB) is big; float16 never
                for dtype in (torch.float32, torch.float16):
                    for memory in ("nchw", "channels_last"):
                        x = torch.randn(N, C, H // 2, W // 2, dtype=dtype)
                        indices = torch.randint(0, H * W, x.shape)
                        x, indices = layout(x, memory), layout(indices, memory)
                        out = sx.functional.max_unpool2d(x, indices, 2, output_size=(H, W))
                        assert torch.equal(out, latest_wins_fast(x, indices, H, W)), (threads, N, dtype, memory)
                        if memory == "channels_last":
                            assert out.is_contiguous(memory_format=torch.channels_last)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("l3", [16 << 20, 1 << 30])
def test_large_output_and_uneven_channel_blocks(l3):
    """check_large_output_and_uneven_channel_blocks with a 16 MiB L3 (big outputs streamed) and a 1 GiB one (big
    outputs written in place), whatever this CPU has."""
    run_check("test_max_unpool", "check_large_output_and_uneven_channel_blocks",
              env={"SQUEEZEAE_CPU_L3_BYTES": str(l3)})


def test_unusable_l3_override_is_reported():
    """A SQUEEZEAE_CPU_L3_BYTES that is not a positive number of bytes is named in a warning and ignored."""
    code = (
        "import torch, squeezeae_ext as sx\n"
        "x = torch.randn(1, 3, 4, 4)\n"
        "y, i = torch.nn.functional.max_pool2d(x, 2, return_indices=True)\n"
        "assert torch.equal(sx.functional.max_unpool2d(y, i, 2), torch.nn.functional.max_unpool2d(y, i, 2))\n"
        "print('ok')\n"
    )
    assert "SQUEEZEAE_CPU_L3_BYTES=32MB is not a positive number of bytes" in run_python(
        code, SQUEEZEAE_CPU_L3_BYTES="32MB")


BAD_INDEX_100 = r"Found an invalid max index: 100 \(output volumes are of size 10x10\)"


def check_channels_last_pixel_ranges():
    """channels_last with few images per thread splits each image's output pixels into ranges (odd batches into
    as many as even out the threads) and has every range scan all of the image's input (SIMD compares and
    scatters for float32): same rule."""
    torch.manual_seed(0)
    before = torch.get_num_threads()
    try:
        for threads in (2, 3):
            torch.set_num_threads(threads)
            for N, C, H, W in ((1, 5, 12, 11), (1, 37, 9, 14), (2, 64, 13, 13), (1, 19, 1, 40), (3, 21, 10, 9),
                               (5, 8, 7, 12)):
                for dtype in (torch.float32, torch.float64):
                    x = torch.randn(N, C, (H + 1) // 2, (W + 1) // 2, dtype=dtype)
                    x = x.contiguous(memory_format=torch.channels_last)
                    for kind in ("pooled", "random"):
                        if kind == "pooled":
                            big = torch.randn(N, C, H, W, dtype=dtype).contiguous(memory_format=torch.channels_last)
                            x, indices = F.max_pool2d(big, 3, 2, padding=1, return_indices=True)
                        else:  # anywhere in the plane, heavily duplicated
                            indices = torch.randint(0, H * W, x.shape).contiguous(memory_format=torch.channels_last)
                        out = sx.functional.max_unpool2d(x, indices, 2, output_size=(H, W))
                        assert out.is_contiguous(memory_format=torch.channels_last) or C == 1
                        assert torch.equal(out, latest_wins_fast(x, indices, H, W)), (threads, N, C, H, W, dtype, kind)
            x = torch.randn(1, 37, 5, 5).contiguous(memory_format=torch.channels_last)
            for c in (3, 20, 36):  # a bad index in a SIMD group and in the tail: named, whatever the thread count
                indices = torch.randint(0, 100, x.shape).contiguous(memory_format=torch.channels_last)
                indices[0, c, 4, 2] = 100
                with pytest.raises(RuntimeError, match=BAD_INDEX_100):
                    sx.functional.max_unpool2d(x, indices, 2)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("isa", [None, "avx2", "scalar"])
def test_channels_last_pixel_ranges(isa):
    """check_channels_last_pixel_ranges on this CPU's widest paths, and capped at AVX2 or scalar in a fresh process."""
    run_check("test_max_unpool", "check_channels_last_pixel_ranges", isa)


def check_backward_gathers():
    """The backward gathers grad_output at the indices: SIMD runs over a plane's pixels (NCHW) or a pixel's
    channels (channels_last) for float32, element loops otherwise; every layout, channel counts with and without
    a SIMD tail, batch below and above the thread count; a bad index is named."""
    torch.manual_seed(0)
    for N, C, H, W in ((1, 37, 9, 14), (3, 16, 12, 11), (2, 5, 3, 2)):
        for dtype in (torch.float32, torch.float64, torch.bfloat16):
            for memory in ("nchw", "channels_last", "strided"):
                pooled, indices = pooled_input(N, C, H, W, 3, 2, 1, dtype=dtype, ceil_mode=False)
                indices = layout(indices, memory)
                for grad_memory in ("nchw", "channels_last", "strided"):
                    grad = layout(torch.randn(N, C, H, W, dtype=dtype), grad_memory)
                    got = torch.ops.squeezeae.max_unpool2d_backward(grad, indices)
                    want = grad.reshape(N, C, -1).gather(2, indices.reshape(N, C, -1)).view(indices.shape)
                    assert got.shape == indices.shape and got.dtype == dtype
                    assert torch.equal(got, want), (N, C, H, W, dtype, memory, grad_memory)
    grad = torch.randn(1, 37, 10, 10)
    for memory in ("nchw", "channels_last"):
        for c in (3, 20, 36):  # in a SIMD group and in the tail
            indices = layout(torch.randint(0, 100, (1, 37, 5, 5)), memory)
            indices[0, c, 4, 2] = 100
            with pytest.raises(RuntimeError, match=BAD_INDEX_100):
                torch.ops.squeezeae.max_unpool2d_backward(layout(grad, memory), indices)


@pytest.mark.parametrize("isa", [None, "avx2", "scalar"])
def test_backward_gathers(isa):
    """check_backward_gathers on this CPU's widest paths, and capped at AVX2 or scalar in a fresh process."""
    run_check("test_max_unpool", "check_backward_gathers", isa)


def test_default_output_size_and_unbatched(device):
    pooled, indices = pooled_input(2, 3, 8, 6, 2, 2, device=device, ceil_mode=False)
    out = sx.functional.max_unpool2d(pooled, indices, 2)
    assert torch.equal(out.cpu(), F.max_unpool2d(pooled.cpu(), indices.cpu(), 2))
    out3 = sx.functional.max_unpool2d(pooled[0], indices[0], 2)
    assert torch.equal(out3, out[0])


def test_output_size_rules(device):
    pooled, indices = pooled_input(1, 2, 8, 8, 2, 2, device=device, ceil_mode=False)  # pooled 4x4, indices < 64
    for size in [(8, 8), (9, 9), (1, 2, 9, 8)]:
        out = sx.functional.max_unpool2d(pooled, indices, 2, output_size=size)
        assert out.shape[-2:] == tuple(size[-2:])
        assert torch.equal(out.cpu(), F.max_unpool2d(pooled.cpu(), indices.cpu(), 2, output_size=size))
    with pytest.raises(ValueError, match="invalid output_size"):
        sx.functional.max_unpool2d(pooled, indices, 2, output_size=(10, 8))


def test_random_indices_with_duplicates(device):
    """Indices need not come from max_pool2d: any in-plane index works, duplicates follow the rule."""
    x = torch.randn(2, 3, 5, 4, device=device)
    indices = torch.randint(0, 20, (2, 3, 5, 4), device=device)  # 20 elements into 20 slots, at random
    out = sx.functional.max_unpool2d(x, indices, 1)
    assert torch.equal(out.cpu().double(), latest_wins(x, indices, 5, 4))


def test_backward_is_pytorch_gradient(device):
    pooled, indices = pooled_input(2, 4, 11, 11, 3, 2, device=device)  # overlapping: duplicates
    pooled = pooled.requires_grad_()
    out = sx.functional.max_unpool2d(pooled, indices, 3, 2, output_size=(11, 11))
    grad = torch.randn_like(out)
    out.backward(grad)
    expected = grad.cpu().reshape(2, 4, -1).gather(2, indices.cpu().reshape(2, 4, -1)).view_as(pooled)
    assert torch.equal(pooled.grad.cpu(), expected)


def test_gradcheck(device):
    pooled, indices = pooled_input(2, 3, 6, 8, 2, 2, dtype=torch.float64, device=device, ceil_mode=False)
    pooled.requires_grad_()
    assert torch.autograd.gradcheck(lambda t: sx.functional.max_unpool2d(t, indices, 2, 2), (pooled,))


def test_opcheck(device):
    pooled, indices = pooled_input(2, 3, 9, 9, 3, 2, device=device)
    pooled = pooled.contiguous(memory_format=torch.channels_last)
    for t in (pooled, pooled.detach().requires_grad_()):
        torch.library.opcheck(torch.ops.squeezeae.max_unpool2d.default, (t, indices, [3, 3], [2, 2], [0, 0], [9, 9]))
    grad = torch.randn(2, 3, 9, 9, device=device)
    torch.library.opcheck(torch.ops.squeezeae.max_unpool2d_backward.default, (grad, indices))


def test_module(device):
    pooled, indices = pooled_input(2, 3, 13, 13, 3, 2, device=device)
    module = sx.MaxUnpool2d(3, 2)
    out = module(pooled, indices, output_size=(13, 13))
    assert torch.equal(out, sx.functional.max_unpool2d(pooled, indices, 3, 2, 0, (13, 13)))
    assert "kernel_size=3" in repr(module)
