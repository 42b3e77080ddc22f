// squeezeae::fire and fire_backward on the CPU: the tile engine of fire_tiles.h, pixel-major tiles for
// channels_last (and other channels-innermost) inputs, planar tiles (fire_tiles_planar.h) for NCHW-like ones
// where they measured faster, and for small forward calls in any layout (see use_planar_forward_tiles and
// use_planar_backward_tiles), so no layout is ever transposed as a whole.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <type_traits>

#include "checks.h"
#include "cpu/fire_bf16.h"
#include "cpu/fire_tiles.h"
#include "cpu/fire_tiles_planar.h"
#include "shapes.h"

namespace squeezeae {
namespace {

using OptTensor = std::optional<at::Tensor>;
using cpu::Strides4;

using cpu::acc_type_for;

// The forward into `output` (x's layout, x's dtype: float32 or float64; weights of any floating dtype).
void fire_into(const at::Tensor& x, const at::Tensor& squeeze_weight, const OptTensor& squeeze_bias,
               const at::Tensor& expand1x1_weight, const OptTensor& expand1x1_bias, const at::Tensor& expand3x3_weight,
               const OptTensor& expand3x3_bias, const FireDims& d, at::Tensor& output) {
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "fire_cpu", [&] {
    using acc_t = acc_type_for<scalar_t>;
    const bool planar = cpu::use_planar_forward_tiles(x, d.batch, d.height * d.width);
    const auto w = cpu::pack_fire_weights<acc_t>(d, squeeze_weight, squeeze_bias, expand1x1_weight, expand1x1_bias,
                                                 expand3x3_weight, expand3x3_bias, planar, /*backward=*/false);
    const cpu::TileGrid grid = cpu::make_tile_grid(d.batch, d.height, d.width, cpu::forward_tile_pixels());
    const scalar_t* in = x.const_data_ptr<scalar_t>();
    scalar_t* out = output.mutable_data_ptr<scalar_t>();
    const acc_t* bias = w.p(w.expand_bias);
    if (planar) {
      const cpu::PlanarRowLoader<scalar_t, acc_t> load{in, Strides4(x), d.in_channels, d.width};
      const cpu::PlanarActivationStore<scalar_t, acc_t> store{out, Strides4(output), bias, d.out_channels(), d.width};
      cpu::fire_forward(w, grid, [&](int64_t n, int64_t r0, int64_t r1, cpu::TileBuffers<acc_t>& buf) {
        cpu::fire_forward_tile_planar(w, grid, n, r0, r1, buf, load, store);
      });
    } else {
      const cpu::StridedRowLoader<scalar_t, acc_t> load{in, Strides4(x), d.in_channels, d.width};
      const cpu::ActivationStore<scalar_t, acc_t> store{out, Strides4(output), bias, d.out_channels(), d.width};
      cpu::fire_forward(w, grid, [&](int64_t n, int64_t r0, int64_t r1, cpu::TileBuffers<acc_t>& buf) {
        cpu::fire_forward_tile(w, grid, n, r0, r1, buf, load, store);
      });
    }
  });
}

at::Tensor fire_cpu(const at::Tensor& x, const at::Tensor& squeeze_weight, const OptTensor& squeeze_bias,
                    const at::Tensor& expand1x1_weight, const OptTensor& expand1x1_bias,
                    const at::Tensor& expand3x3_weight, const OptTensor& expand3x3_bias) {
  const FireDims d = check_fire("fire", x, squeeze_weight, squeeze_bias, expand1x1_weight, expand1x1_bias,
                                expand3x3_weight, expand3x3_bias);
  at::Tensor output = empty_like_layout(x, {d.batch, d.out_channels(), d.height, d.width});
  if (output.numel() == 0) return output;
  if (cpu::use_bf16_forward(x, d)) {
    cpu::fire_forward_bf16_any_layout(d, x, squeeze_weight, squeeze_bias, expand1x1_weight, expand1x1_bias,
                                      expand3x3_weight, expand3x3_bias, output);
    return output;
  }
  if (cpu::computes_in_float(x)) {
    using Slot = cpu::Scratch<float>;
    const at::Tensor x_float = cpu::float_copy(Slot::kCallIn, x);
    at::Tensor out_float = cpu::float_copy(Slot::kCallOut, output, /*copy=*/false);
    fire_into(x_float, squeeze_weight, squeeze_bias, expand1x1_weight, expand1x1_bias, expand3x3_weight,
              expand3x3_bias, d, out_float);
    output.copy_(out_float);
    return output;
  }
  fire_into(x, squeeze_weight, squeeze_bias, expand1x1_weight, expand1x1_bias, expand3x3_weight, expand3x3_bias, d,
            output);
  return output;
}

// The backward: the input gradient into `grad_x` (x's layout and dtype, float32 or float64), the weight
// gradients returned in the weights' dtype.
std::vector<at::Tensor> fire_backward_into(const at::Tensor& grad_output, const at::Tensor& x, const at::Tensor& output,
                                           const at::Tensor& squeeze_weight, const OptTensor& squeeze_bias,
                                           const at::Tensor& expand1x1_weight, const at::Tensor& expand3x3_weight,
                                           const FireDims& d, at::Tensor& grad_x) {
  std::vector<at::Tensor> weight_grads;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "fire_backward_cpu", [&] {
    using acc_t = acc_type_for<scalar_t>;
    const bool planar = cpu::use_planar_backward_tiles(x);
    const auto w = cpu::pack_fire_weights<acc_t>(d, squeeze_weight, squeeze_bias, expand1x1_weight, std::nullopt,
                                                 expand3x3_weight, std::nullopt, planar, /*backward=*/true);
    const cpu::TileGrid grid = cpu::backward_tile_grid(d);
    const scalar_t* in = x.const_data_ptr<scalar_t>();
    const scalar_t* go = grad_output.const_data_ptr<scalar_t>();
    const scalar_t* out = output.const_data_ptr<scalar_t>();
    scalar_t* gx = grad_x.mutable_data_ptr<scalar_t>();
    const Strides4 go_st(grad_output), out_st(output);
    at::Tensor flat;
    if (planar) {
      const cpu::PlanarRowLoader<scalar_t, acc_t> load{in, Strides4(x), d.in_channels, d.width};
      const cpu::PlanarMaskedGradLoader<scalar_t, acc_t> load_grad{go, out, go_st, out_st, d.out_channels(), d.width};
      const cpu::PlanarRowSink<scalar_t, acc_t> sink{gx, Strides4(grad_x), d.in_channels, d.width};
      flat = cpu::fire_backward(w, grid, [&](int64_t n, int64_t r0, int64_t r1, cpu::TileBuffers<acc_t>& buf,
                                             cpu::GradParts<acc_t>& parts) {
        cpu::fire_backward_tile_planar(w, grid, n, r0, r1, buf, parts, load, load_grad, sink);
      });
    } else {
      const cpu::StridedRowLoader<scalar_t, acc_t> load{in, Strides4(x), d.in_channels, d.width};
      const cpu::MaskedGradLoader<scalar_t, acc_t> load_grad{go, out, go_st, out_st, d.width};
      const cpu::StridedRowSink<scalar_t, acc_t> sink{gx, Strides4(grad_x), d.in_channels, d.width};
      flat = cpu::fire_backward(w, grid, [&](int64_t n, int64_t r0, int64_t r1, cpu::TileBuffers<acc_t>& buf,
                                             cpu::GradParts<acc_t>& parts) {
        cpu::fire_backward_tile(w, grid, n, r0, r1, buf, parts, load, load_grad, sink);
      });
    }
    weight_grads = cpu::unpack_weight_grads(flat, d, squeeze_weight.scalar_type(), planar);
  });
  return weight_grads;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> fire_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& x, const at::Tensor& output, const at::Tensor& squeeze_weight,
    const OptTensor& squeeze_bias, const at::Tensor& expand1x1_weight, const at::Tensor& expand3x3_weight) {
  const FireDims d = check_fire_backward("fire_backward", grad_output, x, output, squeeze_weight, squeeze_bias,
                                         expand1x1_weight, expand3x3_weight);
  at::Tensor grad_x = empty_like_layout(x, x.sizes());
  std::vector<at::Tensor> weight_grads;
  if (d.batch * d.height * d.width == 0) {
    weight_grads = cpu::zero_weight_grads(squeeze_weight, expand1x1_weight, expand3x3_weight);
  } else if (cpu::computes_in_float(x)) {
    using Slot = cpu::Scratch<float>;
    const at::Tensor x_float = cpu::float_copy(Slot::kCallIn, x);
    at::Tensor grad_x_float = cpu::float_copy(Slot::kCallGradIn, grad_x, /*copy=*/false);
    weight_grads = fire_backward_into(cpu::float_copy(Slot::kCallGradOut, grad_output), x_float,
                                      cpu::float_copy(Slot::kCallOut, output), squeeze_weight, squeeze_bias,
                                      expand1x1_weight, expand3x3_weight, d, grad_x_float);
    grad_x.copy_(grad_x_float);
  } else {
    weight_grads = fire_backward_into(grad_output, x, output, squeeze_weight, squeeze_bias, expand1x1_weight,
                                      expand3x3_weight, d, grad_x);
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
