"""Functional forms of the fused ops, with the signatures of their PyTorch counterparts.

Each accepts a batched [N, C, H, W] or an unbatched [C, H, W] input (like nn.Conv2d and F.max_unpool2d) and
calls one op of torch.ops.squeezeae; the C++ side checks the tensors.
"""
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ._ops import ops

IntOrPair = Union[int, Sequence[int]]

__all__ = ["fire", "max_pool2d", "max_unpool2d", "unpool_fire", "unpool_output_size"]


def _pair(value: IntOrPair, name: str, op: str) -> list:
    if isinstance(value, int) and not isinstance(value, bool):
        return [value, value]
    if isinstance(value, (tuple, list, torch.Size)) and len(value) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        return list(value)
    raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")


def _batched(x: Tensor, name: str, op: str):
    """Returns (4-D tensor, whether it was unbatched)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: {name} must be a Tensor, got {type(x).__name__}")
    if x.dim() == 3:
        return x.unsqueeze(0), True
    if x.dim() != 4:
        raise ValueError(
            f"{op}: {name} must be 3-D [C, H, W] or 4-D [N, C, H, W], got {x.dim()}-D with shape {tuple(x.shape)}"
        )
    return x, False


def unpool_output_size(
    input_hw: Sequence[int],
    kernel_size: IntOrPair,
    stride: Optional[IntOrPair] = None,
    padding: IntOrPair = 0,
    output_size: Optional[Sequence[int]] = None,
    op: str = "max_unpool2d",
) -> list:
    """The [H_out, W_out] of max-unpooling, with F.max_unpool2d's rules and errors."""
    kernel = _pair(kernel_size, "kernel_size", op)
    step = kernel if stride is None else _pair(stride, "stride", op)
    pad = _pair(padding, "padding", op)
    for name, value, low in (("kernel_size", kernel, 1), ("stride", step, 1), ("padding", pad, 0)):
        if min(value) < low:
            raise ValueError(f"{op}: {name} must be >= {low}, got {tuple(value)}")
    default = [(input_hw[d] - 1) * step[d] + kernel[d] - 2 * pad[d] for d in range(2)]
    if output_size is None:
        size = default
    else:
        size = list(output_size)
        if len(size) == 4:
            size = size[2:]
        if len(size) != 2:
            raise ValueError(
                f"{op}: output_size should be a sequence containing 2 or 4 elements, but it has a length of "
                f"'{len(size)}'"
            )
        for d in range(2):
            low, high = default[d] - step[d], default[d] + step[d]
            if not low < size[d] < high:
                raise ValueError(
                    f'{op}: invalid output_size "{list(output_size)}" (dim {d} must be between {low} and {high})'
                )
    if min(size) < 1:
        raise ValueError(f"{op}: output_size must be positive, got {size} (input {list(input_hw)}, kernel {kernel}, "
                         f"stride {step}, padding {pad})")
    return [kernel, step, pad, size]


def _unpool_args(input, indices, kernel_size, stride, padding, output_size, op):
    """(4-D input, 4-D indices, whether unbatched, [kernel, stride, padding, output_size]) for an unpool op."""
    x4, unbatched = _batched(input, "input", op)
    if not isinstance(indices, Tensor):
        raise TypeError(f"{op}: indices must be a Tensor, got {type(indices).__name__}")
    if unbatched and indices.dim() == 3:
        indices = indices.unsqueeze(0)
    return x4, indices, unbatched, unpool_output_size(x4.shape[-2:], kernel_size, stride, padding, output_size, op)


def fire(
    x: Tensor,
    squeeze_weight: Tensor,
    squeeze_bias: Optional[Tensor],
    expand1x1_weight: Tensor,
    expand1x1_bias: Optional[Tensor],
    expand3x3_weight: Tensor,
    expand3x3_bias: Optional[Tensor],
) -> Tensor:
    """torchvision's Fire forward: cat([relu(e1(s)), relu(e3(s))], 1) with s = relu(squeeze(x)), fused."""
    x4, unbatched = _batched(x, "x", "fire")
    out = ops.fire(x4, squeeze_weight, squeeze_bias, expand1x1_weight, expand1x1_bias, expand3x3_weight,
                   expand3x3_bias)
    return out.squeeze(0) if unbatched else out


