// squeezeae::fire and fire_backward on the CPU: the tile engine of fire_tiles.h with a strided row loader
// (any layout and dtype in, converted per tile) and a strided store into the output's channel slices.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <type_traits>

#include "checks.h"
#include "cpu/fire_tiles.h"
#include "shapes.h"

namespace squeezeae {
namespace {

using OptTensor = std::optional<at::Tensor>;

template <typename scalar_t>
using acc_type_for = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

at::Tensor fire_cpu(const at::Tensor& x, const at::Tensor& squeeze_weight, const OptTensor& squeeze_bias,
                    const at::Tensor& expand1x1_weight, const OptTensor& expand1x1_bias,
                    const at::Tensor& expand3x3_weight, const OptTensor& expand3x3_bias) {
  const FireDims d = check_fire("fire", x, squeeze_weight, squeeze_bias, expand1x1_weight, expand1x1_bias,
                                expand3x3_weight, expand3x3_bias);
  at::Tensor output = empty_like_layout(x, {d.batch, d.out_channels(), d.height, d.width});
  if (output.numel() == 0) return output;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "fire_cpu", [&] {
    using acc_t = acc_type_for<scalar_t>;
    const auto weights = cpu::pack_fire_weights<acc_t>(d, squeeze_weight, squeeze_bias, expand1x1_weight,
                                                       expand1x1_bias, expand3x3_weight, expand3x3_bias, false);
    const cpu::TileGrid grid = cpu::make_tile_grid(d.batch, d.height, d.width);
    const cpu::StridedRowLoader<scalar_t, acc_t> load{x.const_data_ptr<scalar_t>(), cpu::Strides4(x), d.in_channels,
                                                      d.width};
    const cpu::ActivationStore<scalar_t, acc_t> store{output.mutable_data_ptr<scalar_t>(), cpu::Strides4(output),
                                                      weights.p(weights.expand_bias), d.out_channels(), d.width};
    cpu::fire_forward(weights, grid, load, store);
  });
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> fire_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& x, const at::Tensor& output, const at::Tensor& squeeze_weight,
    const OptTensor& squeeze_bias, const at::Tensor& expand1x1_weight, const at::Tensor& expand3x3_weight) {
  const FireDims d = check_fire_backward("fire_backward", grad_output, x, output, squeeze_weight, squeeze_bias,
                                         expand1x1_weight, expand3x3_weight);
  at::Tensor grad_x = empty_like_layout(x, x.sizes());
  std::vector<at::Tensor> weight_grads;
  if (d.batch * d.height * d.width == 0) {
    for (const at::Tensor* w : {&squeeze_weight, &expand1x1_weight, &expand3x3_weight}) {
      weight_grads.push_back(at::zeros_like(*w, at::MemoryFormat::Contiguous));
      weight_grads.push_back(at::zeros({w->size(0)}, w->options()));
    }
  } else {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "fire_backward_cpu", [&] {
      using acc_t = acc_type_for<scalar_t>;
      const auto weights = cpu::pack_fire_weights<acc_t>(d, squeeze_weight, squeeze_bias, expand1x1_weight,
                                                         std::nullopt, expand3x3_weight, std::nullopt, true);
      const cpu::TileGrid grid = cpu::make_tile_grid(d.batch, d.height, d.width);
      const cpu::StridedRowLoader<scalar_t, acc_t> load{x.const_data_ptr<scalar_t>(), cpu::Strides4(x),
                                                        d.in_channels, d.width};
      const cpu::MaskedGradLoader<scalar_t, acc_t> load_grad{grad_output.const_data_ptr<scalar_t>(),
                                                             output.const_data_ptr<scalar_t>(),
                                                             cpu::Strides4(grad_output), cpu::Strides4(output),
                                                             d.width};
      const cpu::StridedRowSink<scalar_t, acc_t> sink{grad_x.mutable_data_ptr<scalar_t>(), cpu::Strides4(grad_x),
                                                      d.in_channels, d.width};
      const at::Tensor flat = cpu::fire_backward(weights, grid, load, load_grad, sink);
      weight_grads = cpu::unpack_weight_grads(flat, d, squeeze_weight.scalar_type());
    });
  }
  return {grad_x,          weight_grads[0], weight_grads[1], weight_grads[2],
          weight_grads[3], weight_grads[4], weight_grads[5]};
}

}  // namespace

TORCH_LIBRARY_IMPL(squeezeae, CPU, m) {
  m.impl("fire", &fire_cpu);
  m.impl("fire_backward", &fire_backward_cpu);
}

}  // namespace squeezeae
