// squeezeae::unpool_fire and unpool_fire_backward on the CPU: the Fire tile engine (fire_tiles.h,
// fire_tiles_planar.h) whose row loader *is* the unpooling: a tile's input rows are zero-filled and the pooled
// elements pointing into them are scattered in, so the unpooled tensor exists only one tile at a time, in
// cache. The input gradient is the matching gather: each pooled element reads the unpooled-input gradient at
// its index, from the one tile whose own rows hold that index.
//
// The bfloat16 forward (where the Fire's bfloat16 tiles run, fire_bf16.h) is not fused: max_unpool2d's kernel
// writes the unpooled tensor, which those tiles then read. On the float32 copies it ran 0.43-0.64x eager at batch
// 8 on a Xeon (eager's convolutions use AMX); the bfloat16 tiles with a fused loader, whose scatter of 16-bit
// values runs one element at a time, took 1.1-1.8x as long as max_unpool2d (SIMD ranges) plus those tiles
// (batch 8, channels_last: fire5 1.24 against 0.95 ms, fire3 3.25 against 1.81 ms, fire9 0.77 against 0.70 ms).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "checks.h"
#include "cpu/fire_bf16.h"
#include "cpu/fire_tiles.h"
#include "cpu/fire_tiles_planar.h"
#include "cpu/unpool.h"
#include "cpu/unpool_index.h"
#include "shapes.h"