def _pool_pair(value, name: str, op: str) -> list:
    """An int, or a sequence of one or two ints (F.max_pool2d's rule), as [h, w]."""
    if type(value) is int:  # the common case first: a module's call should cost little more than the op's
        return [value, value]
    if isinstance(value, (tuple, list, torch.Size)) and len(value) == 1:
        value = value[0]
    return _pair(value, name, op)


def max_pool2d(
    input: Tensor,
    kernel_size: IntOrPair,
    stride: Optional[IntOrPair] = None,
    padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
):
    """F.max_pool2d, with the same values and indices (ties: the first maximum in row-major order; a NaN wins).

    On the CPU it runs the extension's kernels, which write indices only when ``return_indices`` is set or autograd
    needs them; other devices call ``F.max_pool2d``.
    """
    if isinstance(input, Tensor) and not input.is_cpu:
        return F.max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode=ceil_mode,
                            return_indices=return_indices)
    op = "max_pool2d"
    x4, unbatched = _batched(input, "input", op)
    kernel = _pool_pair(kernel_size, "kernel_size", op)
    step = kernel if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0) else _pool_pair(
        stride, "stride", op)
    pad = _pool_pair(padding, "padding", op)
    dil = _pool_pair(dilation, "dilation", op)
    if not isinstance(ceil_mode, bool):
        raise TypeError(f"{op}: ceil_mode must be a bool, got {type(ceil_mode).__name__}")
    if return_indices:
        out, indices = ops.max_pool2d_with_indices(x4, kernel, step, pad, dil, ceil_mode)
        return (out.squeeze(0), indices.squeeze(0)) if unbatched else (out, indices)
    out = ops.max_pool2d(x4, kernel, step, pad, dil, ceil_mode)
    return out.squeeze(0) if unbatched else out


def max_unpool2d(
    input: Tensor,
    indices: Tensor,
    kernel_size: IntOrPair,
    stride: Optional[IntOrPair] = None,
    padding: IntOrPair = 0,
    output_size: Optional[Sequence[int]] = None,
) -> Tensor:
    """F.max_unpool2d, deterministic: with duplicate indices the element latest in row-major (h, w) order wins."""
    x4, indices, unbatched, pool = _unpool_args(input, indices, kernel_size, stride, padding, output_size,
                                                "max_unpool2d")
    out = ops.max_unpool2d(x4, indices, *pool)
    return out.squeeze(0) if unbatched else out


def unpool_fire(
    input: Tensor,
    indices: Tensor,
    squeeze_weight: Tensor,
    squeeze_bias: Optional[Tensor],
    expand1x1_weight: Tensor,
    expand1x1_bias: Optional[Tensor],
    expand3x3_weight: Tensor,
    expand3x3_bias: Optional[Tensor],
    kernel_size: IntOrPair,
    stride: Optional[IntOrPair] = None,
    padding: IntOrPair = 0,
    output_size: Optional[Sequence[int]] = None,
) -> Tensor:
    """fire(max_unpool2d(input, indices, ...), ...) without materialising the unpooled tensor (except the bfloat16
    CPU forward where oneDNN multiplies bfloat16: it unpools first, which measured faster)."""
    x4, indices, unbatched, pool = _unpool_args(input, indices, kernel_size, stride, padding, output_size,
                                                "unpool_fire")
    out = ops.unpool_fire(x4, indices, squeeze_weight, squeeze_bias, expand1x1_weight, expand1x1_bias,
                          expand3x3_weight, expand3x3_bias, *pool)
    return out.squeeze(0) if unbatched else out
