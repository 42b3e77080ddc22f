// Argument checks shared by every backend (CPU, CUDA). Each message names the op, the argument, what was
// expected and what came.
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace squeezeae {

struct FireDims {
  int64_t batch = 0;
  int64_t in_channels = 0;
  int64_t height = 0;  // spatial size of the Fire's input (after unpooling, for unpool_fire)
  int64_t width = 0;
  int64_t squeeze = 0;
  int64_t expand1x1 = 0;
  int64_t expand3x3 = 0;
  int64_t out_channels() const { return expand1x1 + expand3x3; }
};

struct UnpoolDims {
  int64_t batch = 0;
  int64_t channels = 0;
  int64_t in_height = 0;
  int64_t in_width = 0;
  int64_t out_height = 0;
  int64_t out_width = 0;
  int64_t out_plane() const { return out_height * out_width; }
};

inline void check_floating(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.defined(), op, ": ", name, " must be a tensor, got None");
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), op, ": ", name,
              " must be a floating-point tensor (float32, float64, float16 or bfloat16), got ", t.scalar_type());
}

// `t` must match `ref` (the op's first tensor argument) in dtype and device.
inline void check_like(const char* op, const char* name, const at::Tensor& t, const char* ref_name,
                       const at::Tensor& ref) {
  TORCH_CHECK(t.defined(), op, ": ", name, " must be a tensor, got None");
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, " must be on the same device as ", ref_name, " (",
              ref.device(), "), got ", t.device());
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), op, ": ", name, " must have the same dtype as ", ref_name,
              " (", ref.scalar_type(), "), got ", t.scalar_type());
}

inline void check_input_4d(const char* op, const char* name, const at::Tensor& x) {
  check_floating(op, name, x);
  TORCH_CHECK(x.dim() == 4, op, ": ", name, " must be 4-D [N, C, H, W] (3-D [C, H, W] goes through the Python API), got ",
              x.dim(), "-D with shape ", x.sizes());
  TORCH_CHECK(x.layout() == at::kStrided, op, ": ", name, " must be a dense (strided) tensor, got ", x.layout());
}

inline void check_weight(const char* op, const char* name, const at::Tensor& w, const char* shape_text,
                         at::IntArrayRef expected, const at::Tensor& x) {
  check_like(op, name, w, "x", x);
  TORCH_CHECK(w.sizes() == expected, op, ": ", name, " must have shape ", shape_text, " = ", expected, ", got ",
              w.sizes());
}

inline void check_bias(const char* op, const char* name, const std::optional<at::Tensor>& b, int64_t channels,
                       const at::Tensor& x) {
  if (!b.has_value() || !b->defined()) return;
  check_like(op, name, *b, "x", x);
  TORCH_CHECK(b->dim() == 1 && b->size(0) == channels, op, ": ", name, " must have shape [", channels, "], got ",
              b->sizes());
}

