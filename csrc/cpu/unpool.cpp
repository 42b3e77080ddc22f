// max_unpool2d on the CPU: zero-fill then scatter, one (n, c) plane's elements always in row-major (h, w)
// order so that, with duplicate indices, the latest element wins whatever the thread count. The backward is
// the matching gather. Both walk sizes and strides, so any layout works; the loop order follows the memory
// format (planes outermost for NCHW, channels innermost for channels_last).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>

#include "checks.h"
#include "cpu/strides.h"
#include "shapes.h"

namespace squeezeae {
namespace {

using cpu::Strides4;

// Visits every (n, c, h, w) of a [N, C, H, W] iteration space in parallel chunks, keeping each (n, c) plane's
// pixels in row-major order within one thread. fn(n, c0, c1, h, w) handles channels [c0, c1) of one pixel.
template <typename Fn>
void for_each_plane_ordered(int64_t N, int64_t C, int64_t H, int64_t W, bool channels_inner, const Fn& fn) {
  if (!channels_inner) {
    at::parallel_for(0, N * C, 1, [&](int64_t begin, int64_t end) {
      for (int64_t plane = begin; plane < end; ++plane) {
        const int64_t n = plane / C, c = plane % C;
        for (int64_t h = 0; h < H; ++h)
          for (int64_t w = 0; w < W; ++w) fn(n, c, c + 1, h, w);
      }
    });
    return;
  }
  // Blocks of up to 64 channels, smaller when that would leave threads idle (batch 1): any block size keeps
  // each plane's order, since a channel is never split.
  const int64_t wanted = std::max<int64_t>(1, (4 * at::get_num_threads() + N - 1) / N);
  const int64_t kChannelBlock = std::clamp<int64_t>((C + wanted - 1) / wanted, 8, 64);
  const int64_t blocks = (C + kChannelBlock - 1) / kChannelBlock;
  at::parallel_for(0, N * blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / blocks, c0 = (item % blocks) * kChannelBlock;
      const int64_t c1 = std::min(C, c0 + kChannelBlock);
      for (int64_t h = 0; h < H; ++h)
        for (int64_t w = 0; w < W; ++w) fn(n, c0, c1, h, w);
    }
  });
}

// The stride between consecutive flat (h * W + w) positions of a plane of `t`, when one exists (rows packed
// back to back: every contiguous or channels_last tensor), else -1. Lets a flat index address the plane
// without a division.
int64_t flat_position_stride(const at::Tensor& t) {
  if (t.size(2) == 1 || t.stride(2) == t.size(3) * t.stride(3)) return t.stride(3);
  return -1;
}

at::Tensor max_unpool2d_cpu(const at::Tensor& input, const at::Tensor& indices, at::IntArrayRef kernel_size,
                            at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef output_size) {
  const UnpoolDims d = check_max_unpool("max_unpool2d", input, indices, kernel_size, stride, padding, output_size);
  at::Tensor output = zeros_like_layout(input, {d.batch, d.channels, d.out_height, d.out_width});
  if (input.numel() == 0) return output;
  const bool channels_inner = output_memory_format(input) == at::MemoryFormat::ChannelsLast;
  const Strides4 in_s(input), idx_s(indices), out_s(output);
  const int64_t plane = d.out_plane(), out_w = d.out_width;
  const int64_t position = flat_position_stride(output);  // the output is fresh: always packed
  const int64_t* idx_ptr = indices.const_data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "max_unpool2d_cpu", [&] {
    const scalar_t* in_ptr = input.const_data_ptr<scalar_t>();
    scalar_t* out_ptr = output.mutable_data_ptr<scalar_t>();
    for_each_plane_ordered(d.batch, d.channels, d.in_height, d.in_width, channels_inner,
                           [&](int64_t n, int64_t c0, int64_t c1, int64_t h, int64_t w) {
                             const int64_t* idx = idx_ptr + idx_s.at(n, 0, h, w);
                             const scalar_t* in = in_ptr + in_s.at(n, 0, h, w);
                             scalar_t* out = out_ptr + n * out_s.n;
                             for (int64_t c = c0; c < c1; ++c) {
                               const int64_t index = idx[c * idx_s.c];
                               if (index < 0 || index >= plane) throw_invalid_index(index, d.out_height, out_w);
                               out[c * out_s.c + index * position] = in[c * in_s.c];
                             }
                           });
  });
  return output;
}

at::Tensor max_unpool2d_backward_cpu(const at::Tensor& grad_output, const at::Tensor& indices) {
  check_unpool_grad_output("max_unpool2d_backward", grad_output, indices);
  const int64_t N = indices.size(0), C = indices.size(1), H = indices.size(2), W = indices.size(3);
  at::Tensor grad_input =
      at::empty(indices.sizes(), grad_output.options().memory_format(output_memory_format(indices)));
  if (grad_input.numel() == 0) return grad_input;
  const int64_t out_h = grad_output.size(2), out_w = grad_output.size(3), plane = out_h * out_w;
  const bool channels_inner = output_memory_format(indices) == at::MemoryFormat::ChannelsLast;
  const Strides4 go_s(grad_output), idx_s(indices), gi_s(grad_input);
  const int64_t* idx_ptr = indices.const_data_ptr<int64_t>();
  const int64_t position = flat_position_stride(grad_output);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_output.scalar_type(), "max_unpool2d_backward_cpu", [&] {
    const scalar_t* go_ptr = grad_output.const_data_ptr<scalar_t>();
    scalar_t* gi_ptr = grad_input.mutable_data_ptr<scalar_t>();
    for_each_plane_ordered(N, C, H, W, channels_inner, [&](int64_t n, int64_t c0, int64_t c1, int64_t h, int64_t w) {
      const int64_t* idx = idx_ptr + idx_s.at(n, 0, h, w);
      scalar_t* gi = gi_ptr + gi_s.at(n, 0, h, w);
      const scalar_t* go = go_ptr + n * go_s.n;
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t index = idx[c * idx_s.c];
        if (index < 0 || index >= plane) throw_invalid_index(index, out_h, out_w);
        const int64_t offset = position >= 0 ? index * position : (index / out_w) * go_s.h + (index % out_w) * go_s.w;
        gi[c * gi_s.c] = go[c * go_s.c + offset];
      }
    });
  });
  return grad_input;
}

}  // namespace

TORCH_LIBRARY_IMPL(squeezeae, CPU, m) {
  m.impl("max_unpool2d", &max_unpool2d_cpu);
  m.impl("max_unpool2d_backward", &max_unpool2d_backward_cpu);
}

}  // namespace squeezeae
