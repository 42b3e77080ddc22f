// Fire on CUDA: the fused forward kernel and the fused backward data pass (kernels in kernels/fire.cuh).
// Weight gradients are GEMMs on tensors (cuBLAS through ATen), in float (double for double inputs).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <limits>

#include "checks.h"
#include "kernels/fire.cuh"
#include "launchers.h"
#include "shapes.h"

namespace squeezeae {
namespace cuda_impl {
namespace {

namespace fk = cuda::fire;

constexpr size_t kDefaultSmemLimit = 48 * 1024;

template <typename Kernel>
void allow_dynamic_smem(Kernel kernel, size_t bytes) {
  if (bytes > kDefaultSmemLimit)
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
}

struct TileGrid {
  int64_t tiles_h, tiles_w;
  unsigned int blocks;
};

TileGrid tile_grid(const char* op, int64_t batch, int64_t height, int64_t width) {
  TileGrid g;
  g.tiles_h = cuda::ceil_div(height, fk::kTileH);
  g.tiles_w = cuda::ceil_div(width, fk::kTileW);
  const int64_t blocks = batch * g.tiles_h * g.tiles_w;
  TORCH_CHECK(blocks <= std::numeric_limits<int32_t>::max(), op, ": input too large for the CUDA kernel (",
              blocks, " tiles)");
  g.blocks = static_cast<unsigned int>(blocks);
  return g;
}

}  // namespace

void launch_fire_forward(const at::Tensor& x, const at::Tensor* indices, const cuda::UnpoolParams* unpool,
                         const FireDims& d, const at::Tensor& squeeze_weight,
                         const std::optional<at::Tensor>& squeeze_bias, const at::Tensor& expand1x1_weight,
                         const std::optional<at::Tensor>& expand1x1_bias, const at::Tensor& expand3x3_weight,
                         const std::optional<at::Tensor>& expand3x3_bias, at::Tensor& output) {
  if (output.numel() == 0) return;
  const char* op = indices != nullptr ? "unpool_fire" : "fire";
  const TileGrid grid = tile_grid(op, d.batch, d.height, d.width);
  const int64_t chunks = cuda::ceil_div(d.expand1x1, fk::kOutChunk) + cuda::ceil_div(d.expand3x3, fk::kOutChunk);
  // Splitting the output channels over blocks recomputes the squeeze in each: only worth it when the tiles
  // alone do not fill the GPU. With S > kSqueezeChunk the squeeze is recomputed per chunk anyway.
  int64_t groups = chunks;
  if (d.squeeze <= fk::kSqueezeChunk) {
    const int64_t target_blocks = 4 * static_cast<int64_t>(multiprocessor_count(x.get_device()));
    groups = std::min<int64_t>(chunks, std::max<int64_t>(1, cuda::ceil_div(target_blocks, grid.blocks)));
  }
  const int64_t chunks_per_group = cuda::ceil_div(chunks, groups);
  groups = cuda::ceil_div(chunks, chunks_per_group);
  TORCH_CHECK(groups <= 65535, op, ": too many output channels for the CUDA kernel (", d.out_channels(), ")");
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "fire_forward_cuda", [&] {
    using K = typename KernelType<scalar_t>::type;
    using A = typename cuda::AccType<K>::type;
    fk::FireForwardArgs<K> a;
    a.x = kernel_ptr<scalar_t>(x);
    if (indices != nullptr) {
      a.indices = indices->const_data_ptr<int64_t>();
      a.unpool = *unpool;
    }
    a.squeeze_weight = kernel_ptr<scalar_t>(squeeze_weight);
    a.squeeze_bias = kernel_ptr_or_null<scalar_t>(squeeze_bias);
    a.expand1x1_weight = kernel_ptr<scalar_t>(expand1x1_weight);
    a.expand1x1_bias = kernel_ptr_or_null<scalar_t>(expand1x1_bias);
    a.expand3x3_weight = kernel_ptr<scalar_t>(expand3x3_weight);
    a.expand3x3_bias = kernel_ptr_or_null<scalar_t>(expand3x3_bias);
    a.out = kernel_mutable_ptr<scalar_t>(output);
    a.batch = d.batch;
    a.in_channels = d.in_channels;
    a.height = d.height;
    a.width = d.width;
    a.squeeze = d.squeeze;
    a.expand1x1 = d.expand1x1;
    a.expand3x3 = d.expand3x3;
    a.x_strides = strides4(x);
    a.out_strides = strides4(output);
    a.wsq_strides = strides4(squeeze_weight);
    a.w1_strides = strides4(expand1x1_weight);
    a.w3_strides = strides4(expand3x3_weight);
    a.tiles_h = grid.tiles_h;
    a.tiles_w = grid.tiles_w;
    a.chunks_per_group = static_cast<int>(chunks_per_group);
    a.x_channels_inner = channels_innermost(indices != nullptr ? *indices : x);
    const size_t smem = fk::forward_smem_bytes<A>();
    allow_dynamic_smem(fk::fire_forward_kernel<K>, smem);
    fk::fire_forward_kernel<K><<<dim3(grid.blocks, static_cast<unsigned int>(groups)), fk::kThreads, smem, stream>>>(a);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

namespace {

at::Tensor fire_cuda(const at::Tensor& x, const at::Tensor& squeeze_weight,
                     const std::optional<at::Tensor>& squeeze_bias, const at::Tensor& expand1x1_weight,
                     const std::optional<at::Tensor>& expand1x1_bias, const at::Tensor& expand3x3_weight,
                     const std::optional<at::Tensor>& expand3x3_bias) {
  const FireDims d = check_fire("fire", x, squeeze_weight, squeeze_bias, expand1x1_weight, expand1x1_bias,
                                expand3x3_weight, expand3x3_bias);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor output = empty_like_layout(x, {d.batch, d.out_channels(), d.height, d.width});
  launch_fire_forward(x, nullptr, nullptr, d, squeeze_weight, squeeze_bias, expand1x1_weight, expand1x1_bias,
                      expand3x3_weight, expand3x3_bias, output);
  return output;
}

// [N, C, H, W] -> [C, N * H * W] (a view for channels_last, a copy otherwise).
at::Tensor channel_rows(const at::Tensor& t) { return t.transpose(0, 1).reshape({t.size(1), -1}); }

}  // namespace

FireGrads fire_backward_checked(const at::Tensor& grad_output, const at::Tensor& x, const at::Tensor& output,
                                const FireDims& d, const at::Tensor& squeeze_weight,
                                const std::optional<at::Tensor>& squeeze_bias, const at::Tensor& expand1x1_weight,
                                const at::Tensor& expand3x3_weight) {
  const at::ScalarType dtype = x.scalar_type();
  const at::ScalarType acc_dtype = dtype == at::kDouble ? at::kDouble : at::kFloat;
  const at::MemoryFormat format = output_memory_format(x);
  const at::TensorOptions acc_options = x.options().dtype(acc_dtype);
  at::Tensor squeeze_act = at::empty({d.batch, d.squeeze, d.height, d.width}, acc_options.memory_format(format));
  at::Tensor squeeze_grad = at::empty({d.batch, d.squeeze, d.height, d.width}, acc_options.memory_format(format));
  at::Tensor grad_x = empty_like_layout(x, x.sizes());

  if (squeeze_act.numel() > 0) {
    const TileGrid grid = tile_grid("fire_backward", d.batch, d.height, d.width);
    const int64_t squeeze_chunks = cuda::ceil_div(d.squeeze, fk::kSqueezeChunk);
    TORCH_CHECK(squeeze_chunks <= 65535, "fire_backward: too many squeeze channels for the CUDA kernel (", d.squeeze,
                ")");
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "fire_backward_cuda", [&] {
      using K = typename KernelType<scalar_t>::type;
      using A = typename cuda::AccType<K>::type;
      fk::FireBackwardDataArgs<K> a;
      a.grad_output = kernel_ptr<scalar_t>(grad_output);
      a.output = kernel_ptr<scalar_t>(output);
      a.x = kernel_ptr<scalar_t>(x);
      a.squeeze_weight = kernel_ptr<scalar_t>(squeeze_weight);
      a.squeeze_bias = kernel_ptr_or_null<scalar_t>(squeeze_bias);
      a.expand1x1_weight = kernel_ptr<scalar_t>(expand1x1_weight);
      a.expand3x3_weight = kernel_ptr<scalar_t>(expand3x3_weight);
      a.s_out = squeeze_act.mutable_data_ptr<A>();
      a.ds_out = squeeze_grad.mutable_data_ptr<A>();
      a.batch = d.batch;
      a.in_channels = d.in_channels;
      a.height = d.height;
      a.width = d.width;
      a.squeeze = d.squeeze;
      a.expand1x1 = d.expand1x1;
      a.expand3x3 = d.expand3x3;
      a.go_strides = strides4(grad_output);
      a.out_strides = strides4(output);
      a.x_strides = strides4(x);
      a.wsq_strides = strides4(squeeze_weight);
      a.w1_strides = strides4(expand1x1_weight);
      a.w3_strides = strides4(expand3x3_weight);
      a.s_strides = strides4(squeeze_act);
      a.ds_strides = strides4(squeeze_grad);
      a.tiles_h = grid.tiles_h;
      a.tiles_w = grid.tiles_w;
      a.go_channels_inner = channels_innermost(grad_output);
      a.x_channels_inner = channels_innermost(x);
      const size_t smem = fk::backward_data_smem_bytes<A>();
      allow_dynamic_smem(fk::fire_backward_data_kernel<K>, smem);
      fk::fire_backward_data_kernel<K>
          <<<dim3(grid.blocks, static_cast<unsigned int>(squeeze_chunks)), fk::kThreads, smem, stream>>>(a);
      C10_CUDA_KERNEL_LAUNCH_CHECK();

      if (grad_x.numel() > 0) {
        fk::SqueezeInputGradArgs<K> g;
        g.ds = squeeze_grad.const_data_ptr<A>();
        g.squeeze_weight = kernel_ptr<scalar_t>(squeeze_weight);
        g.grad_x = kernel_mutable_ptr<scalar_t>(grad_x);
        g.batch = d.batch;
        g.in_channels = d.in_channels;
        g.height = d.height;
        g.width = d.width;
        g.squeeze = d.squeeze;
        g.ds_strides = strides4(squeeze_grad);
        g.wsq_strides = strides4(squeeze_weight);
        g.gx_strides = strides4(grad_x);
        g.tiles_h = grid.tiles_h;
        g.tiles_w = grid.tiles_w;
        g.ds_channels_inner = channels_innermost(squeeze_grad);
        const size_t gsmem = fk::squeeze_input_grad_smem_bytes<A>();
        allow_dynamic_smem(fk::squeeze_input_grad_kernel<K>, gsmem);
        fk::squeeze_input_grad_kernel<K><<<grid.blocks, fk::kThreads, gsmem, stream>>>(g);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
    });
  } else if (grad_x.numel() > 0) {
    grad_x.zero_();  // S > 0 always; reached only if N * H * W == 0, so grad_x is empty too
  }

  // Weight gradients: GEMMs over the N * H * W pixels, in the accumulation type.
  const at::Tensor expand_grad = grad_output.mul(output.gt(0)).to(acc_dtype);  // ReLU masks of the expands
  const at::Tensor grad1 = expand_grad.narrow(1, 0, d.expand1x1);
  const at::Tensor grad3 = expand_grad.narrow(1, d.expand1x1, d.expand3x3);
  const at::Tensor grad1_rows = channel_rows(grad1), grad3_rows = channel_rows(grad3);
  const at::Tensor squeeze_rows = channel_rows(squeeze_act);

  at::Tensor grad_squeeze_weight =
      at::mm(channel_rows(squeeze_grad), channel_rows(x.to(acc_dtype)).t()).reshape({d.squeeze, d.in_channels, 1, 1});
  at::Tensor grad_squeeze_bias = squeeze_grad.sum({0, 2, 3});
  at::Tensor grad_expand1x1_weight = at::mm(grad1_rows, squeeze_rows.t()).reshape({d.expand1x1, d.squeeze, 1, 1});
  at::Tensor grad_expand1x1_bias = grad1.sum({0, 2, 3});
  at::Tensor grad_expand3x3_weight = at::empty({d.expand3x3, d.squeeze, 3, 3}, acc_options);
  const at::Tensor squeeze_padded = at::constant_pad_nd(squeeze_act, {1, 1, 1, 1}, 0);
  for (int64_t ky = 0; ky < 3; ++ky) {
    for (int64_t kx = 0; kx < 3; ++kx) {
      // shifted[n, s, h, w] = s[n, s, h + ky - 1, w + kx - 1] (zero outside the image)
      const at::Tensor shifted = squeeze_padded.narrow(2, ky, d.height).narrow(3, kx, d.width);
      grad_expand3x3_weight.select(3, kx).select(2, ky).copy_(at::mm(grad3_rows, channel_rows(shifted).t()));
    }
  }
  at::Tensor grad_expand3x3_bias = grad3.sum({0, 2, 3});

  return {grad_x,
          grad_squeeze_weight.to(dtype),
          grad_squeeze_bias.to(dtype),
          grad_expand1x1_weight.to(dtype),
          grad_expand1x1_bias.to(dtype),
          grad_expand3x3_weight.to(dtype),
          grad_expand3x3_bias.to(dtype)};
}

namespace {

FireGrads fire_backward_cuda(const at::Tensor& grad_output, const at::Tensor& x, const at::Tensor& output,
                             const at::Tensor& squeeze_weight, const std::optional<at::Tensor>& squeeze_bias,
                             const at::Tensor& expand1x1_weight, const at::Tensor& expand3x3_weight) {
  const FireDims d = check_fire_backward("fire_backward", grad_output, x, output, squeeze_weight, squeeze_bias,
                                         expand1x1_weight, expand3x3_weight);
  const c10::cuda::CUDAGuard guard(x.device());
  return fire_backward_checked(grad_output, x, output, d, squeeze_weight, squeeze_bias, expand1x1_weight,
                               expand3x3_weight);
}

}  // namespace
}  // namespace cuda_impl

TORCH_LIBRARY_IMPL(squeezeae, CUDA, m) {
  m.impl("fire", &cuda_impl::fire_cuda);
  m.impl("fire_backward", &cuda_impl::fire_backward_cuda);
}

}  // namespace squeezeae