// The Fire weights against an input with `in_channels` channels. Returns the channel counts.
inline FireDims check_fire_weights(const char* op, const char* input_name, const at::Tensor& x, int64_t in_channels,
                                   const at::Tensor& squeeze_weight, const std::optional<at::Tensor>& squeeze_bias,
                                   const at::Tensor& expand1x1_weight,
                                   const std::optional<at::Tensor>& expand1x1_bias,
                                   const at::Tensor& expand3x3_weight,
                                   const std::optional<at::Tensor>& expand3x3_bias) {
  FireDims d;
  d.in_channels = in_channels;
  TORCH_CHECK(squeeze_weight.defined() && squeeze_weight.dim() == 4, op,
              ": squeeze_weight must be 4-D [S, C_in, 1, 1], got ",
              squeeze_weight.defined() ? squeeze_weight.sizes() : at::IntArrayRef{});
  d.squeeze = squeeze_weight.size(0);
  TORCH_CHECK(squeeze_weight.size(1) == in_channels, op, ": ", input_name, " has ", in_channels,
              " channels but squeeze_weight expects ", squeeze_weight.size(1), " (squeeze_weight shape ",
              squeeze_weight.sizes(), ")");
  TORCH_CHECK(d.squeeze > 0, op, ": squeeze_weight must have at least one output channel, got shape ",
              squeeze_weight.sizes());
  check_weight(op, "squeeze_weight", squeeze_weight, "[S, C_in, 1, 1]", {d.squeeze, in_channels, 1, 1}, x);
  TORCH_CHECK(expand1x1_weight.defined() && expand1x1_weight.dim() == 4, op,
              ": expand1x1_weight must be 4-D [E1, S, 1, 1], got ",
              expand1x1_weight.defined() ? expand1x1_weight.sizes() : at::IntArrayRef{});
  TORCH_CHECK(expand3x3_weight.defined() && expand3x3_weight.dim() == 4, op,
              ": expand3x3_weight must be 4-D [E3, S, 3, 3], got ",
              expand3x3_weight.defined() ? expand3x3_weight.sizes() : at::IntArrayRef{});
  d.expand1x1 = expand1x1_weight.size(0);
  d.expand3x3 = expand3x3_weight.size(0);
  TORCH_CHECK(d.expand1x1 > 0 && d.expand3x3 > 0, op,
              ": expand1x1_weight and expand3x3_weight must each have at least one output channel, got ",
              expand1x1_weight.sizes(), " and ", expand3x3_weight.sizes());
  check_weight(op, "expand1x1_weight", expand1x1_weight, "[E1, S, 1, 1]", {d.expand1x1, d.squeeze, 1, 1}, x);
  check_weight(op, "expand3x3_weight", expand3x3_weight, "[E3, S, 3, 3]", {d.expand3x3, d.squeeze, 3, 3}, x);
  check_bias(op, "squeeze_bias", squeeze_bias, d.squeeze, x);
  check_bias(op, "expand1x1_bias", expand1x1_bias, d.expand1x1, x);
  check_bias(op, "expand3x3_bias", expand3x3_bias, d.expand3x3, x);
  return d;
}

inline FireDims check_fire(const char* op, const at::Tensor& x, const at::Tensor& squeeze_weight,
                           const std::optional<at::Tensor>& squeeze_bias, const at::Tensor& expand1x1_weight,
                           const std::optional<at::Tensor>& expand1x1_bias, const at::Tensor& expand3x3_weight,
                           const std::optional<at::Tensor>& expand3x3_bias) {
  check_input_4d(op, "x", x);
  FireDims d = check_fire_weights(op, "x", x, x.size(1), squeeze_weight, squeeze_bias, expand1x1_weight,
                                  expand1x1_bias, expand3x3_weight, expand3x3_bias);
  d.batch = x.size(0);
  d.height = x.size(2);
  d.width = x.size(3);
  return d;
}

// grad_output and output of a Fire with dims `d`: [N, E1 + E3, H, W], same dtype/device as x.
inline void check_fire_output_like(const char* op, const char* name, const at::Tensor& t, const FireDims& d,
                                   const at::Tensor& x) {
  check_like(op, name, t, "x", x);
  const std::vector<int64_t> expected{d.batch, d.out_channels(), d.height, d.width};
  TORCH_CHECK(t.sizes() == at::IntArrayRef(expected), op, ": ", name, " must have shape ",
              at::IntArrayRef(expected), ", got ", t.sizes());
}

inline FireDims check_fire_backward(const char* op, const at::Tensor& grad_output, const at::Tensor& x,
                                    const at::Tensor& output, const at::Tensor& squeeze_weight,
                                    const std::optional<at::Tensor>& squeeze_bias,
                                    const at::Tensor& expand1x1_weight, const at::Tensor& expand3x3_weight) {
  FireDims d = check_fire(op, x, squeeze_weight, squeeze_bias, expand1x1_weight, std::nullopt, expand3x3_weight,
                          std::nullopt);
  check_fire_output_like(op, "grad_output", grad_output, d, x);
  check_fire_output_like(op, "output", output, d, x);
  return d;
}

// A backward op's indices: an int64 tensor on the device of `ref` (named `ref_name`).
inline void check_index_tensor(const char* op, const at::Tensor& indices, const char* ref_name,
                               const at::Tensor& ref) {
  TORCH_CHECK(indices.defined() && indices.scalar_type() == at::kLong, op, ": indices must be an int64 tensor, got ",
              indices.defined() ? c10::toString(indices.scalar_type()) : "None");
  TORCH_CHECK(indices.device() == ref.device(), op, ": indices must be on the same device as ", ref_name, " (",
              ref.device(), "), got ", indices.device());
}