namespace squeezeae {
namespace {

using OptTensor = std::optional<at::Tensor>;
using cpu::acc_type_for;
using cpu::PoolGeometry;
using cpu::Strides4;

// Where unpooled pixel (row, col) of channel c sits in a tile buffer of `pixels` pixels: [pixels, C]
// (pixel-major) or [C, pixels] (planar).
template <bool kPlanar>
inline int64_t tile_offset(int64_t c, int64_t pixel, int64_t C, int64_t pixels) {
  return kPlanar ? c * pixels + pixel : pixel * C + c;
}

// Visits the pooled elements of image n whose index falls in output rows [r0, r1), in row-major order per
// plane (so with duplicate indices the latest one is visited last): fn(c, ph, pw, pixel in the band).
template <typename Fn>
inline void for_each_pooled_in_rows(const PoolGeometry& pool, const int64_t* indices, const Strides4& idx_st,
                                    int64_t n, int64_t C, int64_t r0, int64_t r1, const Fn& fn) {
  const auto rows = pool.pooled_rows_for(r0, r1);
  const int64_t lo = r0 * pool.out_w, hi = r1 * pool.out_w;  // the band's indices: no division needed
  const bool channels_inner = idx_st.c <= idx_st.w;
  for (int64_t ph = rows.first; ph < rows.second; ++ph) {
    if (channels_inner) {
      for (int64_t pw = 0; pw < pool.pooled_w; ++pw) {
        const int64_t* ip = indices + idx_st.at(n, 0, ph, pw);
        for (int64_t c = 0; c < C; ++c) {
          const int64_t index = ip[c * idx_st.c];
          if (index >= lo && index < hi) fn(c, ph, pw, index - lo);
        }
      }
    } else {  // planes outermost: each plane's elements still in row-major order
      for (int64_t c = 0; c < C; ++c) {
        const int64_t* ip = indices + idx_st.at(n, c, ph, 0);
        for (int64_t pw = 0; pw < pool.pooled_w; ++pw) {
          const int64_t index = ip[pw * idx_st.w];
          if (index >= lo && index < hi) fn(c, ph, pw, index - lo);
        }
      }
    }
  }
}

// The float32 loader and sink walk runs that are contiguous in the indices and in the pooled tensor: a pooled
// pixel's channels (channels_last) or a pooled row of one plane (NCHW), and hand each to fn(tile + base,
// pos_stride, lane_stride, indices of the run, offset of the run in the pooled tensor, count, lo, hi), where
// unpooled flat index q in [lo, hi) of run element i lives at tile[base + (q - lo) * pos_stride + i *
// lane_stride]. Runs go in each plane's row-major order. Returns false (and calls nothing) for other layouts.
template <typename Tile, typename Fn>
inline bool simd_unpool_rows(const PoolGeometry& pool, const int64_t* indices, const Strides4& idx_st,
                             const Strides4& pooled_st, int64_t n, int64_t C, int64_t r0, int64_t r1, int64_t pixels,
                             bool planar, const Fn& fn, Tile* tile) {
  const auto rows = pool.pooled_rows_for(r0, r1);
  const int64_t lo = r0 * pool.out_w, hi = r1 * pool.out_w;
  if (idx_st.c == 1 && pooled_st.c == 1) {  // channels_last
    const int64_t pos_stride = planar ? 1 : C, lane_stride = planar ? pixels : 1;
    for (int64_t ph = rows.first; ph < rows.second; ++ph)
      for (int64_t pw = 0; pw < pool.pooled_w; ++pw)
        fn(tile, pos_stride, lane_stride, indices + idx_st.at(n, 0, ph, pw), pooled_st.at(n, 0, ph, pw), C, lo, hi);
    return true;
  }
  if (idx_st.w == 1 && pooled_st.w == 1) {  // NCHW rows
    for (int64_t c = 0; c < C; ++c)
      for (int64_t ph = rows.first; ph < rows.second; ++ph)
        fn(tile + (planar ? c * pixels : c), planar ? 1 : C, 0, indices + idx_st.at(n, c, ph, 0),
           pooled_st.at(n, c, ph, 0), pool.pooled_w, lo, hi);
    return true;
  }
  return false;
}

template <typename scalar_t, typename acc_t, bool kPlanar>
struct UnpoolRowLoader {
  const scalar_t* input;
  const int64_t* indices;
  Strides4 in_st, idx_st;
  int64_t C;
  PoolGeometry pool;
  const acc_t* fill(int64_t n, int64_t g0, int64_t g1, acc_t* dst) const {
    const int64_t pixels = (g1 - g0) * pool.out_w;
    std::fill(dst, dst + pixels * C, acc_t(0));
    if constexpr (std::is_same_v<scalar_t, float> && std::is_same_v<acc_t, float>) {
      if (simd_unpool_rows(pool, indices, idx_st, in_st, n, C, g0, g1, pixels, kPlanar,
          [&](float* tile, int64_t pos_stride, int64_t lane_stride, const int64_t* idx, int64_t offset, int64_t count,
              int64_t lo, int64_t hi) {
            // indices were checked against the plane up front (scan_pool_indices)
            cpu::scatter_in_range(tile, pos_stride, lane_stride, idx, input + offset, count, lo, hi,
                                  pool.out_h * pool.out_w);
          }, dst))
        return dst;
    }
    for_each_pooled_in_rows(pool, indices, idx_st, n, C, g0, g1, [&](int64_t c, int64_t ph, int64_t pw, int64_t p) {
      dst[tile_offset<kPlanar>(c, p, C, pixels)] = static_cast<acc_t>(input[in_st.at(n, c, ph, pw)]);
    });
    return dst;
  }
  const acc_t* operator()(int64_t n, int64_t g0, int64_t g1, acc_t* dst) const { return fill(n, g0, g1, dst); }
  const acc_t* planar_rows(int64_t, int64_t, int64_t*) const { return nullptr; }  // the rows exist only unpooled
  const acc_t* operator()(int64_t n, int64_t g0, int64_t g1, acc_t* dst, int64_t* ld) const {
    *ld = (g1 - g0) * pool.out_w;
    return fill(n, g0, g1, dst);
  }
};

template <typename scalar_t, typename acc_t, bool kPlanar>
struct UnpoolGradSink {
  scalar_t* grad_input;
  const int64_t* indices;
  Strides4 gi_st, idx_st;
  int64_t C;
  PoolGeometry pool;
  acc_t* direct(int64_t, int64_t, int64_t*) const { return nullptr; }  // the gradient is gathered, never direct
  acc_t* planar_direct(int64_t, int64_t, int64_t*) const { return nullptr; }
  void gather(int64_t n, int64_t r0, int64_t r1, const acc_t* grad_unpooled) const {
    const int64_t pixels = (r1 - r0) * pool.out_w;
    if constexpr (std::is_same_v<scalar_t, float> && std::is_same_v<acc_t, float>) {
      if (simd_unpool_rows(pool, indices, idx_st, gi_st, n, C, r0, r1, pixels, kPlanar,
          [&](const float* src, int64_t pos_stride, int64_t lane_stride, const int64_t* idx, int64_t offset,
              int64_t count, int64_t lo, int64_t hi) {
            cpu::gather_in_range(grad_input + offset, idx, src, count, pos_stride, lane_stride, lo, hi);
          }, grad_unpooled))
        return;
    }
    for_each_pooled_in_rows(pool, indices, idx_st, n, C, r0, r1, [&](int64_t c, int64_t ph, int64_t pw, int64_t p) {
      grad_input[gi_st.at(n, c, ph, pw)] = static_cast<scalar_t>(grad_unpooled[tile_offset<kPlanar>(c, p, C, pixels)]);
    });
  }
  void operator()(int64_t n, int64_t r0, int64_t r1, const acc_t* g) const { gather(n, r0, r1, g); }
  void operator()(int64_t n, int64_t r0, int64_t r1, const acc_t* g, int64_t /*ld = pixels*/) const {
    gather(n, r0, r1, g);
  }
};

// The forward into `output` (input's layout and dtype: float32 or float64; weights of any floating dtype).
void unpool_fire_into(const at::Tensor& input, const at::Tensor& indices, const at::Tensor& squeeze_weight,
                      const OptTensor& squeeze_bias, const at::Tensor& expand1x1_weight,
                      const OptTensor& expand1x1_bias, const at::Tensor& expand3x3_weight,
                      const OptTensor& expand3x3_bias, const FireDims& d, const PoolGeometry& pool,
                      at::Tensor& output) {
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "unpool_fire_cpu", [&] {
    using acc_t = acc_type_for<scalar_t>;
    const bool planar = cpu::use_planar_forward_tiles(input, d.batch, d.height * d.width);
    const auto w = cpu::pack_fire_weights<acc_t>(d, squeeze_weight, squeeze_bias, expand1x1_weight, expand1x1_bias,
                                                 expand3x3_weight, expand3x3_bias, planar, /*backward=*/false);
    const cpu::TileGrid grid = cpu::make_tile_grid(d.batch, d.height, d.width, cpu::forward_tile_pixels());
    const scalar_t* in = input.const_data_ptr<scalar_t>();
    const int64_t* idx = indices.const_data_ptr<int64_t>();
    scalar_t* out = output.mutable_data_ptr<scalar_t>();
    const acc_t* bias = w.p(w.expand_bias);
    if (planar) {
      const UnpoolRowLoader<scalar_t, acc_t, true> load{in, idx, Strides4(input), Strides4(indices), d.in_channels,
                                                        pool};
      const cpu::PlanarActivationStore<scalar_t, acc_t> store{out, Strides4(output), bias, d.out_channels(), d.width};
      cpu::fire_forward(w, grid, [&](int64_t n, int64_t r0, int64_t r1, cpu::TileBuffers<acc_t>& buf) {
        cpu::fire_forward_tile_planar(w, grid, n, r0, r1, buf, load, store);
      });
    } else {
      const UnpoolRowLoader<scalar_t, acc_t, false> load{in, idx, Strides4(input), Strides4(indices), d.in_channels,
                                                         pool};
      const cpu::ActivationStore<scalar_t, acc_t> store{out, Strides4(output), bias, d.out_channels(), d.width};
      cpu::fire_forward(w, grid, [&](int64_t n, int64_t r0, int64_t r1, cpu::TileBuffers<acc_t>& buf) {
        cpu::fire_forward_tile(w, grid, n, r0, r1, buf, load, store);
      });
    }
  });
}

at::Tensor unpool_fire_cpu(const at::Tensor& input, const at::Tensor& indices, const at::Tensor& squeeze_weight,
                           const OptTensor& squeeze_bias, const at::Tensor& expand1x1_weight,
                           const OptTensor& expand1x1_bias, const at::Tensor& expand3x3_weight,
                           const OptTensor& expand3x3_bias, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                           at::IntArrayRef padding, at::IntArrayRef output_size) {
  UnpoolDims u;
  const FireDims d =
      check_unpool_fire("unpool_fire", input, indices, squeeze_weight, squeeze_bias, expand1x1_weight,
                        expand1x1_bias, expand3x3_weight, expand3x3_bias, kernel_size, stride, padding, output_size, &u);
  at::Tensor output = empty_like_layout(input, {d.batch, d.out_channels(), d.height, d.width});
  if (output.numel() == 0) return output;
  const PoolGeometry pool = cpu::scan_pool_indices(indices, kernel_size, stride, padding, d.height, d.width);
  if (cpu::use_bf16_forward(input, d)) {
    // bfloat16: max_unpool2d's kernel, then the bfloat16 Fire tiles on its output (see the comment at the top)
    const at::Tensor unpooled = cpu::max_unpool2d(input, indices, kernel_size, stride, padding, output_size);
    cpu::fire_forward_bf16_any_layout(d, unpooled, squeeze_weight, squeeze_bias, expand1x1_weight, expand1x1_bias,
                                      expand3x3_weight, expand3x3_bias, output);
    return output;
  }
  if (cpu::computes_in_float(input)) {
    using Slot = cpu::Scratch<float>;
    const at::Tensor input_float = cpu::float_copy(Slot::kCallIn, input);
    at::Tensor out_float = cpu::float_copy(Slot::kCallOut, output, /*copy=*/false);
    unpool_fire_into(input_float, indices, squeeze_weight, squeeze_bias, expand1x1_weight, expand1x1_bias,
                     expand3x3_weight, expand3x3_bias, d, pool, out_float);
    output.copy_(out_float);
    return output;
  }
  unpool_fire_into(input, indices, squeeze_weight, squeeze_bias, expand1x1_weight, expand1x1_bias, expand3x3_weight,
                   expand3x3_bias, d, pool, output);
  return output;
}

// The backward: the input gradient into `grad_input` (zeroed, input's layout and dtype: float32 or float64),
// the weight gradients returned in the weights' dtype.
std::vector<at::Tensor> unpool_fire_backward_into(const at::Tensor& grad_output, const at::Tensor& input,
                                                  const at::Tensor& indices, const at::Tensor& output,
                                                  const at::Tensor& squeeze_weight, const OptTensor& squeeze_bias,
                                                  const at::Tensor& expand1x1_weight,
                                                  const at::Tensor& expand3x3_weight, const FireDims& d,
                                                  const PoolGeometry& pool, at::Tensor& grad_input) {
  std::vector<at::Tensor> weight_grads;
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "unpool_fire_backward_cpu", [&] {
    using acc_t = acc_type_for<scalar_t>;
    const bool planar = cpu::use_planar_backward_tiles(input);
    const auto w = cpu::pack_fire_weights<acc_t>(d, squeeze_weight, squeeze_bias, expand1x1_weight, std::nullopt,
                                                 expand3x3_weight, std::nullopt, planar, /*backward=*/true);
    const cpu::TileGrid grid = cpu::backward_tile_grid(d);
    const scalar_t* in = input.const_data_ptr<scalar_t>();
    const int64_t* idx = indices.const_data_ptr<int64_t>();
    const scalar_t* go = grad_output.const_data_ptr<scalar_t>();
    const scalar_t* out = output.const_data_ptr<scalar_t>();
    scalar_t* gi = grad_input.mutable_data_ptr<scalar_t>();
    const Strides4 in_st(input), idx_st(indices), go_st(grad_output), out_st(output), gi_st(grad_input);
    at::Tensor flat;
    if (planar) {
      const UnpoolRowLoader<scalar_t, acc_t, true> load{in, idx, in_st, idx_st, d.in_channels, pool};
      const cpu::PlanarMaskedGradLoader<scalar_t, acc_t> load_grad{go, out, go_st, out_st, d.out_channels(), d.width};
      const UnpoolGradSink<scalar_t, acc_t, true> sink{gi, idx, gi_st, idx_st, d.in_channels, pool};
      flat = cpu::fire_backward(w, grid, [&](int64_t n, int64_t r0, int64_t r1, cpu::TileBuffers<acc_t>& buf,
                                             cpu::GradParts<acc_t>& parts) {
        cpu::fire_backward_tile_planar(w, grid, n, r0, r1, buf, parts, load, load_grad, sink);
      });
    } else {
      const UnpoolRowLoader<scalar_t, acc_t, false> load{in, idx, in_st, idx_st, d.in_channels, pool};
      const cpu::MaskedGradLoader<scalar_t, acc_t> load_grad{go, out, go_st, out_st, d.width};
      const UnpoolGradSink<scalar_t, acc_t, false> sink{gi, idx, gi_st, idx_st, d.in_channels, pool};
      flat = cpu::fire_backward(w, grid, [&](int64_t n, int64_t r0, int64_t r1, cpu::TileBuffers<acc_t>& buf,
                                             cpu::GradParts<acc_t>& parts) {
        cpu::fire_backward_tile(w, grid, n, r0, r1, buf, parts, load, load_grad, sink);
      });
    }
    weight_grads = cpu::unpack_weight_grads(flat, d, squeeze_weight.scalar_type(), planar);
  });
  return weight_grads;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
unpool_fire_backward_cpu(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& indices,
                         const at::Tensor& output, const at::Tensor& squeeze_weight, const OptTensor& squeeze_bias,
                         const at::Tensor& expand1x1_weight, const at::Tensor& expand3x3_weight,
                         at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding) {
  UnpoolDims u;
  const FireDims d = check_unpool_fire_backward("unpool_fire_backward", grad_output, input, indices, output,
                                                squeeze_weight, squeeze_bias, expand1x1_weight, expand3x3_weight,
                                                kernel_size, stride, padding, &u);
  at::Tensor grad_input = zeros_like_layout(input, input.sizes());
  std::vector<at::Tensor> weight_grads;
  if (d.batch * d.height * d.width == 0) {
    weight_grads = cpu::zero_weight_grads(squeeze_weight, expand1x1_weight, expand3x3_weight);
  } else {
    const PoolGeometry pool = cpu::scan_pool_indices(indices, kernel_size, stride, padding, d.height, d.width);
    if (cpu::computes_in_float(input)) {
      using Slot = cpu::Scratch<float>;
      const at::Tensor input_float = cpu::float_copy(Slot::kCallIn, input);
      at::Tensor grad_input_float = cpu::float_copy(Slot::kCallGradIn, grad_input, /*copy=*/false).zero_();
      weight_grads = unpool_fire_backward_into(cpu::float_copy(Slot::kCallGradOut, grad_output), input_float,
                                               indices, cpu::float_copy(Slot::kCallOut, output), squeeze_weight,
                                               squeeze_bias, expand1x1_weight, expand3x3_weight, d, pool,
                                               grad_input_float);
      grad_input.copy_(grad_input_float);
    } else {
      weight_grads = unpool_fire_backward_into(grad_output, input, indices, output, squeeze_weight, squeeze_bias,
                                               expand1x1_weight, expand3x3_weight, d, pool, grad_input);
    }
  }
  return {grad_input,      weight_grads[0], weight_grads[1], weight_grads[2],
          weight_grads[3], weight_grads[4], weight_grads[5]};
}

}  // namespace

TORCH_LIBRARY_IMPL(squeezeae, CPU, m) {
  m.impl("unpool_fire", &unpool_fire_cpu);
  m.impl("unpool_fire_backward", &unpool_fire_backward_cpu);
}

}  // namespace squeezeae
