// The bfloat16 Fire forward on CPUs whose oneDNN micro-kernel multiplies bfloat16 natively (AMX, AVX512-BF16):
// the pixel-major tiles of fire_tiles.h with bfloat16 GEMM operands and float32 accumulators. The squeeze
// activation is rounded to bfloat16 after its bias and ReLU, as eager PyTorch's bfloat16 Fire stores it; the
// output once, from the float32 sums. On a Xeon with AMX, eager bfloat16 convolutions ran 2.5-3x faster than
// the float32 kernels on float32 copies (computes_in_float) at 13x13 and 27x27, which is why this path exists.
// Used with an even number of input and squeeze channels (the micro-kernel's operands pair up along K), on
// channels_last inputs in place and on other layouts through channels_last copies (NCHW on the Xeon, fire3/5/8
// shapes at batch 1 and 8: 1.15-1.9x eager bfloat16, against 0.67-1.7x through the float32 copies); odd
// channel counts run through the float32 copies.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/native/CPUBlas.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "checks.h"
#include "cpu/epilogues.h"
#include "cpu/fire_tiles.h"
#include "cpu/gemm.h"
#include "cpu/strides.h"

namespace squeezeae {
namespace cpu {

using bf16 = c10::BFloat16;

// A bfloat16 B operand [K, N] (row-major) packed for the micro-kernel, in blocks of up to 64 columns, each
// K x 64 elements (its packed rows are the block's width rounded up to 16).
struct PackedB {
  at::Tensor data;
  int64_t K = 0, N = 0;
  static constexpr int64_t kBlock = 64;
  int64_t blocks() const { return (N + kBlock - 1) / kBlock; }
  int64_t width(int64_t j) const { return std::min(kBlock, N - j * kBlock); }
  static int64_t pitch(int64_t width) { return (width + 15) / 16 * 16; }
  const bf16* block(int64_t j) const { return data.const_data_ptr<bf16>() + j * K * kBlock; }
};

// Packs bs[i] ([K, N], contiguous bfloat16) into the i-th result, the blocks of all of them shared out over the
// threads (serial packing left the second thread idle for ~10% of a batch-8 13x13 Fire).
inline std::vector<PackedB> pack_b(const std::vector<at::Tensor>& bs) {
  std::vector<PackedB> packed(bs.size());
  std::vector<std::pair<int64_t, int64_t>> jobs;  // (matrix, block)
  for (size_t i = 0; i < bs.size(); ++i) {
    PackedB& p = packed[i];
    p.K = bs[i].size(0);
    p.N = bs[i].size(1);
    p.data = at::empty({p.blocks() * p.K * PackedB::kBlock}, bs[i].options());
    for (int64_t j = 0; j < p.blocks(); ++j) jobs.emplace_back(static_cast<int64_t>(i), j);
  }
  at::parallel_for(0, static_cast<int64_t>(jobs.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t job = begin; job < end; ++job) {
      const auto [i, j] = jobs[job];
      PackedB& p = packed[i];
      at::native::cpublas::pack(p.K, p.width(j), p.N, PackedB::pitch(p.width(j)), at::kBFloat16, at::kBFloat16,
                                bs[i].const_data_ptr<bf16>() + j * PackedB::kBlock,
                                p.data.mutable_data_ptr<bf16>() + j * p.K * PackedB::kBlock);
    }
  });
  return packed;
}

// C[M, N] (+)= A[M, K] x B, A bfloat16 rows lda apart, C float32.
inline void gemm_bf16(int64_t M, const bf16* A, int64_t lda, const PackedB& b, float* C, int64_t ldc, bool accumulate) {
  if (M <= 0) return;
  for (int64_t j = 0; j < b.blocks(); ++j)
    at::native::cpublas::brgemm(M, b.width(j), b.K, lda, PackedB::pitch(b.width(j)), ldc, accumulate, A, b.block(j),
                                C + j * PackedB::kBlock, /*is_vnni=*/true);
}

// Whether the micro-kernel multiplies bfloat16 here, decided once per process by a probe that must give the
// right answer (and never with SQUEEZEAE_CPU_GEMM=plain).
inline bool bf16_gemm_usable() {
  static const bool usable = [] {
    if (!brgemm_usable()) return false;
    try {
      if (!at::native::cpublas::could_pack(at::kBFloat16)) return false;
      const at::Tensor a = at::arange(1, 9, at::TensorOptions().dtype(at::kBFloat16)).reshape({2, 4});  // [M=2, K=4]
      const at::Tensor b = at::arange(1, 13, at::TensorOptions().dtype(at::kBFloat16)).reshape({4, 3});  // [K, N=3]
      const PackedB packed = pack_b({b})[0];
      float c[6] = {-1, -1, -1, -1, -1, -1};
      gemm_bf16(2, a.const_data_ptr<bf16>(), 4, packed, c, 3, false);
      at::native::cpublas::brgemm_release(true);
      const at::Tensor expect = at::matmul(a.to(at::kFloat), b.to(at::kFloat));
      for (int i = 0; i < 6; ++i)
        if (c[i] != expect.reshape({6})[i].item<float>()) return false;
      return true;
    } catch (...) {
      return false;
    }
  }();
  return usable;
}

inline bool use_bf16_forward(const at::Tensor& x, const FireDims& d) {
  return x.scalar_type() == at::kBFloat16 && d.in_channels % 2 == 0 && d.squeeze % 2 == 0 && bf16_gemm_usable();
}

// channels_last with packed rows: what the tiles read and write in place.
inline bool packed_channels_last(const at::Tensor& t) {
  return Strides4(t).pixels_packed(t.size(1), t.size(3));
}

// The forward of a packed channels_last x into a packed channels_last `output`.
inline void fire_forward_bf16(const FireDims& d, const at::Tensor& x, const at::Tensor& squeeze_weight,
                              const std::optional<at::Tensor>& squeeze_bias, const at::Tensor& expand1x1_weight,
                              const std::optional<at::Tensor>& expand1x1_bias, const at::Tensor& expand3x3_weight,
                              const std::optional<at::Tensor>& expand3x3_bias, at::Tensor& output) {
  const int64_t C = d.in_channels, S = d.squeeze, E1 = d.expand1x1, E3 = d.expand3x3, E = E1 + E3;
  const int64_t W = d.width;
  const at::Tensor taps = expand3x3_weight.permute({2, 3, 1, 0}).contiguous();  // [ky][kx][S][E3]
  const std::vector<PackedB> packed = pack_b({squeeze_weight.reshape({S, C}).t().contiguous(),        // [C, S]
                                              expand1x1_weight.reshape({E1, S}).t().contiguous(),     // [S, E1]
                                              taps[0].reshape({3 * S, E3}), taps[1].reshape({3 * S, E3}),
                                              taps[2].reshape({3 * S, E3})});                         // [3 * S, E3]
  const PackedB& squeeze = packed[0];
  const PackedB& expand1x1 = packed[1];
  const PackedB* expand3x3 = packed.data() + 2;
  const at::Tensor sbias = bias_or_zeros(squeeze_bias, S, at::kFloat);
  const at::Tensor ebias =
      at::cat({bias_or_zeros(expand1x1_bias, E1, at::kFloat), bias_or_zeros(expand3x3_bias, E3, at::kFloat)});
  const TileGrid g = make_tile_grid(d.batch, d.height, W, forward_tile_pixels());
  const Strides4 st(x), ost(output);
  const bf16* in = x.const_data_ptr<bf16>();
  uint16_t* out = reinterpret_cast<uint16_t*>(output.mutable_data_ptr<bf16>());
  const float* sb = sbias.const_data_ptr<float>();
  const float* eb = ebias.const_data_ptr<float>();
  const int64_t PW = g.padded_width();
  at::parallel_for(0, g.tiles(), 1, [&](int64_t begin, int64_t end) {
    using F = Scratch<float>;
    using H = Scratch<bf16>;
    float* squeeze_acc = F::get(F::kSqueezeAcc, (g.rows + 2) * W * S);
    float* acc = F::get(F::kOut, g.rows * W * E);
    bf16* spad = H::get(H::kSpad, g.padded_pixels() * S);
    bf16* spad3 = H::get(H::kSpad3, (g.rows + 2) * W * 3 * S);
    for (int64_t t = begin; t < end; ++t) {
      int64_t n, r0, r1;
      g.tile(t, &n, &r0, &r1);
      const int64_t R = r1 - r0, dense = R * W;
      const int64_t g0 = std::max<int64_t>(r0 - 1, 0), g1 = std::min<int64_t>(r1 + 1, d.height);
      gemm_bf16((g1 - g0) * W, in + n * st.n + g0 * st.h, C, squeeze, squeeze_acc, S, false);
      // relu(squeeze + bias) in bfloat16, zero-bordered, then each pixel with its two horizontal neighbours, as
      // in fire_forward_tile
      fill_padded_rows(spad, R, r0, g0, g1, PW, S, [&](bf16* dst, int64_t loaded_row) {
        bias_relu_rows_bf16(reinterpret_cast<uint16_t*>(dst), S, squeeze_acc + loaded_row * W * S, S, sb, W, S);
      });
      neighbour_triples(spad, R, W, PW, S, spad3);
      gemm_bf16(dense, spad3 + (W * 3 + 1) * S, 3 * S, expand1x1, acc, E, false);
      for (int64_t ky = 0; ky < 3; ++ky)
        gemm_bf16(dense, spad3 + ky * W * 3 * S, 3 * S, expand3x3[ky], acc + E1, E, ky > 0);
      for (int64_t h = r0; h < r1; ++h)
        bias_relu_rows_bf16(out + n * ost.n + h * ost.h, ost.w, acc + (h - r0) * W * E, E, eb, W, E);
    }
    at::native::cpublas::brgemm_release(true);
  });
}

// fire_forward_bf16 for x and `output` in any layout: packed channels_last ones in place, others through
// channels_last copies in call scratch (the Fire's and unpool_fire's bfloat16 forward).
inline void fire_forward_bf16_any_layout(const FireDims& d, const at::Tensor& x, const at::Tensor& squeeze_weight,
                                         const std::optional<at::Tensor>& squeeze_bias,
                                         const at::Tensor& expand1x1_weight,
                                         const std::optional<at::Tensor>& expand1x1_bias,
                                         const at::Tensor& expand3x3_weight,
                                         const std::optional<at::Tensor>& expand3x3_bias, at::Tensor& output) {
  using Slot = Scratch<c10::BFloat16>;
  const bool in_place = packed_channels_last(x) && packed_channels_last(output);
  const at::Tensor x_cl = in_place ? x : call_copy<c10::BFloat16>(Slot::kCallIn, x, at::MemoryFormat::ChannelsLast);
  at::Tensor out_cl =
      in_place ? output : call_copy<c10::BFloat16>(Slot::kCallOut, output, at::MemoryFormat::ChannelsLast, false);
  fire_forward_bf16(d, x_cl, squeeze_weight, squeeze_bias, expand1x1_weight, expand1x1_bias, expand3x3_weight,
                    expand3x3_bias, out_cl);
  if (!in_place) output.copy_(out_cl);
}

}  // namespace cpu
}  // namespace squeezeae
