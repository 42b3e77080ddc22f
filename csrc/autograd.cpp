// Autograd for the forward ops, registered in C++ for the Autograd key so that a call costs a C++
// dispatch (~3 us) rather than a trip through a Python autograd kernel (~11 us more per call, measured on
// the CPU here; that was a quarter of a small max_unpool2d). Each forward redispatches below autograd and
// saves what its backward op needs; the backward ops (fire_backward, max_unpool2d_backward,
// unpool_fire_backward, max_pool2d_backward) are the only place the gradients are computed. Gradients are first
// order only: the backward ops have no derivatives of their own.
#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>

namespace squeezeae {
namespace {

using OptTensor = std::optional<at::Tensor>;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

template <typename Signature>
c10::TypedOperatorHandle<Signature> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

using FireSig = at::Tensor(const at::Tensor&, const at::Tensor&, const OptTensor&, const at::Tensor&,
                           const OptTensor&, const at::Tensor&, const OptTensor&);
using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using FireBackwardSig = Grads(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                              const OptTensor&, const at::Tensor&, const at::Tensor&);
using UnpoolSig = at::Tensor(const at::Tensor&, const at::Tensor&, at::IntArrayRef, at::IntArrayRef,
                             at::IntArrayRef, c10::SymIntArrayRef);
using UnpoolBackwardSig = at::Tensor(const at::Tensor&, const at::Tensor&);
using UnpoolFireSig = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const OptTensor&,
                                 const at::Tensor&, const OptTensor&, const at::Tensor&, const OptTensor&,
                                 at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, c10::SymIntArrayRef);
using UnpoolFireBackwardSig = Grads(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                    const at::Tensor&, const OptTensor&, const at::Tensor&, const at::Tensor&,
                                    at::IntArrayRef, at::IntArrayRef, at::IntArrayRef);

using PoolSig = at::Tensor(const at::Tensor&, at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, at::IntArrayRef,
                            bool);
using PoolIndicesSig = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, at::IntArrayRef, at::IntArrayRef,
                                                          at::IntArrayRef, at::IntArrayRef, bool);
using PoolBackwardSig = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&);

// Saved tensors cannot be optional: an absent squeeze bias is saved as an undefined tensor.
at::Tensor or_undefined(const OptTensor& t) { return t.has_value() ? *t : at::Tensor(); }
OptTensor as_optional(const at::Tensor& t) { return t.defined() ? OptTensor(t) : OptTensor(); }

void save_bias_presence(AutogradContext* ctx, const OptTensor& sb, const OptTensor& e1b, const OptTensor& e3b) {
  ctx->saved_data["has_bias"] = std::vector<bool>{sb.has_value(), e1b.has_value(), e3b.has_value()};
}

// The seven gradients of a backward op, in forward-argument order, with those of absent biases dropped.
variable_list weight_grads(AutogradContext* ctx, const Grads& grads) {
  const auto has = ctx->saved_data["has_bias"].toBoolList();
  auto keep = [&](const at::Tensor& g, size_t i) { return has.get(i) ? g : at::Tensor(); };
  return {std::get<0>(grads),          std::get<1>(grads), keep(std::get<2>(grads), 0), std::get<3>(grads),
          keep(std::get<4>(grads), 1), std::get<5>(grads), keep(std::get<6>(grads), 2)};
}

struct FireFunction : public torch::autograd::Function<FireFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& sw, const OptTensor& sb,
                            const at::Tensor& e1w, const OptTensor& e1b, const at::Tensor& e3w,
                            const OptTensor& e3b) {
    at::Tensor out;
    {
      at::AutoDispatchBelowADInplaceOrView below;
      static auto op = find_op<FireSig>("squeezeae::fire");
      out = op.call(x, sw, sb, e1w, e1b, e3w, e3b);
    }
    save_bias_presence(ctx, sb, e1b, e3b);
    ctx->save_for_backward({x, out, sw, or_undefined(sb), e1w, e3w});
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    static auto op = find_op<FireBackwardSig>("squeezeae::fire_backward");
    const auto grads =
        op.call(grad_outputs[0], saved[0], saved[1], saved[2], as_optional(saved[3]), saved[4], saved[5]);
    return weight_grads(ctx, grads);
  }
};

