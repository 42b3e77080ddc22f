"""squeezeae::max_pool2d: F.max_pool2d's values and indices to the bit, gradients, layouts, threads, errors."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import squeezeae_ext as sx
from torch._prims_common import suggest_memory_format

from helpers import layout

# (N, C, H, W, kernel, stride, padding, dilation, ceil_mode): SqueezeNet's 3x3/2 ceil pools (planes that the
# windows fit exactly and ones they overhang), 2x2/2, padded, 3x3/1, rectangular with dilation, a kernel of one,
# channel counts around the channels_last kernel's block of 64, planes narrower than a vector, one pixel.
CASES = [
    (1, 64, 23, 23, 3, 2, 0, 1, True),
    (2, 70, 14, 13, 3, 2, 0, 1, True),
    (2, 5, 13, 17, 3, 2, 1, 1, False),
    (3, 3, 8, 9, 2, 2, 0, 1, False),
    (2, 4, 9, 10, 3, 1, 1, 1, False),
    (2, 6, 11, 12, (3, 2), (2, 1), (1, 1), (2, 1), True),
    (1, 3, 7, 7, 2, 1, 1, 3, False),
    (2, 130, 5, 6, 1, 1, 0, 1, False),
    (1, 2, 40, 3, 3, 2, 1, 1, True),
    (1, 9, 1, 1, 1, 1, 0, 1, True),
]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def case_input(case, dtype, values):
    N, C, H, W = case[:4]
    x = torch.randn(N, C, H, W, dtype=torch.float64)
    if values == "ties":  # ReLU'd: windows of zeros, where the first maximum must win
        x = x.clamp_min(0).round()
    elif values == "special":  # NaNs (the last NaN of a window wins), infinities, signed zeros
        flat = x.view(-1)
        flat[::7] = float("nan")
        flat[3::11] = float("inf")
        flat[5::13] = -float("inf")
        flat[2::5] = -0.0
        flat[4::9] = 0.0
    return x.to(dtype)


def pool_args(case):
    return dict(kernel_size=case[4], stride=case[5], padding=case[6], dilation=case[7], ceil_mode=case[8])


def assert_same(out, ref):
    """Equal to the bit: NaNs where the reference has them, signed zeros the same."""
    assert out.dtype == ref.dtype and out.shape == ref.shape
    assert torch.equal(out.isnan(), ref.isnan())
    fin = ~ref.isnan()
    assert torch.equal(out[fin], ref[fin])
    assert torch.equal(out[fin].signbit(), ref[fin].signbit())


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("memory", ["nchw", "channels_last", "strided"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("values", ["random", "ties", "special"])
def test_matches_pytorch(case, memory, dtype, values):
    x = layout(case_input(case, dtype, values), memory)
    ref, ref_idx = F.max_pool2d(x, **pool_args(case), return_indices=True)
    out, idx = sx.functional.max_pool2d(x, **pool_args(case), return_indices=True)
    values_only = sx.functional.max_pool2d(x, **pool_args(case))
    assert_same(out, ref)
    assert_same(values_only, ref)
    assert torch.equal(idx, ref_idx)
    fmt = torch.channels_last if memory == "channels_last" else torch.contiguous_format
    if x.shape[1] > 1 and out.shape[2] * out.shape[3] > 1:
        assert out.is_contiguous(memory_format=suggest_memory_format(x))
        assert idx.is_contiguous(memory_format=suggest_memory_format(x))
        if memory != "strided":
            assert out.is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("memory", ["nchw", "channels_last"])
def test_thread_counts_change_nothing(threads, memory):
    """Work items are bands of output rows, so the split moves with the thread count: results must not."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        for case in CASES[:3]:
            x = layout(case_input(case, torch.float32, "ties"), memory)
            ref, ref_idx = F.max_pool2d(x, **pool_args(case), return_indices=True)
            out, idx = sx.functional.max_pool2d(x, **pool_args(case), return_indices=True)
            assert torch.equal(out, ref) and torch.equal(idx, ref_idx)
            x = x.requires_grad_()
            grad = torch.randn_like(ref)
            (g,) = torch.autograd.grad(sx.functional.max_pool2d(x, **pool_args(case)), x, grad)
            (g_ref,) = torch.autograd.grad(F.max_pool2d(x, **pool_args(case)), x, grad)
            assert torch.equal(g, g_ref)
    finally:
        torch.set_num_threads(before)


# gradcheck-sized: overlapping ceil windows with 66 channels (a block of 64 and a remainder), padded, dilated
GRADCHECK_CASES = [(1, 66, 5, 4, 3, 2, 0, 1, True), CASES[2], CASES[5], CASES[6]]


@pytest.mark.parametrize("case", GRADCHECK_CASES)
@pytest.mark.parametrize("memory", ["nchw", "channels_last"])
def test_gradcheck(case, memory):
    # distinct values a step apart: the maximum of every window is unique and stays so under gradcheck's nudges
    N, C, H, W = case[:4]
    x = torch.randperm(N * C * H * W, dtype=torch.float64).reshape(N, C, H, W) / 10
    x = layout(x, memory).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: sx.functional.max_pool2d(t, **pool_args(case)), (x,))
    assert torch.autograd.gradcheck(lambda t: sx.functional.max_pool2d(t, **pool_args(case), return_indices=True)[0],
                                    (x,))


