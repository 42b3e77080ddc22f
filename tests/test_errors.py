"""Bad input raises a Python error that names the argument, the expectation and what came; never a crash."""
import pytest
import torch

import squeezeae_ext as sx
from helpers import fire_weights, pooled_input

F = sx.functional


def fire_args(device="cpu", C=6):
    return [torch.randn(2, C, 5, 5, device=device), *fire_weights(6, 3, 4, 5, device=device)]


def replace(args, i, value):
    args = list(args)
    args[i] = value
    return args


FIRE_CASES = [
    ("int input", lambda a: replace(a, 0, a[0].long()), RuntimeError, "fire: x must be a floating-point tensor"),
    ("2-D input", lambda a: replace(a, 0, a[0][0, 0]), ValueError, r"fire: x must be 3-D \[C, H, W\] or 4-D"),
    ("5-D input", lambda a: replace(a, 0, a[0][None]), ValueError, "fire: x must be 3-D"),
    ("not a tensor", lambda a: replace(a, 0, [1.0]), TypeError, "fire: x must be a Tensor"),
    ("channels", lambda a: replace(a, 0, torch.randn(2, 7, 5, 5)), RuntimeError,
     "fire: x has 7 channels but squeeze_weight expects 6"),
    ("squeeze shape", lambda a: replace(a, 1, torch.randn(3, 6, 3, 3)), RuntimeError,
     r"squeeze_weight must have shape \[S, C_in, 1, 1\]"),
    ("expand1x1 in", lambda a: replace(a, 3, torch.randn(4, 2, 1, 1)), RuntimeError,
     r"expand1x1_weight must have shape \[E1, S, 1, 1\]"),
    ("expand3x3 kernel", lambda a: replace(a, 5, torch.randn(5, 3, 1, 1)), RuntimeError,
     r"expand3x3_weight must have shape \[E3, S, 3, 3\] = \[5, 3, 3, 3\], got \[5, 3, 1, 1\]"),
    ("expand3x3 rank", lambda a: replace(a, 5, torch.randn(5, 3, 3)), RuntimeError, "expand3x3_weight must be 4-D"),
    ("bias shape", lambda a: replace(a, 2, torch.randn(4)), RuntimeError, r"squeeze_bias must have shape \[3\]"),
    ("weight dtype", lambda a: replace(a, 3, a[3].double()), RuntimeError,
     "expand1x1_weight must have the same dtype as x"),
    ("bias dtype", lambda a: replace(a, 6, a[6].half()), RuntimeError, "expand3x3_bias must have the same dtype"),
]


@pytest.mark.parametrize("name,make,error,match", FIRE_CASES, ids=[c[0] for c in FIRE_CASES])
def test_fire_bad_input(name, make, error, match):
    with pytest.raises(error, match=match):
        F.fire(*make(fire_args()))


def unpool_args():
    pooled, indices = pooled_input(2, 3, 8, 8, 2, 2, ceil_mode=False)
    return pooled, indices


UNPOOL_CASES = [
    ("int32 indices", lambda x, i: (x, i.int(), {}), RuntimeError, "indices must be an int64 tensor, got Int"),
    ("indices shape", lambda x, i: (x, i[:, :2], {}), RuntimeError, "indices must have the same shape as input"),
    ("index too large", lambda x, i: (x, i.index_fill(3, torch.tensor([1]), 64), {}), RuntimeError,
     r"Found an invalid max index: 64 \(output volumes are of size 8x8\)"),
    ("negative index", lambda x, i: (x, i.index_fill(2, torch.tensor([0]), -1), {}), RuntimeError,
     "Found an invalid max index: -1"),
    ("output_size", lambda x, i: (x, i, {"output_size": (12, 8)}), ValueError, "invalid output_size"),
    ("output_size len", lambda x, i: (x, i, {"output_size": (8,)}), ValueError,
     "output_size should be a sequence containing 2 or 4 elements"),
    ("kernel_size", lambda x, i: (x, i, {"kernel_size": 0}), ValueError, "kernel_size must be >= 1"),
    ("stride type", lambda x, i: (x, i, {"stride": 1.5}), TypeError, "stride must be an int or a pair of ints"),
    ("int input", lambda x, i: (x.long(), i, {}), RuntimeError, "input must be a floating-point tensor"),
]


