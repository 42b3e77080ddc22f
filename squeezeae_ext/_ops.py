"""Loads the compiled ops and registers their fake kernels, the one thing the dispatcher gets from Python.

Argument checks live once, in C++ (csrc/checks.h); autograd is registered in C++ too (csrc/autograd.cpp, a
C++ dispatch costs far less than a Python autograd kernel). The fake kernels here only compute output
metadata, with the same memory-format rule as csrc/shapes.h.
"""
import torch
from torch._prims_common import suggest_memory_format

from ._sizes import pool_output_size

try:
    from . import _C  # noqa: F401  (importing runs the TORCH_LIBRARY registrations)
except ImportError as error:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        "squeezeae_ext's compiled extension (squeezeae_ext._C) could not be loaded: "
        f"{error}. Build it against the installed torch with\n"
        "    pip install --no-build-isolation -e .\n"
        "from the source checkout (add SQUEEZEAE_FORCE_CPU=1 to skip the CUDA kernels)."
    ) from error

ops = torch.ops.squeezeae


def _empty_like_layout(like, shape, dtype=None):
    return torch.empty(
        shape, dtype=dtype or like.dtype, device=like.device, memory_format=suggest_memory_format(like)
    )


# ---------------------------------------------------------------------------------------------- fake kernels
@torch.library.register_fake("squeezeae::fire")
def _fire_fake(x, squeeze_weight, squeeze_bias, expand1x1_weight, expand1x1_bias, expand3x3_weight, expand3x3_bias):
    out_channels = expand1x1_weight.shape[0] + expand3x3_weight.shape[0]
    return _empty_like_layout(x, (x.shape[0], out_channels, x.shape[2], x.shape[3]))


def _fire_grads_fake(grad_input_like, input_layout, squeeze_weight, expand1x1_weight, expand3x3_weight):
    def new(t):
        return t.new_empty(t.shape)

    return (
        _empty_like_layout(input_layout, grad_input_like, dtype=squeeze_weight.dtype),
        new(squeeze_weight),
        squeeze_weight.new_empty(squeeze_weight.shape[0]),
        new(expand1x1_weight),
        expand1x1_weight.new_empty(expand1x1_weight.shape[0]),
        new(expand3x3_weight),
        expand3x3_weight.new_empty(expand3x3_weight.shape[0]),
    )


@torch.library.register_fake("squeezeae::fire_backward")
def _fire_backward_fake(grad_output, x, output, squeeze_weight, squeeze_bias, expand1x1_weight, expand3x3_weight):
    return _fire_grads_fake(x.shape, x, squeeze_weight, expand1x1_weight, expand3x3_weight)


@torch.library.register_fake("squeezeae::max_unpool2d")
def _max_unpool2d_fake(input, indices, kernel_size, stride, padding, output_size):
    return _empty_like_layout(input, (input.shape[0], input.shape[1], output_size[0], output_size[1]))


@torch.library.register_fake("squeezeae::max_unpool2d_backward")
def _max_unpool2d_backward_fake(grad_output, indices):
    return _empty_like_layout(indices, indices.shape, dtype=grad_output.dtype)


def _pooled_like(input, kernel_size, stride, padding, dilation, ceil_mode, dtype=None):
    height, width = (
        pool_output_size(input.shape[2 + d], kernel_size[d], stride[d], padding[d], dilation[d], ceil_mode)
        for d in range(2)
    )
    return _empty_like_layout(input, (input.shape[0], input.shape[1], height, width), dtype=dtype)


@torch.library.register_fake("squeezeae::max_pool2d")
def _max_pool2d_fake(input, kernel_size, stride, padding, dilation, ceil_mode):
    return _pooled_like(input, kernel_size, stride, padding, dilation, ceil_mode)


@torch.library.register_fake("squeezeae::max_pool2d_with_indices")
def _max_pool2d_with_indices_fake(input, kernel_size, stride, padding, dilation, ceil_mode):
    args = (input, kernel_size, stride, padding, dilation, ceil_mode)
    return _pooled_like(*args), _pooled_like(*args, dtype=torch.int64)


@torch.library.register_fake("squeezeae::max_pool2d_backward")
def _max_pool2d_backward_fake(grad_output, input, indices):
    return _empty_like_layout(input, input.shape)


@torch.library.register_fake("squeezeae::unpool_fire")
def _unpool_fire_fake(
    input, indices, squeeze_weight, squeeze_bias, expand1x1_weight, expand1x1_bias, expand3x3_weight,
    expand3x3_bias, kernel_size, stride, padding, output_size,
):
    out_channels = expand1x1_weight.shape[0] + expand3x3_weight.shape[0]
    return _empty_like_layout(input, (input.shape[0], out_channels, output_size[0], output_size[1]))


@torch.library.register_fake("squeezeae::unpool_fire_backward")
def _unpool_fire_backward_fake(
    grad_output, input, indices, output, squeeze_weight, squeeze_bias, expand1x1_weight, expand3x3_weight,
    kernel_size, stride, padding,
):
    return _fire_grads_fake(input.shape, input, squeeze_weight, expand1x1_weight, expand3x3_weight)


def cpu_paths() -> dict:
    """Which CPU paths the kernels take on this machine: the GEMM backend ('onednn-brgemm' or 'plain'), the SIMD
    level of the transposes, scatters and gathers ('avx512', 'avx2', 'scalar'; SQUEEZEAE_CPU_ISA caps it), the L2
    and L3 sizes their rules read (bytes, 0 if the OS does not say; SQUEEZEAE_CPU_L3_BYTES overrides the L3),
    the forward tile size in output pixels, the output size from which max_unpool2d streams (bytes), and how a
    bfloat16 Fire forward multiplies ('onednn-brgemm-bf16' where oneDNN's micro-kernel does bfloat16 here, for
    channels_last inputs with even input and squeeze channels; else 'float32-copies'), and from how many output
    pixels a call (batch x height x width) the forward's 3x3 convolution runs as Winograd F(2x2, 3x3) (0: always,
    -1: never; SQUEEZEAE_CPU_WINOGRAD=on or =off), up to how many a float32 forward call takes the planar tiles
    in any layout (0: no such rule on this CPU), and whether SQUEEZEAE_CPU_FORWARD_TILES forces the forward's
    tiles ('planar', 'pixel-major') or the rules choose them ('measured')."""
    return _C.cpu_paths()


def has_cuda_kernels() -> bool:
    """True when this build of the extension holds the CUDA kernels (whether or not a GPU is present)."""
    return torch._C._dispatch_has_kernel_for_dispatch_key("squeezeae::fire", "CUDA")