struct MaxUnpoolFunction : public torch::autograd::Function<MaxUnpoolFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& indices,
                            at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                            c10::SymIntArrayRef output_size) {
    at::Tensor out;
    {
      at::AutoDispatchBelowADInplaceOrView below;
      static auto op = find_op<UnpoolSig>("squeezeae::max_unpool2d");
      out = op.call(input, indices, kernel_size, stride, padding, output_size);
    }
    ctx->save_for_backward({indices});
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    static auto op = find_op<UnpoolBackwardSig>("squeezeae::max_unpool2d_backward");
    const auto grad_input = op.call(grad_outputs[0], ctx->get_saved_variables()[0]);
    return {grad_input, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// max_pool2d's values and indices; the indices are not differentiable.
struct MaxPoolFunction : public torch::autograd::Function<MaxPoolFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input, at::IntArrayRef kernel_size,
                               at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                               bool ceil_mode) {
    at::Tensor out, indices;
    {
      at::AutoDispatchBelowADInplaceOrView below;
      static auto op = find_op<PoolIndicesSig>("squeezeae::max_pool2d_with_indices");
      std::tie(out, indices) = op.call(input, kernel_size, stride, padding, dilation, ceil_mode);
    }
    ctx->mark_non_differentiable({indices});
    ctx->save_for_backward({input, indices});
    return {out, indices};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    static auto op = find_op<PoolBackwardSig>("squeezeae::max_pool2d_backward");
    const auto grad_input = op.call(grad_outputs[0], saved[0], saved[1]);
    return {grad_input, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

struct UnpoolFireFunction : public torch::autograd::Function<UnpoolFireFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& indices,
                            const at::Tensor& sw, const OptTensor& sb, const at::Tensor& e1w, const OptTensor& e1b,
                            const at::Tensor& e3w, const OptTensor& e3b, at::IntArrayRef kernel_size,
                            at::IntArrayRef stride, at::IntArrayRef padding, c10::SymIntArrayRef output_size) {
    at::Tensor out;
    {
      at::AutoDispatchBelowADInplaceOrView below;
      static auto op = find_op<UnpoolFireSig>("squeezeae::unpool_fire");
      out = op.call(input, indices, sw, sb, e1w, e1b, e3w, e3b, kernel_size, stride, padding, output_size);
    }
    save_bias_presence(ctx, sb, e1b, e3b);
    ctx->saved_data["kernel_size"] = kernel_size.vec();
    ctx->saved_data["stride"] = stride.vec();
    ctx->saved_data["padding"] = padding.vec();
    ctx->save_for_backward({input, indices, out, sw, or_undefined(sb), e1w, e3w});
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto s = ctx->get_saved_variables();
    static auto op = find_op<UnpoolFireBackwardSig>("squeezeae::unpool_fire_backward");
    const auto kernel = ctx->saved_data["kernel_size"].toIntVector();
    const auto stride = ctx->saved_data["stride"].toIntVector();
    const auto padding = ctx->saved_data["padding"].toIntVector();
    const auto grads = op.call(grad_outputs[0], s[0], s[1], s[2], s[3], as_optional(s[4]), s[5], s[6], kernel,
                               stride, padding);
    auto g = weight_grads(ctx, grads);  // grad_input, sw, sb, e1w, e1b, e3w, e3b
    return {g[0],        at::Tensor(), g[1],         g[2],         g[3],         g[4],
            g[5],        g[6],         at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor fire_autograd(const at::Tensor& x, const at::Tensor& sw, const OptTensor& sb, const at::Tensor& e1w,
                         const OptTensor& e1b, const at::Tensor& e3w, const OptTensor& e3b) {
  return FireFunction::apply(x, sw, sb, e1w, e1b, e3w, e3b);
}

at::Tensor max_unpool2d_autograd(const at::Tensor& input, const at::Tensor& indices, at::IntArrayRef kernel_size,
                                 at::IntArrayRef stride, at::IntArrayRef padding, c10::SymIntArrayRef output_size) {
  return MaxUnpoolFunction::apply(input, indices, kernel_size, stride, padding, output_size);
}

at::Tensor unpool_fire_autograd(const at::Tensor& input, const at::Tensor& indices, const at::Tensor& sw,
                                const OptTensor& sb, const at::Tensor& e1w, const OptTensor& e1b,
                                const at::Tensor& e3w, const OptTensor& e3b, at::IntArrayRef kernel_size,
                                at::IntArrayRef stride, at::IntArrayRef padding, c10::SymIntArrayRef output_size) {
  return UnpoolFireFunction::apply(input, indices, sw, sb, e1w, e1b, e3w, e3b, kernel_size, stride, padding,
                                   output_size);
}

// Without a gradient to record, the values alone (no indices written); with one, the indices are kept for the
// backward.
at::Tensor max_pool2d_autograd(const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                               at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode) {
  if (at::GradMode::is_enabled() && input.requires_grad())
    return MaxPoolFunction::apply(input, kernel_size, stride, padding, dilation, ceil_mode)[0];
  at::AutoDispatchBelowADInplaceOrView below;
  static auto op = find_op<PoolSig>("squeezeae::max_pool2d");
  return op.call(input, kernel_size, stride, padding, dilation, ceil_mode);
}

std::tuple<at::Tensor, at::Tensor> max_pool2d_with_indices_autograd(const at::Tensor& input,
                                                                    at::IntArrayRef kernel_size,
                                                                    at::IntArrayRef stride, at::IntArrayRef padding,
                                                                    at::IntArrayRef dilation, bool ceil_mode) {
  auto outs = MaxPoolFunction::apply(input, kernel_size, stride, padding, dilation, ceil_mode);
  return {outs[0], outs[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(squeezeae, Autograd, m) {
  m.impl("max_pool2d", &max_pool2d_autograd);
  m.impl("max_pool2d_with_indices", &max_pool2d_with_indices_autograd);
  m.impl("fire", &fire_autograd);
  m.impl("max_unpool2d", &max_unpool2d_autograd);
  m.impl("unpool_fire", &unpool_fire_autograd);
}

}  // namespace squeezeae
