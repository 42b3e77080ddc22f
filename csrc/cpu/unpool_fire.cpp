// squeezeae::unpool_fire and unpool_fire_backward on the CPU: the Fire tile engine (fire_tiles.h) whose row
// loader *is* the unpooling: a tile's input rows are zero-filled and the pooled elements pointing into them
// are scattered in, so the unpooled tensor exists only one tile at a time, in cache. The input gradient is
// the matching gather: each pooled element reads the unpooled-input gradient at its index, from the one tile
// whose rows hold that index.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <type_traits>

#include "checks.h"
#include "cpu/fire_tiles.h"
#include "cpu/unpool_index.h"
#include "shapes.h"

namespace squeezeae {
namespace {

using OptTensor = std::optional<at::Tensor>;
using cpu::PoolGeometry;
using cpu::Strides4;

template <typename scalar_t>
using acc_type_for = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

// Unpooled rows [g0, g1) into dst[(g - g0) * W + w][c]. Pooled elements are visited in row-major order per
// plane, so with duplicate indices the latest one wins, as in max_unpool2d.
template <typename scalar_t, typename acc_t>
struct UnpoolRowLoader {
  const scalar_t* input;
  const int64_t* indices;
  Strides4 in_st, idx_st;
  int64_t C;
  PoolGeometry pool;
  const acc_t* operator()(int64_t n, int64_t g0, int64_t g1, acc_t* dst) const {
    const int64_t W = pool.out_w;
    std::fill(dst, dst + (g1 - g0) * W * C, acc_t(0));
    const auto rows = pool.pooled_rows_for(g0, g1);
    for (int64_t ph = rows.first; ph < rows.second; ++ph)
      for (int64_t pw = 0; pw < pool.pooled_w; ++pw)
        for (int64_t c = 0; c < C; ++c) {
          const int64_t index = indices[idx_st.at(n, c, ph, pw)];
          const int64_t row = index / W;
          if (row >= g0 && row < g1)
            dst[((row - g0) * W + index % W) * C + c] = static_cast<acc_t>(input[in_st.at(n, c, ph, pw)]);
        }
    return dst;
  }
};

// grad_input[n, c, ph, pw] = grad_unpooled[n, c, index] for the indices in rows [r0, r1).
template <typename scalar_t, typename acc_t>
struct UnpoolGradSink {
  scalar_t* grad_input;
  const int64_t* indices;
  Strides4 gi_st, idx_st;
  int64_t C;
  PoolGeometry pool;
  void operator()(int64_t n, int64_t r0, int64_t r1, const acc_t* grad_unpooled) const {
    const int64_t W = pool.out_w;
    const auto rows = pool.pooled_rows_for(r0, r1);
    for (int64_t ph = rows.first; ph < rows.second; ++ph)
      for (int64_t pw = 0; pw < pool.pooled_w; ++pw)
        for (int64_t c = 0; c < C; ++c) {
          const int64_t index = indices[idx_st.at(n, c, ph, pw)];
          const int64_t row = index / W;
          if (row >= r0 && row < r1)
            grad_input[gi_st.at(n, c, ph, pw)] =
                static_cast<scalar_t>(grad_unpooled[((row - r0) * W + index % W) * C + c]);
        }
  }
};

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
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "unpool_fire_cpu", [&] {
    using acc_t = acc_type_for<scalar_t>;
    const auto weights = cpu::pack_fire_weights<acc_t>(d, squeeze_weight, squeeze_bias, expand1x1_weight,
                                                       expand1x1_bias, expand3x3_weight, expand3x3_bias, false);
    const cpu::TileGrid grid = cpu::make_tile_grid(d.batch, d.height, d.width);
    const UnpoolRowLoader<scalar_t, acc_t> load{input.const_data_ptr<scalar_t>(), indices.const_data_ptr<int64_t>(),
                                                Strides4(input), Strides4(indices), d.in_channels, pool};
    const cpu::ActivationStore<scalar_t, acc_t> store{output.mutable_data_ptr<scalar_t>(), Strides4(output),
                                                      weights.p(weights.expand_bias), d.out_channels(), d.width};
    cpu::fire_forward(weights, grid, load, store);
  });
  return output;
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
    for (const at::Tensor* w : {&squeeze_weight, &expand1x1_weight, &expand3x3_weight}) {
      weight_grads.push_back(at::zeros_like(*w, at::MemoryFormat::Contiguous));
      weight_grads.push_back(at::zeros({w->size(0)}, w->options()));
    }
  } else {
    const PoolGeometry pool = cpu::scan_pool_indices(indices, kernel_size, stride, padding, d.height, d.width);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "unpool_fire_backward_cpu", [&] {
      using acc_t = acc_type_for<scalar_t>;
      const auto weights = cpu::pack_fire_weights<acc_t>(d, squeeze_weight, squeeze_bias, expand1x1_weight,
                                                         std::nullopt, expand3x3_weight, std::nullopt, true);
      const cpu::TileGrid grid = cpu::make_tile_grid(d.batch, d.height, d.width);
      const UnpoolRowLoader<scalar_t, acc_t> load{input.const_data_ptr<scalar_t>(),
                                                  indices.const_data_ptr<int64_t>(), Strides4(input),
                                                  Strides4(indices), d.in_channels, pool};
      const cpu::MaskedGradLoader<scalar_t, acc_t> load_grad{grad_output.const_data_ptr<scalar_t>(),
                                                             output.const_data_ptr<scalar_t>(), Strides4(grad_output),
                                                             Strides4(output), d.width};
      const UnpoolGradSink<scalar_t, acc_t> sink{grad_input.mutable_data_ptr<scalar_t>(),
                                                 indices.const_data_ptr<int64_t>(), Strides4(grad_input),
                                                 Strides4(indices), d.in_channels, pool};
      const at::Tensor flat = cpu::fire_backward(weights, grid, load, load_grad, sink);
      weight_grads = cpu::unpack_weight_grads(flat, d, squeeze_weight.scalar_type());
    });
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
