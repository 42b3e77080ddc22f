// Autocast like conv2d's: under torch.autocast the Fire ops run in the autocast dtype (float64 inputs and
// tensors on other devices are left alone, as at::autocast::cached_cast does for conv2d). max_unpool2d only
// moves values, so it runs in its input's dtype and needs no autocast kernel.
#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <torch/library.h>

#include <optional>

namespace squeezeae {
namespace {

using OptTensor = std::optional<at::Tensor>;

template <c10::DeviceType device>
at::Tensor fire_autocast(const at::Tensor& x, const at::Tensor& squeeze_weight, const OptTensor& squeeze_bias,
                         const at::Tensor& expand1x1_weight, const OptTensor& expand1x1_bias,
                         const at::Tensor& expand3x3_weight, const OptTensor& expand3x3_bias) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  const auto dtype = at::autocast::get_autocast_dtype(device);
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("squeezeae::fire", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const OptTensor&, const at::Tensor&,
                                         const OptTensor&, const at::Tensor&, const OptTensor&)>();
  using at::autocast::cached_cast;
  return op.call(cached_cast(dtype, x, device), cached_cast(dtype, squeeze_weight, device),
                 cached_cast(dtype, squeeze_bias, device), cached_cast(dtype, expand1x1_weight, device),
                 cached_cast(dtype, expand1x1_bias, device), cached_cast(dtype, expand3x3_weight, device),
                 cached_cast(dtype, expand3x3_bias, device));
}

template <c10::DeviceType device>
at::Tensor unpool_fire_autocast(const at::Tensor& input, const at::Tensor& indices, const at::Tensor& squeeze_weight,
                                const OptTensor& squeeze_bias, const at::Tensor& expand1x1_weight,
                                const OptTensor& expand1x1_bias, const at::Tensor& expand3x3_weight,
                                const OptTensor& expand3x3_bias, at::IntArrayRef kernel_size,
                                at::IntArrayRef stride, at::IntArrayRef padding, c10::SymIntArrayRef output_size) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  const auto dtype = at::autocast::get_autocast_dtype(device);
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("squeezeae::unpool_fire", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const OptTensor&,
                            const at::Tensor&, const OptTensor&, const at::Tensor&, const OptTensor&,
                            at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, c10::SymIntArrayRef)>();
  using at::autocast::cached_cast;
  return op.call(cached_cast(dtype, input, device), indices, cached_cast(dtype, squeeze_weight, device),
                 cached_cast(dtype, squeeze_bias, device), cached_cast(dtype, expand1x1_weight, device),
                 cached_cast(dtype, expand1x1_bias, device), cached_cast(dtype, expand3x3_weight, device),
                 cached_cast(dtype, expand3x3_bias, device), kernel_size, stride, padding, output_size);
}

}  // namespace

TORCH_LIBRARY_IMPL(squeezeae, AutocastCPU, m) {
  m.impl("fire", &fire_autocast<c10::DeviceType::CPU>);
  m.impl("unpool_fire", &unpool_fire_autocast<c10::DeviceType::CPU>);
}

TORCH_LIBRARY_IMPL(squeezeae, AutocastCUDA, m) {
  m.impl("fire", &fire_autocast<c10::DeviceType::CUDA>);
  m.impl("unpool_fire", &unpool_fire_autocast<c10::DeviceType::CUDA>);
}

}  // namespace squeezeae
