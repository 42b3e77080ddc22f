// max_unpool2d's CPU kernel (unpool.cpp), for the kernels that reuse it.
#pragma once

#include <ATen/ATen.h>

namespace squeezeae {
namespace cpu {

// squeezeae::max_unpool2d on the CPU: checks its arguments, returns the unpooled tensor in the input's layout.
at::Tensor max_unpool2d(const at::Tensor& input, const at::Tensor& indices, at::IntArrayRef kernel_size,
                        at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef output_size);

}  // namespace cpu
}  // namespace squeezeae