@pytest.mark.parametrize("memory", ["nchw", "channels_last", "strided"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_matches_pytorch(memory, dtype):
    """Gradients of tied windows add up at the shared input element, in ATen's order: equal to the bit."""
    for case in (CASES[0], CASES[2], CASES[4], CASES[5]):
        x = layout(case_input(case, dtype, "ties"), memory).requires_grad_()
        out = sx.functional.max_pool2d(x, **pool_args(case))
        grad = layout(torch.randn(out.shape, dtype=torch.float64).to(dtype), memory)
        (g,) = torch.autograd.grad(out, x, grad)
        (g_ref,) = torch.autograd.grad(F.max_pool2d(x, **pool_args(case)), x, grad)
        assert torch.equal(g, g_ref)
        assert g.is_contiguous(memory_format=suggest_memory_format(x))
        out, idx = sx.functional.max_pool2d(x, **pool_args(case), return_indices=True)
        assert out.requires_grad and not idx.requires_grad
        (g,) = torch.autograd.grad(out, x, grad)
        assert torch.equal(g, g_ref)


def test_expanded_grad_output():
    """A grad_output of stride 0 (the backward of a sum) reads as the dense tensor it stands for."""
    x = torch.randn(2, 3, 9, 9, requires_grad=True)
    (g,) = torch.autograd.grad(sx.functional.max_pool2d(x, 3, 2).sum(), x)
    (g_ref,) = torch.autograd.grad(F.max_pool2d(x, 3, 2).sum(), x)
    assert torch.equal(g, g_ref)


def test_unbatched_and_empty_batch():
    x = torch.randn(4, 9, 9)
    out, idx = sx.functional.max_pool2d(x, 3, 2, return_indices=True)
    ref, ref_idx = F.max_pool2d(x, 3, 2, return_indices=True)
    assert torch.equal(out, ref) and torch.equal(idx, ref_idx)
    empty = torch.randn(0, 4, 9, 9)
    assert sx.functional.max_pool2d(empty, 3, 2).shape == F.max_pool2d(empty, 3, 2).shape == (0, 4, 4, 4)
    x = torch.randn(0, 4, 9, 9, requires_grad=True)
    sx.functional.max_pool2d(x, 3, 2).sum().backward()
    assert x.grad.shape == x.shape


def test_argument_forms():
    """kernel_size, stride, padding and dilation as F.max_pool2d takes them: an int, one or two ints; stride None
    or empty means the kernel size."""
    x = torch.randn(1, 2, 10, 11)
    ref = F.max_pool2d(x, (3, 2), None, 1, 1)
    for stride in (None, (), []):
        assert torch.equal(sx.functional.max_pool2d(x, [3, 2], stride, (1,), [1]), ref)
    assert torch.equal(sx.functional.max_pool2d(x, (3,), (2,)), F.max_pool2d(x, 3, 2))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(kernel_size=0), RuntimeError, r"max_pool2d: kernel_size must be >= 1, got \[0, 0\]"),
        (dict(kernel_size=2, stride=0), RuntimeError, r"max_pool2d: stride must be >= 1, got \[0, 0\]"),
        (dict(kernel_size=2, dilation=(1, 0)), RuntimeError, r"max_pool2d: dilation must be >= 1, got \[1, 0\]"),
        (dict(kernel_size=2, padding=-1), RuntimeError, r"max_pool2d: padding must be >= 0"),
        (dict(kernel_size=3, padding=2), RuntimeError,
         r"max_pool2d: padding must be at most half of kernel_size \(\[3, 3\]\), got \[2, 2\]"),
        (dict(kernel_size=9), RuntimeError, r"input of spatial size \[7, 7\] is too small .* output would be \[0, 0\]"),
        (dict(kernel_size=(1, 2, 3)), TypeError, r"max_pool2d: kernel_size must be an int or a pair of ints"),
        (dict(kernel_size=2.0), TypeError, r"max_pool2d: kernel_size must be an int or a pair of ints, got 2.0"),
        (dict(kernel_size=2, ceil_mode=1), TypeError, r"max_pool2d: ceil_mode must be a bool, got int"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        sx.functional.max_pool2d(torch.randn(1, 2, 7, 7), **kwargs)


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: torch.randn(2, 0, 7), RuntimeError, r"input must have non-zero channels, height and width"),
        (lambda: torch.randn(7, 7), ValueError, r"max_pool2d: input must be 3-D \[C, H, W\] or 4-D"),
        (lambda: torch.randn(1, 0, 7, 7), RuntimeError, r"input must have non-zero channels, height and width"),
        (lambda: torch.ones(1, 2, 7, 7, dtype=torch.int32), RuntimeError, r"max_pool2d: input must be a floating"),
        (lambda: [1.0], TypeError, r"max_pool2d: input must be a Tensor, got list"),
    ],
)
def test_bad_input(make, error, match):
    with pytest.raises(error, match=match):
        sx.functional.max_pool2d(make(), 2)