@pytest.mark.parametrize("name,make,error,match", UNPOOL_CASES, ids=[c[0] for c in UNPOOL_CASES])
def test_max_unpool_bad_input(name, make, error, match):
    x, indices = unpool_args()
    x, indices, kwargs = make(x, indices)
    kwargs.setdefault("kernel_size", 2)
    with pytest.raises(error, match=match):
        F.max_unpool2d(x, indices, **kwargs)


@pytest.mark.parametrize("name,make,error,match", UNPOOL_CASES, ids=[c[0] for c in UNPOOL_CASES])
def test_unpool_fire_bad_input(name, make, error, match):
    x, indices = unpool_args()
    x, indices, kwargs = make(x, indices)
    kwargs.setdefault("kernel_size", 2)
    weights = fire_weights(3, 2, 2, 2)
    if x.is_floating_point():
        weights = [w.to(x.dtype) for w in weights]
    with pytest.raises(error, match=match):
        F.unpool_fire(x, indices, *weights, **kwargs)


def test_unpool_fire_weight_mismatch():
    x, indices = unpool_args()
    with pytest.raises(RuntimeError, match="unpool_fire: input has 3 channels but squeeze_weight expects 4"):
        F.unpool_fire(x, indices, *fire_weights(4, 2, 2, 2), kernel_size=2)


def test_backward_ops_check_their_arguments():
    x = torch.randn(2, 6, 5, 5)
    w = fire_weights(6, 3, 4, 5)
    out = F.fire(x, *w)
    with pytest.raises(RuntimeError, match=r"fire_backward: grad_output must have shape \[2, 9, 5, 5\]"):
        torch.ops.squeezeae.fire_backward(out[:, :4], x, out, w[0], w[1], w[2], w[4])
    with pytest.raises(RuntimeError, match="max_unpool2d_backward: indices must be an int64 tensor"):
        torch.ops.squeezeae.max_unpool2d_backward(out, torch.zeros(2, 9, 2, 2, dtype=torch.int32))
    with pytest.raises(RuntimeError, match="Found an invalid max index: 99"):
        torch.ops.squeezeae.max_unpool2d_backward(out, torch.full((2, 9, 2, 2), 99))


def test_no_partial_write_on_invalid_index():
    """The op raises before returning anything; the process and later calls are unaffected."""
    x, indices = unpool_args()
    bad = indices.clone()
    bad[1, 2, 3, 3] = 10**12
    with pytest.raises(RuntimeError, match="invalid max index"):
        F.max_unpool2d(x, bad, 2)
    torch.testing.assert_close(F.max_unpool2d(x, indices, 2), torch.nn.functional.max_unpool2d(x, indices, 2))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("memory", ["nchw", "channels_last"])
@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("channel", [3, 36])
def test_max_unpool_invalid_index_on_every_path(dtype, memory, batch, channel):
    """Batch 1 channels_last takes the pixel ranges (float32 and 16-bit SIMD compares, 8 indices at a time),
    batch 4 the channel blocks: an index past the plane is named whichever path scans it, in a group of 8
    (channel 3) or in the tail of a 37-channel pixel (channel 36)."""
    pooled, indices = pooled_input(batch, 37, 12, 12, 2, 2, ceil_mode=False)
    pooled = pooled.to(dtype)
    bad = indices.clone()
    bad[-1, channel, 2, 3] = 144
    if memory == "channels_last":
        pooled = pooled.contiguous(memory_format=torch.channels_last)
        bad = bad.contiguous(memory_format=torch.channels_last)
    with pytest.raises(RuntimeError, match=r"Found an invalid max index: 144 \(output volumes are of size 12x12\)"):
        F.max_unpool2d(pooled, bad, 2)
    bad[-1, channel, 2, 3] = indices[-1, channel, 2, 3]
    torch.testing.assert_close(F.max_unpool2d(pooled, bad, 2), torch.nn.functional.max_unpool2d(pooled, bad, 2))