inline void check_pair(const char* op, const char* name, at::IntArrayRef v, int64_t min_value) {
  TORCH_CHECK(v.size() == 2, op, ": ", name, " must have 2 elements, got ", v.size());
  TORCH_CHECK(v[0] >= min_value && v[1] >= min_value, op, ": ", name, " must be >= ", min_value, ", got ", v);
}

// input/indices [N, C, H_in, W_in]; output_size [H_out, W_out]. Index values are checked by the kernels
// (reading them here would cost a pass and, on CUDA, a host sync).
inline UnpoolDims check_max_unpool(const char* op, const at::Tensor& input, const at::Tensor& indices,
                                   at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                                   at::IntArrayRef output_size) {
  check_input_4d(op, "input", input);
  TORCH_CHECK(indices.defined(), op, ": indices must be a tensor, got None");
  TORCH_CHECK(indices.scalar_type() == at::kLong, op, ": indices must be an int64 tensor, got ",
              indices.scalar_type());
  TORCH_CHECK(indices.device() == input.device(), op, ": indices must be on the same device as input (",
              input.device(), "), got ", indices.device());
  TORCH_CHECK(indices.sizes() == input.sizes(), op, ": indices must have the same shape as input (",
              input.sizes(), "), got ", indices.sizes());
  check_pair(op, "kernel_size", kernel_size, 1);
  check_pair(op, "stride", stride, 1);
  check_pair(op, "padding", padding, 0);
  check_pair(op, "output_size", output_size, 1);
  UnpoolDims d;
  d.batch = input.size(0);
  d.channels = input.size(1);
  d.in_height = input.size(2);
  d.in_width = input.size(3);
  d.out_height = output_size[0];
  d.out_width = output_size[1];
  return d;
}

inline void check_unpool_grad_output(const char* op, const at::Tensor& grad_output, const at::Tensor& indices) {
  check_input_4d(op, "grad_output", grad_output);
  check_index_tensor(op, indices, "grad_output", grad_output);
  TORCH_CHECK(indices.dim() == 4 && indices.size(0) == grad_output.size(0) &&
                  indices.size(1) == grad_output.size(1),
              op, ": indices must be [N, C, H_in, W_in] with N, C of grad_output ", grad_output.sizes(), ", got ",
              indices.sizes());
}

inline FireDims check_unpool_fire(const char* op, const at::Tensor& input, const at::Tensor& indices,
                                  const at::Tensor& squeeze_weight, const std::optional<at::Tensor>& squeeze_bias,
                                  const at::Tensor& expand1x1_weight,
                                  const std::optional<at::Tensor>& expand1x1_bias,
                                  const at::Tensor& expand3x3_weight,
                                  const std::optional<at::Tensor>& expand3x3_bias, at::IntArrayRef kernel_size,
                                  at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef output_size,
                                  UnpoolDims* unpool_dims) {
  *unpool_dims = check_max_unpool(op, input, indices, kernel_size, stride, padding, output_size);
  FireDims d = check_fire_weights(op, "input", input, input.size(1), squeeze_weight, squeeze_bias,
                                  expand1x1_weight, expand1x1_bias, expand3x3_weight, expand3x3_bias);
  d.batch = unpool_dims->batch;
  d.height = unpool_dims->out_height;
  d.width = unpool_dims->out_width;
  return d;
}

// unpool_fire_backward: the unpooled size is grad_output's; output and grad_output are [N, E1 + E3, H, W].
inline FireDims check_unpool_fire_backward(const char* op, const at::Tensor& grad_output, const at::Tensor& input,
                                           const at::Tensor& indices, const at::Tensor& output,
                                           const at::Tensor& squeeze_weight,
                                           const std::optional<at::Tensor>& squeeze_bias,
                                           const at::Tensor& expand1x1_weight, const at::Tensor& expand3x3_weight,
                                           at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                           at::IntArrayRef padding, UnpoolDims* unpool_dims) {
  check_input_4d(op, "grad_output", grad_output);
  const std::vector<int64_t> output_size{grad_output.size(2), grad_output.size(3)};
  FireDims d = check_unpool_fire(op, input, indices, squeeze_weight, squeeze_bias, expand1x1_weight, std::nullopt,
                                 expand3x3_weight, std::nullopt, kernel_size, stride, padding, output_size,
                                 unpool_dims);
  check_fire_output_like(op, "grad_output", grad_output, d, input);
  check_fire_output_like(op, "output", output, d, input);
  return d;
}

