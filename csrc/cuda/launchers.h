// Torch-side helpers shared by the CUDA launchers (fire.cu, unpool.cu, unpool_fire.cu): the only place where
// torch types meet the kernel params structs. Included by .cu files only.
#pragma once

#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <optional>
#include <string>
#include <tuple>

#include "checks.h"
#include "kernels/unpool.cuh"

namespace squeezeae {
namespace cuda_impl {

// The CUDA type a kernel sees for an ATen scalar type (same bits).
template <typename T>
struct KernelType {
  using type = T;
};
template <>
struct KernelType<at::Half> {
  using type = __half;
};
template <>
struct KernelType<at::BFloat16> {
  using type = __nv_bfloat16;
};
static_assert(sizeof(at::Half) == sizeof(__half) && sizeof(at::BFloat16) == sizeof(__nv_bfloat16),
              "ATen and CUDA half types share their bits");

template <typename T>
const typename KernelType<T>::type* kernel_ptr(const at::Tensor& t) {
  return reinterpret_cast<const typename KernelType<T>::type*>(t.const_data_ptr<T>());
}
template <typename T>
typename KernelType<T>::type* kernel_mutable_ptr(at::Tensor& t) {
  return reinterpret_cast<typename KernelType<T>::type*>(t.mutable_data_ptr<T>());
}
template <typename T>
const typename KernelType<T>::type* kernel_ptr_or_null(const std::optional<at::Tensor>& t) {
  return (t.has_value() && t->defined()) ? kernel_ptr<T>(*t) : nullptr;
}

inline cuda::Strides4 strides4(const at::Tensor& t) {
  cuda::Strides4 s;
  s.n = t.stride(0);
  s.c = t.stride(1);
  s.h = t.stride(2);
  s.w = t.stride(3);
  return s;
}

// Neighbouring threads should walk channels when they are the innermost dimension in memory.
inline bool channels_innermost(const at::Tensor& t) {
  return t.dim() == 4 && t.size(1) > 1 && t.stride(1) == 1;
}

// Grid for a grid-stride loop over `total` elements.
inline unsigned int grid_for(int64_t total, int threads) {
  const int64_t blocks = (total + threads - 1) / threads;
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min<int64_t>(blocks, int64_t(1) << 20)));
}

bool stream_is_capturing(cudaStream_t stream);
int multiprocessor_count(int device);

// max_unpool2d geometry + strides for the kernels; `output` may be undefined (strides then unused).
cuda::UnpoolParams make_unpool_params(const at::Tensor& input, const at::Tensor& indices, const at::Tensor& output,
                                      const UnpoolDims& d, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                      at::IntArrayRef padding);

struct IndexCheck {
  bool checked = false;        // false under CUDA-graph capture (no host sync allowed): nothing is known
  bool out_of_window = false;  // some index lies outside its pooling window (or out of range)
  bool out_of_range = false;   // some index lies outside [0, H_out * W_out): the op must raise
  int64_t bad_index = 0;       // one offending value when out_of_range (which one is not deterministic)
};

// ATen's wording: "Found an invalid max index: <index> (output volumes are of size HxW)". Defined once, in
// unpool.cu (not an inline function shared with the g++-compiled CPU objects).
std::string invalid_index_message(int64_t index, int64_t out_height, int64_t out_width);

// Raises ATen's error for an out-of-range index. A macro on purpose: the throw (TORCH_CHECK ->
// c10::detail::torchCheckFail in libc10) happens in the op's own frame, straight under the dispatcher, with
// no helper function between them (see benchmarks/NOTES_cuda.md, "invalid index segfault").
#define SQUEEZEAE_CHECK_INDEX_RANGE(check, out_height, out_width)                                          \
  TORCH_CHECK(!(check).out_of_range,                                                                       \
              ::squeezeae::cuda_impl::invalid_index_message((check).bad_index, (out_height), (out_width)))

// Runs the index check kernel; unless the stream is capturing, syncs and reports whether an index is out of
// range (the caller raises with SQUEEZEAE_CHECK_INDEX_RANGE) and whether every index lies in its window.
// Never throws for index values.
IndexCheck check_unpool_indices(const at::Tensor& indices, const cuda::UnpoolParams& p, cudaStream_t stream);

// max_unpool2d into a preallocated output (same shape/dtype/device; any strides), after the index check.
// `gather` picks the output-stationary path (every index in its window), else the winner-buffer path.
void max_unpool2d_into(const at::Tensor& input, const at::Tensor& indices, at::Tensor& output,
                       const cuda::UnpoolParams& p, bool gather, cudaStream_t stream);

at::Tensor max_unpool2d_cuda(const at::Tensor& input, const at::Tensor& indices, at::IntArrayRef kernel_size,
                             at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef output_size);
at::Tensor max_unpool2d_backward_cuda(const at::Tensor& grad_output, const at::Tensor& indices);
// max_unpool2d_backward into a preallocated grad_input (shape of indices, any strides). Index values are
// checked on the device: out-of-range ones get zeros and are reported in the result (outside graph capture)
// for the caller to raise with SQUEEZEAE_CHECK_INDEX_RANGE.
IndexCheck max_unpool2d_backward_into(const at::Tensor& grad_output, const at::Tensor& indices,
                                      at::Tensor& grad_input);

// The fused Fire forward kernel into `output` [N, E1 + E3, H, W]. With `unpool` non-null, `x` is the pooled
// input and the Fire input is gathered through `indices` (every index must lie in its window).
void launch_fire_forward(const at::Tensor& x, const at::Tensor* indices, const cuda::UnpoolParams* unpool,
                         const FireDims& d, const at::Tensor& squeeze_weight,
                         const std::optional<at::Tensor>& squeeze_bias, const at::Tensor& expand1x1_weight,
                         const std::optional<at::Tensor>& expand1x1_bias, const at::Tensor& expand3x3_weight,
                         const std::optional<at::Tensor>& expand3x3_bias, at::Tensor& output);

using FireGrads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// fire_backward on already-checked arguments.
FireGrads fire_backward_checked(const at::Tensor& grad_output, const at::Tensor& x, const at::Tensor& output,
                                const FireDims& d, const at::Tensor& squeeze_weight,
                                const std::optional<at::Tensor>& squeeze_bias, const at::Tensor& expand1x1_weight,
                                const at::Tensor& expand3x3_weight);

}  // namespace cuda_impl
}  // namespace squeezeae
