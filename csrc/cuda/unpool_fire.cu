// unpool_fire on CUDA: fire(max_unpool2d(input, indices)) where the fused Fire kernel's tile loader gathers
// the unpooled pixels from input/indices (kernels/unpool.cuh: unpooled_value), so the unpooled tensor never
// exists. The gather needs every index inside its own pooling window (what max_pool2d produces); the index
// check tells. Otherwise (indices not from those windows, which is rare) and under CUDA-graph capture (where
// the check cannot be read back), it falls back to materialising max_unpool2d (the deterministic winner path)
// and running the fused Fire kernel on it: same result, one more tensor.
//
// Backward: materialises the unpooled tensor (recomputed), runs the Fire backward on it, and gathers the
// gradient w.r.t. the unpooled tensor at each index (PyTorch's max_unpool2d derivative).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "checks.h"
#include "launchers.h"
#include "shapes.h"

namespace squeezeae {
namespace cuda_impl {
namespace {

at::Tensor unpool_fire_cuda(const at::Tensor& input, const at::Tensor& indices, const at::Tensor& squeeze_weight,
                            const std::optional<at::Tensor>& squeeze_bias, const at::Tensor& expand1x1_weight,
                            const std::optional<at::Tensor>& expand1x1_bias, const at::Tensor& expand3x3_weight,
                            const std::optional<at::Tensor>& expand3x3_bias, at::IntArrayRef kernel_size,
                            at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef output_size) {
  UnpoolDims ud;
  const FireDims d =
      check_unpool_fire("unpool_fire", input, indices, squeeze_weight, squeeze_bias, expand1x1_weight, expand1x1_bias,
                        expand3x3_weight, expand3x3_bias, kernel_size, stride, padding, output_size, &ud);
  const c10::cuda::CUDAGuard guard(input.device());
  at::Tensor output = empty_like_layout(input, {d.batch, d.out_channels(), d.height, d.width});
  if (output.numel() == 0) return output;
  auto fire_on = [&](const at::Tensor& fire_input, const at::Tensor* gather_indices, const cuda::UnpoolParams* p) {
    launch_fire_forward(fire_input, gather_indices, p, d, squeeze_weight, squeeze_bias, expand1x1_weight,
                        expand1x1_bias, expand3x3_weight, expand3x3_bias, output);
  };
  if (input.numel() == 0) {  // no pooled elements (C == 0 or an empty pooled plane): the unpooled input is zero
    fire_on(zeros_like_layout(input, {ud.batch, ud.channels, ud.out_height, ud.out_width}), nullptr, nullptr);
    return output;
  }
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const cuda::UnpoolParams p = make_unpool_params(input, indices, at::Tensor(), ud, kernel_size, stride, padding);
  const IndexCheck check = check_unpool_indices(indices, p, stream);
  SQUEEZEAE_CHECK_INDEX_RANGE(check, p.out_h, p.out_w);
  if (check.checked && !check.out_of_window) {
    fire_on(input, &indices, &p);
    return output;
  }
  at::Tensor unpooled = empty_like_layout(input, {ud.batch, ud.channels, ud.out_height, ud.out_width});
  max_unpool2d_into(input, indices, unpooled, p, /*gather=*/false, stream);
  fire_on(unpooled, nullptr, nullptr);
  return output;
}

FireGrads unpool_fire_backward_cuda(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& indices,
                                    const at::Tensor& output, const at::Tensor& squeeze_weight,
                                    const std::optional<at::Tensor>& squeeze_bias, const at::Tensor& expand1x1_weight,
                                    const at::Tensor& expand3x3_weight, at::IntArrayRef kernel_size,
                                    at::IntArrayRef stride, at::IntArrayRef padding) {
  const char* op = "unpool_fire_backward";
  check_input_4d(op, "grad_output", grad_output);
  UnpoolDims ud;
  const FireDims d = check_unpool_fire(op, input, indices, squeeze_weight, squeeze_bias, expand1x1_weight,
                                       std::nullopt, expand3x3_weight, std::nullopt, kernel_size, stride, padding,
                                       {grad_output.size(2), grad_output.size(3)}, &ud);
  check_fire_output_like(op, "grad_output", grad_output, d, input);
  check_fire_output_like(op, "output", output, d, input);
  const c10::cuda::CUDAGuard guard(input.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  // The Fire input, recomputed (the forward never stored it).
  at::Tensor unpooled = empty_like_layout(input, {ud.batch, ud.channels, ud.out_height, ud.out_width});
  if (unpooled.numel() > 0) {
    if (input.numel() == 0) {
      unpooled.zero_();
    } else {
      const cuda::UnpoolParams p = make_unpool_params(input, indices, unpooled, ud, kernel_size, stride, padding);
      const IndexCheck check = check_unpool_indices(indices, p, stream);
      SQUEEZEAE_CHECK_INDEX_RANGE(check, p.out_h, p.out_w);
      max_unpool2d_into(input, indices, unpooled, p, check.checked && !check.out_of_window, stream);
    }
  }
  FireGrads grads = fire_backward_checked(grad_output, unpooled, output, d, squeeze_weight, squeeze_bias,
                                          expand1x1_weight, expand3x3_weight);
  // grad_input[n, c, ph, pw] = d(unpooled)[n, c, indices[n, c, ph, pw]], laid out like input.
  at::Tensor grad_input = empty_like_layout(input, input.sizes());
  const IndexCheck check = max_unpool2d_backward_into(std::get<0>(grads), indices, grad_input);
  SQUEEZEAE_CHECK_INDEX_RANGE(check, ud.out_height, ud.out_width);
  std::get<0>(grads) = grad_input;
  return grads;
}

}  // namespace
}  // namespace cuda_impl

TORCH_LIBRARY_IMPL(squeezeae, CUDA, m) {
  m.impl("unpool_fire", &cuda_impl::unpool_fire_cuda);
  m.impl("unpool_fire_backward", &cuda_impl::unpool_fire_backward_cuda);
}

}  // namespace squeezeae
