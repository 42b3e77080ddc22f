// Output allocation shared by every backend: outputs keep the input's memory format (the same rule as
// torch._prims_common.suggest_memory_format, which the Python fake kernels use).
#pragma once

#include <ATen/ATen.h>

namespace squeezeae {

inline at::MemoryFormat output_memory_format(const at::Tensor& like) { return like.suggest_memory_format(); }

inline at::Tensor empty_like_layout(const at::Tensor& like, at::IntArrayRef sizes) {
  return at::empty(sizes, like.options().memory_format(output_memory_format(like)));
}

inline at::Tensor zeros_like_layout(const at::Tensor& like, at::IntArrayRef sizes) {
  return empty_like_layout(like, sizes).zero_();  // at::zeros ignores a memory format in its options
}

}  // namespace squeezeae