def test_backward_op_checks_its_indices():
    """The backward op is public: indices outside the input's planes raise instead of writing out of bounds."""
    backward = torch.ops.squeezeae.max_pool2d_backward
    x = torch.randn(1, 2, 6, 6)
    for memory in ("nchw", "channels_last"):
        xs = layout(x, memory)
        go = layout(torch.randn(1, 2, 3, 3), memory)
        for bad in (36, -1, 1 << 40):
            idx = layout(torch.zeros(1, 2, 3, 3, dtype=torch.long), memory)
            idx[0, 1, 2, 2] = bad
            message = rf"indices must be flat positions in input's 6x6 planes, in \[0, 36\), got {bad}"
            with pytest.raises(RuntimeError, match=message):
                backward(go, xs, idx)
    with pytest.raises(RuntimeError, match=r"indices must have grad_output's shape"):
        backward(torch.randn(1, 2, 3, 3), x, torch.zeros(1, 2, 3, 2, dtype=torch.long))
    with pytest.raises(RuntimeError, match=r"indices must be an int64 tensor, got Int"):
        backward(torch.randn(1, 2, 3, 3), x, torch.zeros(1, 2, 3, 3, dtype=torch.int32))
    with pytest.raises(RuntimeError, match=r"grad_output must have input's batch and channels"):
        backward(torch.randn(1, 3, 3, 3), x, torch.zeros(1, 3, 3, 3, dtype=torch.long))
    with pytest.raises(RuntimeError, match=r"grad_output must have the same dtype as input"):
        backward(torch.randn(1, 2, 3, 3, dtype=torch.float64), x, torch.zeros(1, 2, 3, 3, dtype=torch.long))


def test_module_is_a_drop_in():
    torch.manual_seed(0)
    for kwargs in (dict(kernel_size=3, stride=2, ceil_mode=True), dict(kernel_size=2, return_indices=True),
                   dict(kernel_size=(3, 2), stride=1, padding=1, dilation=(1, 2))):
        ours, theirs = sx.MaxPool2d(**kwargs), nn.MaxPool2d(**kwargs)
        assert isinstance(ours, nn.MaxPool2d) and repr(ours) == repr(theirs)
        x = torch.randn(2, 3, 12, 13).contiguous(memory_format=torch.channels_last)
        out, ref = ours(x), theirs(x)
        if kwargs.get("return_indices"):
            assert torch.equal(out[0], ref[0]) and torch.equal(out[1], ref[1])
        else:
            assert torch.equal(out, ref)


def test_convert_swaps_pools():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.MaxPool2d(3, 2, ceil_mode=True), nn.MaxPool2d(2, return_indices=True))
    converted = sx.convert(model)
    assert [type(m) for m in converted] == [nn.Conv2d, sx.MaxPool2d, sx.MaxPool2d]
    assert converted[1].ceil_mode and converted[2].return_indices and converted[1].stride == 2
    assert [type(m) for m in model] == [nn.Conv2d, nn.MaxPool2d, nn.MaxPool2d], "inplace=False left the original"
    assert all(type(m) is nn.MaxPool2d for m in sx.convert(model, max_pool=False)[1:])
    assert isinstance(sx.convert(nn.MaxPool2d(2)), sx.MaxPool2d)
    x = torch.randn(1, 3, 20, 20)
    assert torch.equal(converted(x)[0], model(x)[0]) and torch.equal(converted(x)[1], model(x)[1])
    with pytest.raises(TypeError, match="convert: max_pool must be a bool, got str"):
        sx.convert(model, max_pool="no")


def test_opcheck():
    x = torch.randn(2, 3, 9, 8, requires_grad=True)
    args = (x, [3, 3], [2, 2], [1, 1], [1, 1], True)
    torch.library.opcheck(torch.ops.squeezeae.max_pool2d.default, args)
    torch.library.opcheck(torch.ops.squeezeae.max_pool2d_with_indices.default, args)
    cl = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    torch.library.opcheck(torch.ops.squeezeae.max_pool2d.default, (cl, [2, 2], [2, 2], [0, 0], [1, 1], False))


def test_compile_fullgraph():
    model = nn.Sequential(sx.MaxPool2d(3, 2, ceil_mode=True), nn.ReLU())
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    x1 = torch.randn(2, 4, 11, 11, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_()
    out, ref = compiled(x1), model(x2)
    assert torch.equal(out, ref)
    out.sum().backward()
    ref.sum().backward()
    assert torch.equal(x1.grad, x2.grad)


@pytest.mark.needs_cuda
def test_cuda_runs_pytorchs_kernel():
    x = torch.randn(2, 3, 9, 9, device="cuda")
    assert torch.equal(sx.MaxPool2d(3, 2)(x), F.max_pool2d(x, 3, 2))