struct PoolDims {
  int64_t batch = 0, channels = 0, height = 0, width = 0;
  int64_t out_height = 0, out_width = 0;
  int64_t kernel_h = 1, kernel_w = 1, stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dilation_h = 1,
          dilation_w = 1;
};

// nn.MaxPool2d's output size along one dimension (ATen's rule): with ceil_mode the last window must still start
// inside the input or its left padding.
inline int64_t pool_output_size(int64_t size, int64_t kernel, int64_t pad, int64_t stride, int64_t dilation,
                                bool ceil_mode) {
  const int64_t span = size + 2 * pad - dilation * (kernel - 1) - 1 + (ceil_mode ? stride - 1 : 0);
  int64_t out = (span >= 0 ? span / stride : -((-span + stride - 1) / stride)) + 1;  // floor division
  if (ceil_mode && (out - 1) * stride >= size + pad) --out;
  return out;
}

// max_pool2d's arguments: input [N, C, H, W] with C, H, W > 0, then F.max_pool2d's rules on the window (on the
// CPU, ATen bounds the padding by half the kernel, not half the dilated kernel).
inline PoolDims check_max_pool(const char* op, const at::Tensor& input, at::IntArrayRef kernel_size,
                               at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                               bool ceil_mode) {
  check_input_4d(op, "input", input);
  TORCH_CHECK(input.size(1) > 0 && input.size(2) > 0 && input.size(3) > 0, op,
              ": input must have non-zero channels, height and width (only the batch may be empty), got shape ",
              input.sizes());
  check_pair(op, "kernel_size", kernel_size, 1);
  check_pair(op, "stride", stride, 1);
  check_pair(op, "padding", padding, 0);
  check_pair(op, "dilation", dilation, 1);
  for (int d = 0; d < 2; ++d) {
    TORCH_CHECK(padding[d] <= kernel_size[d] / 2, op, ": padding must be at most half of kernel_size (",
                kernel_size, "), got ", padding);
  }
  PoolDims d;
  d.batch = input.size(0);
  d.channels = input.size(1);
  d.height = input.size(2);
  d.width = input.size(3);
  d.kernel_h = kernel_size[0], d.kernel_w = kernel_size[1];
  d.stride_h = stride[0], d.stride_w = stride[1];
  d.pad_h = padding[0], d.pad_w = padding[1];
  d.dilation_h = dilation[0], d.dilation_w = dilation[1];
  d.out_height = pool_output_size(d.height, d.kernel_h, d.pad_h, d.stride_h, d.dilation_h, ceil_mode);
  d.out_width = pool_output_size(d.width, d.kernel_w, d.pad_w, d.stride_w, d.dilation_w, ceil_mode);
  TORCH_CHECK(d.out_height >= 1 && d.out_width >= 1, op, ": input of spatial size [", d.height, ", ", d.width,
              "] is too small for kernel_size ", kernel_size, ", stride ", stride, ", padding ", padding,
              ", dilation ", dilation, " and ceil_mode=", ceil_mode ? "True" : "False", ": the output would be [",
              d.out_height, ", ",
              d.out_width, "]");
  return d;
}

// max_pool2d_backward: grad_output and indices [N, C, H_out, W_out] of a pooling of `input`.
inline void check_max_pool_backward(const char* op, const at::Tensor& grad_output, const at::Tensor& input,
                                    const at::Tensor& indices) {
  check_input_4d(op, "input", input);
  check_input_4d(op, "grad_output", grad_output);
  check_like(op, "grad_output", grad_output, "input", input);
  check_index_tensor(op, indices, "input", input);
  TORCH_CHECK(indices.sizes() == grad_output.sizes(), op, ": indices must have grad_output's shape (",
              grad_output.sizes(), "), got ", indices.sizes());
  TORCH_CHECK(grad_output.size(0) == input.size(0) && grad_output.size(1) == input.size(1), op,
              ": grad_output must have input's batch and channels (", input.sizes(), "), got ", grad_output.sizes());
}

// Messages for index values, worded like ATen's max_unpool2d.
[[noreturn]] inline void throw_invalid_index(int64_t index, int64_t out_height, int64_t out_width) {
  TORCH_CHECK(false, "Found an invalid max index: ", index, " (output volumes are of size ", out_height, "x",
              out_width, ")");
}

}  // namespace squeezeae
