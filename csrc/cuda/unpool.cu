// max_unpool2d on CUDA (kernels in kernels/unpool.cuh): deterministic, any strides, channels_last native.
// Index values are checked on the device; outside CUDA-graph capture the launcher syncs once to raise ATen's
// "Found an invalid max index" (never a device-side assert; raised by the op function itself, see
// SQUEEZEAE_CHECK_INDEX_RANGE) and to choose the output-stationary gather when
// every index lies inside its pooling window. Under capture nothing can be read back: the general winner
// path runs and out-of-range indices are skipped (never written out of bounds).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <atomic>
#include <limits>
#include <string>

#include "checks.h"
#include "kernels/unpool.cuh"
#include "launchers.h"
#include "shapes.h"

namespace squeezeae {
namespace cuda_impl {

namespace {
constexpr int kThreads = 256;
}  // namespace

bool stream_is_capturing(cudaStream_t stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  C10_CUDA_CHECK(cudaStreamIsCapturing(stream, &status));
  return status != cudaStreamCaptureStatusNone;
}

int multiprocessor_count(int device) {
  constexpr int kMaxDevices = 64;
  static std::atomic<int> cache[kMaxDevices] = {};
  if (device >= 0 && device < kMaxDevices) {
    const int cached = cache[device].load(std::memory_order_relaxed);
    if (cached > 0) return cached;
  }
  int count = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
  if (device >= 0 && device < kMaxDevices) cache[device].store(count, std::memory_order_relaxed);
  return count;
}

cuda::UnpoolParams make_unpool_params(const at::Tensor& input, const at::Tensor& indices, const at::Tensor& output,
                                      const UnpoolDims& d, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                      at::IntArrayRef padding) {
  cuda::UnpoolParams p;
  p.batch = d.batch;
  p.channels = d.channels;
  p.in_h = d.in_height;
  p.in_w = d.in_width;
  p.out_h = d.out_height;
  p.out_w = d.out_width;
  p.kernel_h = kernel_size[0];
  p.kernel_w = kernel_size[1];
  p.stride_h = stride[0];
  p.stride_w = stride[1];
  p.pad_h = padding[0];
  p.pad_w = padding[1];
  p.input = strides4(input);
  p.indices = strides4(indices);
  if (output.defined()) p.output = strides4(output);
  p.channels_inner = channels_innermost(indices);
  return p;
}

std::string invalid_index_message(int64_t index, int64_t out_height, int64_t out_width) {
  // std::to_string rather than c10::str: no template instance shared with the CPU objects' copy of the message.
  return "Found an invalid max index: " + std::to_string(index) + " (output volumes are of size " +
         std::to_string(out_height) + "x" + std::to_string(out_width) + ")";
}

IndexCheck check_unpool_indices(const at::Tensor& indices, const cuda::UnpoolParams& p, cudaStream_t stream) {
  IndexCheck result;
  const int64_t total = p.batch * p.channels * p.in_h * p.in_w;
  if (total == 0) {
    result.checked = true;
    return result;
  }
  at::Tensor flags = at::zeros({cuda::kNumFlags}, indices.options().dtype(at::kLong));
  cuda::UnpoolParams walk = p;
  walk.channels_inner = channels_innermost(indices);
  cuda::unpool_check_indices_kernel<<<grid_for(total, kThreads), kThreads, 0, stream>>>(
      indices.const_data_ptr<int64_t>(), walk, reinterpret_cast<unsigned long long*>(flags.mutable_data_ptr<int64_t>()));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (stream_is_capturing(stream)) {
    result.out_of_window = true;  // unknown: callers take the general path
    return result;
  }
  const at::Tensor host = flags.to(at::kCPU);  // waits for the check kernel
  const int64_t* f = host.const_data_ptr<int64_t>();
  result.checked = true;
  result.out_of_range = f[cuda::kFlagOutOfRange] != 0;
  result.bad_index = f[cuda::kFlagBadIndexValue];
  result.out_of_window = f[cuda::kFlagOutOfWindow] != 0;
  return result;
}

void max_unpool2d_into(const at::Tensor& input, const at::Tensor& indices, at::Tensor& output,
                       const cuda::UnpoolParams& p, bool gather, cudaStream_t stream) {
  const int64_t out_total = p.batch * p.channels * p.out_h * p.out_w;
  const int64_t in_total = p.batch * p.channels * p.in_h * p.in_w;
  if (out_total == 0) return;
  cuda::UnpoolParams out_walk = p;
  out_walk.output = strides4(output);
  out_walk.channels_inner = channels_innermost(output);
  if (gather) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "max_unpool2d_cuda_gather", [&] {
      using K = typename KernelType<scalar_t>::type;
      cuda::unpool_gather_kernel<K><<<grid_for(out_total, kThreads), kThreads, 0, stream>>>(
          kernel_ptr<scalar_t>(input), indices.const_data_ptr<int64_t>(), kernel_mutable_ptr<scalar_t>(output),
          out_walk);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    return;
  }
  // The winner buffer stores (pooled position + 1) as int32.
  TORCH_CHECK(p.in_h * p.in_w < std::numeric_limits<int32_t>::max(),
              "max_unpool2d: the input plane is too large (", p.in_h, "x", p.in_w, ") for the CUDA kernel");
  at::Tensor winner = at::zeros({out_total}, indices.options().dtype(at::kInt));
  if (in_total > 0) {
    cuda::UnpoolParams in_walk = p;
    in_walk.channels_inner = channels_innermost(indices);
    cuda::unpool_scatter_winner_kernel<<<grid_for(in_total, kThreads), kThreads, 0, stream>>>(
        indices.const_data_ptr<int64_t>(), winner.mutable_data_ptr<int32_t>(), in_walk);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "max_unpool2d_cuda_winner", [&] {
    using K = typename KernelType<scalar_t>::type;
    cuda::unpool_write_winner_kernel<K><<<grid_for(out_total, kThreads), kThreads, 0, stream>>>(
        kernel_ptr<scalar_t>(input), winner.const_data_ptr<int32_t>(), kernel_mutable_ptr<scalar_t>(output),
        out_walk);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

at::Tensor max_unpool2d_cuda(const at::Tensor& input, const at::Tensor& indices, at::IntArrayRef kernel_size,
                             at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef output_size) {
  const UnpoolDims d = check_max_unpool("max_unpool2d", input, indices, kernel_size, stride, padding, output_size);
  const c10::cuda::CUDAGuard guard(input.device());
  at::Tensor output = empty_like_layout(input, {d.batch, d.channels, d.out_height, d.out_width});
  if (output.numel() == 0) return output;
  if (input.numel() == 0) return output.zero_();  // nothing points anywhere
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const cuda::UnpoolParams p = make_unpool_params(input, indices, output, d, kernel_size, stride, padding);
  const IndexCheck check = check_unpool_indices(indices, p, stream);
  SQUEEZEAE_CHECK_INDEX_RANGE(check, p.out_h, p.out_w);
  max_unpool2d_into(input, indices, output, p, check.checked && !check.out_of_window, stream);
  return output;
}

IndexCheck max_unpool2d_backward_into(const at::Tensor& grad_output, const at::Tensor& indices,
                                      at::Tensor& grad_input) {
  IndexCheck result;
  const int64_t total = grad_input.numel();
  if (total == 0) {
    result.checked = true;
    return result;
  }
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  cuda::UnpoolParams p;
  p.batch = indices.size(0);
  p.channels = indices.size(1);
  p.in_h = indices.size(2);
  p.in_w = indices.size(3);
  p.out_h = grad_output.size(2);
  p.out_w = grad_output.size(3);
  p.input = strides4(grad_input);
  p.indices = strides4(indices);
  p.output = strides4(grad_output);
  p.channels_inner = channels_innermost(grad_input);
  at::Tensor flags = at::zeros({cuda::kNumFlags}, indices.options().dtype(at::kLong));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_output.scalar_type(), "max_unpool2d_backward_cuda",
                                  [&] {
                                    using K = typename KernelType<scalar_t>::type;
                                    cuda::unpool_backward_kernel<K><<<grid_for(total, kThreads), kThreads, 0, stream>>>(
                                        kernel_ptr<scalar_t>(grad_output), indices.const_data_ptr<int64_t>(),
                                        kernel_mutable_ptr<scalar_t>(grad_input), p,
                                        reinterpret_cast<unsigned long long*>(flags.mutable_data_ptr<int64_t>()));
                                    C10_CUDA_KERNEL_LAUNCH_CHECK();
                                  });
  if (stream_is_capturing(stream)) return result;  // invalid indices got zeros; nothing can be read back
  const at::Tensor host = flags.to(at::kCPU);
  const int64_t* f = host.const_data_ptr<int64_t>();
  result.checked = true;
  result.out_of_range = f[cuda::kFlagOutOfRange] != 0;
  result.bad_index = f[cuda::kFlagBadIndexValue];
  return result;
}

at::Tensor max_unpool2d_backward_cuda(const at::Tensor& grad_output, const at::Tensor& indices) {
  check_unpool_grad_output("max_unpool2d_backward", grad_output, indices);
  const c10::cuda::CUDAGuard guard(grad_output.device());
  at::Tensor grad_input =
      at::empty(indices.sizes(), grad_output.options().memory_format(output_memory_format(indices)));
  const IndexCheck check = max_unpool2d_backward_into(grad_output, indices, grad_input);
  SQUEEZEAE_CHECK_INDEX_RANGE(check, grad_output.size(2), grad_output.size(3));
  return grad_input;
}

}  // namespace cuda_impl

TORCH_LIBRARY_IMPL(squeezeae, CUDA, m) {
  m.impl("max_unpool2d", &cuda_impl::max_unpool2d_cuda);
  m.impl("max_unpool2d_backward", &cuda_impl::max_unpool2d_backward_cuda);
}

}  // namespace squeezeae
