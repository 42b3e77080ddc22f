// The fused Fire on the CPU, shared by `fire` and `unpool_fire` (they differ only in how a tile's input rows
// are loaded and where the input gradient goes).
//
// Work is split into tiles of (image, band of R output rows). A tile
//   1. loads its input rows plus a one-row halo above and below into a pixel-major buffer [pixels, C]
//      (converted to the accumulation type; for unpool_fire this is where unpooling happens),
//   2. computes the squeeze GEMM with bias + ReLU into `spad`, a zero-bordered [(R + 2) * (W + 1) + 1, S] buffer
//      (see TileGrid::padded_width),
//   3. computes expand1x1 and expand3x3 from `spad` into one accumulator [pixels, E1 + E3]: the 3x3 conv is
//      either three GEMMs with K = 3 * S, one per kernel row, over a copy of `spad` that holds each pixel with
//      its two horizontal neighbours (a third of an im2col; the kernel rows are row offsets into it), or, for
//      larger calls, Winograd F(2x2, 3x3): 16 GEMMs with K = S over transformed 4x4 patches (winograd.h),
//   4. writes bias + ReLU + dtype conversion straight into the output's channel slices (any strides).
// The squeeze of the halo rows is recomputed by neighbouring tiles (cheap: squeeze is ~10% of a Fire's FLOPs)
// so tiles are independent and everything a tile touches stays in L2.
//
// The backward pass uses the same tiles: recompute `spad`, build the masked output gradient with a one-row
// halo, then the squeeze gradient in one pass (both expand data-gradients as GEMMs over shifted windows, or the
// 3x3's as Winograd, then the squeeze ReLU mask), then the input gradient and all weight gradients. Weight
// gradients are summed per fixed chunk of tiles and the chunks added in order, so results are bit-identical run
// to run and do not depend on the thread count.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <type_traits>
#include <vector>

#include "checks.h"
#include "shapes.h"
#include "cpu/caches.h"
#include "cpu/epilogues.h"
#include "cpu/gemm.h"
#include "cpu/strides.h"
#include "cpu/winograd.h"

namespace squeezeae {
namespace cpu {

// dst[c * ld_dst + r] = src[r * ld_src + c] for a rows x cols block, in 16 x 16 sub-blocks so both sides
// are walked a cache line at a time (float: the AVX-512 or AVX2 transposes of epilogues.h).
template <typename T>
inline void transpose(const T* src, int64_t rows, int64_t cols, int64_t ld_src, T* dst, int64_t ld_dst) {
  if constexpr (std::is_same_v<T, float>) {
    pixel_major_to_planar(dst, ld_dst, src, ld_src, rows, cols);
    return;
  }
  constexpr int64_t kBlock = 16;
  for (int64_t r0 = 0; r0 < rows; r0 += kBlock)
    for (int64_t c0 = 0; c0 < cols; c0 += kBlock) {
      const int64_t r1 = std::min(rows, r0 + kBlock), c1 = std::min(cols, c0 + kBlock);
      for (int64_t c = c0; c < c1; ++c)
        for (int64_t r = r0; r < r1; ++r) dst[c * ld_dst + r] = src[r * ld_src + c];
    }
}

// values[i] = 0 where !(reference[i] > 0): the ReLU mask of a gradient (written to vectorise).
template <typename T>
inline void mask_where_not_positive(T* __restrict__ values, const T* __restrict__ reference, int64_t count) {
  for (int64_t i = 0; i < count; ++i) values[i] = reference[i] > T(0) ? values[i] : T(0);
}

template <typename scalar_t>
using acc_type_for = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

// float16 and bfloat16 Fires (forward and backward, fire and unpool_fire) run the float32 kernels on float32
// copies of their activations, converted by ATen's vectorised copies, and convert the results back: the same
// float32 arithmetic as converting inside the tiles, but through the float32 fast paths. Converting inside the
// tiles element by element (a software float16 conversion on a baseline x86-64 build) made float16 2-4x
// slower than float32, and than eager float16, on a Xeon.
inline bool computes_in_float(const at::Tensor& t) {
  return t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16;
}

// NCHW-like inputs take the planar tiles, channels_last the pixel-major ones (the output follows the input).
inline bool use_planar_tiles(const at::Tensor& x) {
  return x.suggest_memory_format() != at::MemoryFormat::ChannelsLast;
}

// The forward (fire and unpool_fire) also runs NCHW images through the pixel-major tiles where that measured
// faster (bench, batch 1 and 8): with AVX-512 transposes, images of up to 400 output pixels on an AMD EPYC (the
// 13x13 SqueezeNet layers, 5-10% faster; from 27x27 up the planar tiles won by 15-40%) and up to 1000 on an
// Intel Xeon (27x27 at batch 8 1.1-1.5x faster pixel-major, at batch 1 and 2 within +-6%; 55x55 at batch 8 up
// to 1.35x faster planar); with AVX2 transposes, every size (a Zen 3: 27x27 layers 0.9-1.0x of eager planar,
// 1.1-1.4x pixel-major; 55x55 equal or better).
//
// On an Intel AVX-512 CPU, float32 calls of at most kPlanarMaxCallPixels output pixels (batch x height x width:
// batch 1 on the 13x13 layers) take the planar tiles in either layout: they multiply the 3x3 weights as stored
// (FireWeights::expand3x3_rows), where the pixel-major tiles repack them on every call (~10% of a batch-1 fire8),
// and channels_last activations are transposed in and out by the SIMD transposes. In-process A/B on a Xeon, the
// four 13x13 layers: batch 1 channels_last 1.02-1.13x, NCHW 1.17-1.22x faster than the pixel-major tiles (and
// unpool_fire 1.04-1.13x / 1.14-1.17x); batch 2 channels_last 0.93-0.96x, NCHW 1.02-1.04x; batch 4 0.81-0.97x.
constexpr int64_t kPlanarMaxCallPixels = 256;

inline bool cpu_is_intel() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  static const bool intel = [] {
    __builtin_cpu_init();
    return __builtin_cpu_is("intel") != 0;
  }();
  return intel;
#else
  return false;
#endif
}

// The rule above on this CPU: kPlanarMaxCallPixels, or 0 where it does not apply.
inline int64_t planar_max_call_pixels() {
  return cpu_is_intel() && transpose_simd_width() == 16 ? kPlanarMaxCallPixels : 0;
}

// SQUEEZEAE_CPU_FORWARD_TILES=planar or =pixel-major forces the forward's tiles (fire and unpool_fire, float32
// and float64) for every call (tests, comparisons); unset, the rules above choose.
enum class ForwardTiles { kMeasured, kPlanar, kPixelMajor };

inline ForwardTiles forward_tiles() {
  static const ForwardTiles value = [] {
    const char* forced = std::getenv("SQUEEZEAE_CPU_FORWARD_TILES");
    if (forced == nullptr) return ForwardTiles::kMeasured;
    if (std::strcmp(forced, "planar") == 0) return ForwardTiles::kPlanar;
    if (std::strcmp(forced, "pixel-major") == 0) return ForwardTiles::kPixelMajor;
    TORCH_WARN("SQUEEZEAE_CPU_FORWARD_TILES=", forced, " is not one of planar, pixel-major: ignored");
    return ForwardTiles::kMeasured;
  }();
  return value;
}

inline const char* forward_tiles_name() {
  switch (forward_tiles()) {
    case ForwardTiles::kPlanar: return "planar";
    case ForwardTiles::kPixelMajor: return "pixel-major";
    case ForwardTiles::kMeasured: break;
  }
  return "measured";
}

inline bool use_planar_forward_tiles(const at::Tensor& x, int64_t batch, int64_t output_pixels) {
  if (forward_tiles() != ForwardTiles::kMeasured) return forward_tiles() == ForwardTiles::kPlanar;
  if (x.scalar_type() == at::kFloat && batch * output_pixels <= planar_max_call_pixels()) return true;
  if (!use_planar_tiles(x) || (x.scalar_type() == at::kFloat && transpose_simd_width() == 8)) return false;
  return output_pixels > (cpu_is_intel() ? 1000 : 400);
}

// Fire's backward runs float32 NCHW through the pixel-major tiles too: with the AVX-512 transposes in its
// loaders and sink it measured 0-12% faster than the planar tiles on every SqueezeNet layer at batch 8, and
// unpool_fire's backward (SIMD scatters into and gathers from the pixel-major tile) 3-11% faster on a Xeon
// (in-process A/B, batch 8). Other dtypes keep the planar tiles (their loaders have no transposing fast path).
inline bool use_planar_backward_tiles(const at::Tensor& x) {
  return use_planar_tiles(x) && x.scalar_type() != at::kFloat;
}

// The weight gradients of a Fire that saw no pixels.
inline std::vector<at::Tensor> zero_weight_grads(const at::Tensor& squeeze_weight, const at::Tensor& expand1x1_weight,
                                                 const at::Tensor& expand3x3_weight) {
  std::vector<at::Tensor> grads;
  for (const at::Tensor* w : {&squeeze_weight, &expand1x1_weight, &expand3x3_weight}) {
    grads.push_back(at::zeros_like(*w, at::MemoryFormat::Contiguous));
    grads.push_back(at::zeros({w->size(0)}, w->options()));
  }
  return grads;
}

// The pixel-major tiles' 3x3 convolution (the forward's expand3x3, and the backward's squeeze gradient through
// it) runs as Winograd F(2x2, 3x3) (winograd.h) from kWinogradMinPixels output pixels a call (batch x height x
// width) on, as the direct taps below that. Its weights are transformed on every call (adding ~75 us to a fire8
// call's weight packing on a 2-core Xeon) and its GEMMs are narrower (M = blocks, K = S), so it pays on larger
// calls: forward, in-process A/B against the taps on that Xeon, batch 8, channels_last: 13x13 layers
// 1.08-1.10x faster, 27x27 1.15-1.17x, 55x55 1.03-1.06x (NCHW through the pixel-major tiles: 1.09-1.15x); batch
// 1: 13x13 (169 pixels) 0.85-0.93x, 27x27 0.99-1.07x, 55x55 within noise.
constexpr int64_t kWinogradMinPixels = 1024;

// The backward's squeeze gradient takes Winograd only from this many squeeze channels too: its GEMMs are
// [blocks, E3] x [E3, S], and narrow ones gain less than the transforms cost (in-process A/B of the backward on
// that Xeon, batch 8, channels_last: fire8/fire6/fire4/fire2, S = 64/48/32/16: 1.09x, 1.02x, 1.01x, 0.87x).
constexpr int64_t kWinogradMinBackwardSqueeze = 48;

// The forward of narrow squeezes (fewer than kWinogradNarrowSqueeze channels: fire2 and fire3) takes it only from
// kWinogradMinPixelsNarrow output pixels a call: its transforms cost more next to the GEMMs they shrink (per
// output pixel, 4 (S + E3) values transformed for 5 S E3 multiply-adds saved). A/B on a Xeon, channels_last,
// fire2/fire3 (S = 16): batch 1 (3025 pixels) 0.90x/0.97x, and 0.89x/0.98x inside a converted squeezenet1_1;
// batch 2 1.02-1.08x, batch 4 1.05-1.09x, one 112x112 image 1.08-1.11x (and one 56x56 image with S = 32
// 1.07-1.10x).
constexpr int64_t kWinogradNarrowSqueeze = 32;
constexpr int64_t kWinogradMinPixelsNarrow = 4096;

// The smallest call that runs Winograd (0: every call, -1: none). SQUEEZEAE_CPU_WINOGRAD=on or =off forces it
// for every pixel-major call (forward and backward, any squeeze width) or for none (tests, comparisons).
inline int64_t winograd_min_pixels() {
  static const int64_t value = [] {
    const char* forced = std::getenv("SQUEEZEAE_CPU_WINOGRAD");
    if (forced == nullptr) return kWinogradMinPixels;
    if (std::strcmp(forced, "on") == 0) return int64_t(0);
    if (std::strcmp(forced, "off") == 0) return int64_t(-1);
    TORCH_WARN("SQUEEZEAE_CPU_WINOGRAD=", forced, " is not one of on, off: ignored");
    return kWinogradMinPixels;
  }();
  return value;
}

inline bool use_winograd(const FireDims& d, bool backward) {
  const int64_t min_pixels = winograd_min_pixels();
  if (min_pixels <= 0) return min_pixels == 0;
  const int64_t pixels = d.batch * d.height * d.width;
  if (backward) return pixels >= min_pixels && d.squeeze >= kWinogradMinBackwardSqueeze;
  return pixels >= (d.squeeze < kWinogradNarrowSqueeze ? std::max(min_pixels, kWinogradMinPixelsNarrow) : min_pixels);
}

// Weights repacked once per call, in the accumulation type, in the orientation each GEMM wants: the
// pixel-major tiles (channels_last) multiply activations [pixels, channels] by [in, out] weights, the planar
// tiles (NCHW) multiply [out, in] weights by activations [channels, pixels].
template <typename acc_t>
struct FireWeights {
  int64_t C = 0, S = 0, E1 = 0, E3 = 0;
  at::Tensor squeeze_t;      // [C, S]
  at::Tensor expand1x1_t;    // [S, E1]
  at::Tensor expand3x3_t;    // [9, S, E3]  (= [9 * S, E3], the im2col GEMM's B)
  at::Tensor expand3x3_winograd;  // winograd.h (pixel-major tiles, larger calls, finite weights): [16, S, E3] in
                                  // the forward, [16, E3, S] (rotated kernels) in the backward
  at::Tensor squeeze;        // [S, C]
  at::Tensor expand1x1;      // [E1, S]
  at::Tensor expand3x3;      // [9, E3, S]
  at::Tensor expand3x3_rows; // [E3, 9 * S] (planar im2col GEMM's A), columns (tap, s) or (s, tap):
  bool im2col_tap_major = true;  // the planar im2col's rows in the same order
  at::Tensor squeeze_bias;   // [S]
  at::Tensor expand_bias;    // [E1 + E3]

  int64_t E() const { return E1 + E3; }
  const acc_t* p(const at::Tensor& t) const { return t.const_data_ptr<acc_t>(); }
};

// The 3x3 weights [E3, S, 3, 3] (any strides) rearranged for the GEMMs, in one pass (a generic permuted copy
// walks the source with a stride of 9 * S and ran ~15% of a batch-1 Fire here):
//   kTapInOut: [9, S, E3] (forward pixel-major B, planar backward), as a blocked transpose of [E3, 9 * S];
//   kTapOutIn: [9, E3, S] (pixel-major squeeze gradient);
//   kOutTapIn: [E3, 9, S] (planar im2col A).
enum class TapLayout { kTapInOut, kTapOutIn, kOutTapIn };

template <typename T, TapLayout kLayout>
at::Tensor pack_taps(const at::Tensor& e3) {  // any strides: channels_last weights are read in place
  const int64_t E3 = e3.size(0), S = e3.size(1), K = 9 * S, se = e3.stride(0), ss = e3.stride(1);
  int64_t tap_offset[9];
  for (int64_t tap = 0; tap < 9; ++tap) tap_offset[tap] = (tap / 3) * e3.stride(2) + (tap % 3) * e3.stride(3);
  at::Tensor out = at::empty({E3 * K}, e3.options());
  const T* __restrict__ src = e3.const_data_ptr<T>();
  T* __restrict__ dst = out.mutable_data_ptr<T>();
  if constexpr (kLayout == TapLayout::kTapInOut && std::is_same_v<T, float>) {
    // float32 contiguous or channels_last weights are an [E3, 9 * S] matrix with unit stride along its
    // columns, (s, tap) or (tap, s): one SIMD transpose with a table of destination rows puts column k at row
    // (tap, s), in (block of 64 output channels, block of columns) work items. (Contiguous weights used to take
    // a transpose then a reordering copy of the 590 KB of fire8's 3x3 weights, ~60 us a call on a Xeon, about
    // half of it the second pass; the scalar blocked transpose below ran ~15% of a batch-1 13x13 Fire.)
    const bool contiguous = ss == 9 && e3.stride(2) == 3 && e3.stride(3) == 1;
    const bool channels_last = ss == 1 && e3.stride(3) == S && e3.stride(2) == 3 * S;
    if (contiguous || channels_last) {
      std::vector<int64_t> row_of_column(K);
      for (int64_t k = 0; k < K; ++k) row_of_column[k] = contiguous ? (k % 9) * S + k / 9 : k;
      constexpr int64_t kEBlock = 64, kKBlock = 144;
      const int64_t e_blocks = (E3 + kEBlock - 1) / kEBlock, k_blocks = (K + kKBlock - 1) / kKBlock;
      at::parallel_for(0, e_blocks * k_blocks, 1, [&](int64_t begin, int64_t end) {
        for (int64_t item = begin; item < end; ++item) {
          const int64_t e0 = (item / k_blocks) * kEBlock, k0 = (item % k_blocks) * kKBlock;
          planar_to_pixel_major(dst + e0, E3, src + e0 * se + k0, se, std::min(kKBlock, K - k0),
                                std::min(kEBlock, E3 - e0), row_of_column.data() + k0);
        }
      });
      return out;
    }
  }
  if constexpr (kLayout == TapLayout::kTapInOut) {
    // a blocked transpose: 16 output channels at once, 64-byte writes
    constexpr int64_t kBlock = 16;
    at::parallel_for(0, (E3 + kBlock - 1) / kBlock, 4, [&](int64_t b0, int64_t b1) {
      for (int64_t e0 = b0 * kBlock; e0 < std::min(E3, b1 * kBlock); e0 += kBlock) {
        const int64_t count = std::min(E3 - e0, kBlock);
        for (int64_t s = 0; s < S; ++s)
          for (int64_t tap = 0; tap < 9; ++tap) {
            T* __restrict__ d = dst + (tap * S + s) * E3 + e0;
            const T* __restrict__ column = src + e0 * se + s * ss + tap_offset[tap];
            for (int64_t e = 0; e < count; ++e) d[e] = column[e * se];
          }
      }
    });
  } else {
    at::parallel_for(0, E3, 16, [&](int64_t e_begin, int64_t e_end) {
      for (int64_t e = e_begin; e < e_end; ++e)
        for (int64_t tap = 0; tap < 9; ++tap) {
          const T* __restrict__ row = src + e * se + tap_offset[tap];
          T* __restrict__ d = kLayout == TapLayout::kTapOutIn ? dst + (tap * E3 + e) * S : dst + e * K + tap * S;
          for (int64_t s = 0; s < S; ++s) d[s] = row[s * ss];
        }
    });
  }
  return out;
}

// True if no value is an infinity or a NaN (float: epilogues.h).
inline bool all_finite(const double* values, int64_t count) {
  for (int64_t i = 0; i < count; ++i)
    if (!std::isfinite(values[i])) return false;
  return true;
}

// Winograd's U = G g G^T of the 3x3 weights, [16, K, N] (winograd.h), from their taps [9, K, N] (pack_taps:
// [9, S, E3] for the forward, [9, E3, S] for the data gradient, whose kernels are rotated: `flip`) in one
// streaming pass. Undefined if some weight is an infinity or a NaN: Winograd's transforms would make NaNs
// (inf - inf) where the direct convolution has infinities, so such weights take the taps.
template <typename T>
at::Tensor pack_winograd_weights(const at::Tensor& taps, int64_t K, int64_t N, bool flip) {
  const int64_t count = K * N;
  at::Tensor out = at::empty({kWinogradPoints, K, N}, taps.options());
  const T* src = taps.const_data_ptr<T>();
  T* dst = out.mutable_data_ptr<T>();
  std::atomic<bool> finite{true};
  at::parallel_for(0, count, 2048, [&](int64_t begin, int64_t end) {
    for (int64_t tap = 0; tap < 9; ++tap)
      if (!all_finite(src + tap * count + begin, end - begin)) finite.store(false);
    winograd_weight_transform(dst + begin, src + begin, end - begin, count, flip);
  });
  return finite.load() ? out : at::Tensor();
}

inline at::Tensor bias_or_zeros(const std::optional<at::Tensor>& bias, int64_t channels, at::ScalarType dtype) {
  if (bias.has_value() && bias->defined()) return bias->to(dtype).contiguous();
  return at::zeros({channels}, at::TensorOptions().dtype(dtype));
}

// m^T as a contiguous [K, R] tensor for an [R, K] matrix: rows with unit stride (the 1x1 weights of contiguous
// and channels_last models alike) through transpose() (float32: the SIMD transposes), which took a batch-1
// Fire's two weight transposes from ~10% of its time (at::Tensor::contiguous, ~23 us each on a Xeon) to a few us.
template <typename T>
at::Tensor transposed(const at::Tensor& m) {
  if (m.stride(1) != 1) return m.t().contiguous();
  at::Tensor out = at::empty({m.size(1), m.size(0)}, m.options());
  transpose(m.const_data_ptr<T>(), m.size(0), m.size(1), m.stride(0), out.mutable_data_ptr<T>(), m.size(0));
  return out;
}

// Packs only what the chosen tiles use (forward or backward, pixel-major or planar): repacking the 3x3
// weights is a strided copy of 9 * S * E3 values, worth doing once, not in every orientation.
template <typename acc_t>
FireWeights<acc_t> pack_fire_weights(const FireDims& d, const at::Tensor& squeeze_weight,
                                     const std::optional<at::Tensor>& squeeze_bias,
                                     const at::Tensor& expand1x1_weight,
                                     const std::optional<at::Tensor>& expand1x1_bias,
                                     const at::Tensor& expand3x3_weight,
                                     const std::optional<at::Tensor>& expand3x3_bias, bool planar, bool backward) {
  const auto dtype = c10::CppTypeToScalarType<acc_t>::value;
  FireWeights<acc_t> w;
  w.C = d.in_channels;
  w.S = d.squeeze;
  w.E1 = d.expand1x1;
  w.E3 = d.expand3x3;
  const at::Tensor sq = squeeze_weight.to(dtype).reshape({w.S, w.C});
  const at::Tensor e1 = expand1x1_weight.to(dtype).reshape({w.E1, w.S});
  const at::Tensor e3 = expand3x3_weight.to(dtype);  // [E3, S, 3, 3]
  const bool pixel_major = !planar;
  // squeeze recompute: pixel-major x [pixels, C] * [C, S]; planar [S, C] * x [C, pixels]. The input gradient
  // uses the other one.
  if (pixel_major || backward) w.squeeze_t = transposed<acc_t>(sq);
  w.squeeze = sq.contiguous();  // planar tiles, the backward, and the forward of NCHW rows (squeeze_tile)
  if (pixel_major != backward) {  // forward pixel-major, or the planar squeeze gradient
    w.expand1x1_t = transposed<acc_t>(e1);
    w.expand3x3_t = pack_taps<acc_t, TapLayout::kTapInOut>(e3).view({9, w.S, w.E3});
    if (pixel_major && use_winograd(d, /*backward=*/false))
      w.expand3x3_winograd = pack_winograd_weights<acc_t>(w.expand3x3_t, w.S, w.E3, false);
  } else if (backward) {  // pixel-major squeeze gradient
    w.expand1x1 = e1.contiguous();
    w.expand3x3 = pack_taps<acc_t, TapLayout::kTapOutIn>(e3).view({9, w.E3, w.S});
    if (use_winograd(d, /*backward=*/true))
      w.expand3x3_winograd = pack_winograd_weights<acc_t>(w.expand3x3, w.E3, w.S, true);
  } else {  // planar forward
    w.expand1x1 = e1.contiguous();
    // the 3x3 weights as stored where they are [E3, 9 * S] rows already: channels_last ((tap, s) columns) or
    // contiguous ((s, tap) columns: the im2col's rows follow), else packed as (tap, s)
    const bool channels_last = e3.stride(0) == 9 * w.S && e3.stride(1) == 1 && e3.stride(2) == 3 * w.S &&
                               e3.stride(3) == w.S;
    if (channels_last) {
      w.expand3x3_rows = e3.permute({0, 2, 3, 1}).reshape({w.E3, 9 * w.S});
    } else if (e3.is_contiguous()) {
      w.expand3x3_rows = e3.view({w.E3, 9 * w.S});
      w.im2col_tap_major = false;
    } else {
      w.expand3x3_rows = pack_taps<acc_t, TapLayout::kOutTapIn>(e3).view({w.E3, 9 * w.S});
    }
  }
  w.squeeze_bias = bias_or_zeros(squeeze_bias, w.S, dtype);
  if (!backward)
    w.expand_bias =
        at::cat({bias_or_zeros(expand1x1_bias, w.E1, dtype), bias_or_zeros(expand3x3_bias, w.E3, dtype)});
  return w;
}

// How the output rows are cut into tiles: tiles_per_image bands per image, as even as possible (their row
// counts differ by at most one; `rows` is the largest, which sizes the buffers).
struct TileGrid {
  int64_t batch = 0, height = 0, width = 0, rows = 1, tiles_per_image = 0;
  int64_t tiles() const { return batch * tiles_per_image; }
  // Tile t (of tiles()): its image and rows [r0, r1).
  void tile(int64_t t, int64_t* n, int64_t* r0, int64_t* r1) const {
    const int64_t band = t % tiles_per_image;
    *n = t / tiles_per_image;
    *r0 = band * height / tiles_per_image;
    *r1 = (band + 1) * height / tiles_per_image;
  }
  // A padded tile buffer holds rows of W + 1 pixels, a zero then the row's W pixels, and one more zero pixel at
  // the end: each zero is the right border of one row and the left border of the next, so a GEMM over the flat
  // range of a tile's rows computes one wasted pixel per row (1 / (W + 1) of its work) instead of two.
  int64_t padded_width() const { return width + 1; }
  int64_t padded_pixels(int64_t r) const { return (r + 2) * padded_width() + 1; }  // a tile of r rows + halo
  int64_t padded_pixels() const { return padded_pixels(rows); }
  // Pixels of the flat padded range a tile of `r` rows computes (interior plus the halo columns between rows).
  int64_t flat_pixels(int64_t r) const { return (r - 1) * padded_width() + width; }
};

// Output pixels per forward tile: ~192 keeps a tile's buffers in L2 for every SqueezeNet Fire on cores with
// 512 KB-1 MB of it (see make_tile_grid); with 2 MB or more (a Xeon), 384 ran 2-5% faster for the Fire and 2-17%
// for unpool_fire on the 27x27 and 55x55 layers at batch 8 (fewer halo rows recomputed, larger GEMMs), the same
// on the 13x13 ones and at batch 1 (in-process A/B); 768 was no better.
inline int64_t forward_tile_pixels() { return l2_cache_bytes() >= (int64_t(2) << 20) ? 384 : 192; }

// About `target_pixels` output pixels per tile: ~192 keeps a forward tile's buffers in L2 for every SqueezeNet
// Fire, and the backward (more buffers, but a halo and weight-gradient accumulators to amortise) measured best
// near 384. More, smaller bands when that would leave a thread idle (batch 1 on the 13x13 layers), and in the
// forward a tile count that the threads share evenly where that costs at most a few more bands.
// The backward passes a fixed `min_tiles` (kBackwardMinTiles) instead of deriving it from the thread count: its
// tiling decides how weight gradients are summed, and that must not change with the number of threads.
inline TileGrid make_tile_grid(int64_t batch, int64_t height, int64_t width, int64_t target_pixels = 192,
                               int64_t min_tiles = 0) {
  TileGrid g;
  g.batch = batch;
  g.height = height;
  g.width = width;
  const int64_t target_rows = std::clamp<int64_t>((target_pixels + width - 1) / std::max<int64_t>(width, 1), 1,
                                                  std::max<int64_t>(height, 1));
  int64_t bands = (height + target_rows - 1) / target_rows;
  const bool balance = min_tiles <= 0;
  // one tile per thread at least: at batch 1 on the 13x13 layers two bands (one per thread) ran 4-12% faster
  // than four on a 2-core Xeon (less squeeze recomputed for the halos, taller GEMMs; the same imbalance, 7 vs 6
  // rows either way)
  if (balance) min_tiles = at::get_num_threads();
  while (bands < height && batch * bands < min_tiles) ++bands;
  if (balance) {
    const int64_t threads = at::get_num_threads();
    for (int64_t more = bands; more <= height && more <= bands + 2; ++more)
      if ((batch * more) % threads == 0) {
        bands = more;
        break;
      }
  }
  g.tiles_per_image = std::max<int64_t>(bands, 1);
  g.rows = (height + g.tiles_per_image - 1) / g.tiles_per_image;
  return g;
}

// The backward's least tile count, whatever the thread count (see make_tile_grid): every tile writes a full set
// of weight-gradient partial sums and runs their GEMMs with K = its pixels, so small tiles cost more than they
// spread. At 8 (bands of 2 rows at batch 1 on 13x13), the batch-1 fwd+bwd of fire8/fire9 ran 0.6-1.0x eager
// on a 2-core Xeon; at 4, 1.1-1.25x (and fire4/fire6 1.5-1.7x, from 1.2-1.5x), still 4 tiles for 4 threads;
// at 2, 1.25-1.3x on 2 threads but half of a 4-core machine idle.
constexpr int64_t kBackwardMinTiles = 4;

// The backward's tiles (fire and unpool_fire): ~384 pixels, at least kBackwardMinTiles, from the shape alone.
inline TileGrid backward_tile_grid(const FireDims& d) {
  return make_tile_grid(d.batch, d.height, d.width, /*target_pixels=*/384, kBackwardMinTiles);
}

// A thread's scratch buffers, kept across calls (grow-only) so a call pays neither allocation nor page faults
// nor zero-filling: every tile writes what it reads. At most a few MB per thread for SqueezeNet's shapes. The
// kCall* slots hold the calling thread's call-wide buffers (call_scratch, float_copy).
template <typename acc_t>
class Scratch {
 public:
  enum Slot { kX, kSqueezeAcc, kSpad, kSpad3, kIm2col, kOut, kSqueezeRows, kWinogradIn, kWinogradOut, kSpadT, kGrad,
              kGradSqueeze, kGradSqueezeDense, kGradX, kGradSqueezeT, kSqueezeT, kCallPartial, kCallTotal,
              kCallStaging, kCallIn, kCallOut, kCallGradIn, kCallGradOut, kSlots };
  static acc_t* get(Slot slot, int64_t count) {
    thread_local Scratch scratch;
    auto& buffer = scratch.buffers_[slot];
    if (scratch.sizes_[slot] < count) {
      buffer.reset(new acc_t[count]);
      scratch.sizes_[slot] = count;
    }
    return buffer.get();
  }

 private:
  std::unique_ptr<acc_t[]> buffers_[kSlots];
  int64_t sizes_[kSlots] = {};
};

// Buffers that live for one call, on the calling thread: the backward's weight-gradient partial sums, their
// total and the unpacking's staging. Kept across calls (grow-only, per slot) up to kCallScratchBytes, so that
// a call does not take fresh pages for them every time: a page first touched costs ~1 us on these VMs, and a
// batch-3 13x13 Fire backward took ~1,300 of them in one call out of three (2.5 ms calls became 3.6-4.1 ms),
// from glibc mapping and unmapping its 5 MB of partial sums. A whole converted squeezenet1_1 training step, batch
// 1-8, took 30-40% fewer page faults and ran 2-6% faster (in-process A/B on a Xeon). Larger requests get a
// fresh tensor. The tensor returned does not own its memory: it must not outlive the call. (The tiles' own
// slots are distinct, so a tile run on the calling thread during the call cannot touch these.)
constexpr int64_t kCallScratchBytes = int64_t(16) << 20;

template <typename T>
at::Tensor call_scratch(typename Scratch<T>::Slot slot, int64_t count) {
  const auto options = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  if (count * static_cast<int64_t>(sizeof(T)) > kCallScratchBytes) return at::empty({count}, options);
  return at::from_blob(Scratch<T>::get(slot, count), {count}, options);
}

// A copy of `t` (4-D) as T in memory format `format`, in call scratch `slot` (fresh tensors took ~380 page faults,
// ~0.4 ms, a call for a batch-1 55x55 activation on a Xeon); only the sizes when `copy` is false (an output).
template <typename T>
at::Tensor call_copy(typename Scratch<T>::Slot slot, const at::Tensor& t, at::MemoryFormat format, bool copy = true) {
  const at::Tensor flat = call_scratch<T>(slot, t.numel());
  at::Tensor out = format == at::MemoryFormat::ChannelsLast
                       ? flat.as_strided(t.sizes(), c10::get_channels_last_strides_2d(t.sizes()))
                       : flat.as_strided(t.sizes(), c10::contiguous_strides(t.sizes()));
  if (copy) out.copy_(t);
  return out;
}

// A float32 copy of `t` (float16 or bfloat16; see computes_in_float) in t's memory format.
inline at::Tensor float_copy(Scratch<float>::Slot slot, const at::Tensor& t, bool copy = true) {
  return call_copy<float>(slot, t, output_memory_format(t), copy);
}

template <typename acc_t>
struct TileBuffers {
  using S_ = Scratch<acc_t>;
  acc_t *x, *squeeze_acc, *spad;
  const acc_t* x_rows = nullptr;                          // the loaded rows: x or the input itself
  acc_t* out = nullptr;                                   // forward
  acc_t *spad_t = nullptr, *grad = nullptr, *grad_squeeze = nullptr, *grad_squeeze_dense = nullptr,
        *grad_x = nullptr, *grad_squeeze_t = nullptr;     // backward
  TileBuffers(const TileGrid& g, int64_t C, int64_t S, int64_t E, bool backward) {
    const int64_t halo_pixels = (g.rows + 2) * g.width;
    x = S_::get(S_::kX, halo_pixels * C);
    squeeze_acc = S_::get(S_::kSqueezeAcc, halo_pixels * S);
    spad = S_::get(S_::kSpad, g.padded_pixels() * S);
    const int64_t flat = g.flat_pixels(g.rows), dense = g.rows * g.width;
    if (!backward) {
      out = S_::get(S_::kOut, (dense + 1) * E);  // one more pixel: the Winograd output's discard
    } else {
      spad_t = S_::get(S_::kSpadT, 3 * g.padded_pixels() * S);  // [3][S][padded pixels], see fire_backward_tile
      grad = S_::get(S_::kGrad, g.padded_pixels() * E);
      grad_squeeze = S_::get(S_::kGradSqueeze, (flat + 1) * S);  // one more pixel: the Winograd output's discard
      grad_squeeze_dense = S_::get(S_::kGradSqueezeDense, dense * S);
      grad_x = S_::get(S_::kGradX, dense * C);
      grad_squeeze_t = S_::get(S_::kGradSqueezeT, dense * S);
    }
  }
};

// A tile's zero-bordered squeeze buffer (TileGrid::padded_width): padded row lr < R + 2 is image row r0 - 1 +
// lr; rows outside the loaded rows [g0, g1) are zeros, the others a zero pixel and then the W pixels that
// relu_row(dst, gr - g0) writes for image row gr; last, the zero pixel that closes the final row. T: the
// accumulation type, or bfloat16 in fire_bf16.h.
template <typename T, typename ReluRow>
void fill_padded_rows(T* spad, int64_t R, int64_t r0, int64_t g0, int64_t g1, int64_t PW, int64_t S,
                      const ReluRow& relu_row) {
  for (int64_t lr = 0; lr < R + 2; ++lr) {
    T* row = spad + lr * PW * S;
    const int64_t gr = r0 - 1 + lr;
    if (gr < g0 || gr >= g1) {
      std::fill_n(row, PW * S, T(0));
      continue;
    }
    std::fill_n(row, S, T(0));
    relu_row(row + S, gr - g0);
  }
  std::fill_n(spad + (R + 2) * PW * S, S, T(0));  // the last row's right border
}

// spad3[lr][j] = spad[lr][j .. j + 2] for the R + 2 padded rows: each pixel with its left and right neighbours,
// so the 3x3 is three GEMMs (one per kernel row, K = 3 * S) over the tile's own pixels only. (GEMMs straight
// over spad, whose rows overlap, would also run over the border column of every row: 1 / (W + 1) of the work
// wasted, 7% at 13x13, for a copy that costs 1 / (2 * E3) of the GEMMs' FLOPs.)
template <typename T>
void neighbour_triples(const T* spad, int64_t R, int64_t W, int64_t PW, int64_t S, T* spad3) {
  for (int64_t lr = 0; lr < R + 2; ++lr)
    for (int64_t j = 0; j < W; ++j) std::copy_n(spad + (lr * PW + j) * S, 3 * S, spad3 + (lr * W + j) * 3 * S);
}

// Steps 1-2: input rows [r0 - 1, r1 + 1) (those inside the image) at buf.x_rows (the loader's buffer, or the
// input itself when it is already pixel-major in the accumulation type), squeeze + bias + ReLU into
// buf.spad with zeros on the border and on rows outside the image. Returns the first loaded row.
template <typename acc_t, typename Loader>
int64_t squeeze_tile(const FireWeights<acc_t>& w, const TileGrid& g, int64_t n, int64_t r0, int64_t r1,
                     TileBuffers<acc_t>& buf, const Loader& load, bool planar_ok = false) {
  const int64_t W = g.width, PW = g.padded_width(), S = w.S;
  const int64_t g0 = std::max<int64_t>(r0 - 1, 0), g1 = std::min<int64_t>(r1 + 1, g.height);
  int64_t planar_ld = 0;
  const acc_t* planar = planar_ok ? load.planar_rows(n, g0, &planar_ld) : nullptr;
  if (planar != nullptr) {
    // The forward of NCHW rows: squeeze^T [S, pixels] = squeeze [S, C] x the input's own planes [C, pixels],
    // then only that S-plane result is transposed, instead of the input's C planes (the backward keeps the
    // transpose: its squeeze weight gradient wants the input pixel-major).
    const int64_t pixels = (g1 - g0) * W;
    acc_t* squeeze_t = Scratch<acc_t>::get(Scratch<acc_t>::kSqueezeT, S * pixels);
    gemm<acc_t>(S, pixels, w.C, w.p(w.squeeze), w.C, planar, planar_ld, squeeze_t, pixels, false);
    transpose(squeeze_t, S, pixels, pixels, buf.squeeze_acc, S);
    buf.x_rows = nullptr;
  } else {
    buf.x_rows = load(n, g0, g1, buf.x);
    gemm<acc_t>((g1 - g0) * W, S, w.C, buf.x_rows, w.C, w.p(w.squeeze_t), S, buf.squeeze_acc, S, false);
  }
  const acc_t* bias = w.p(w.squeeze_bias);
  fill_padded_rows(buf.spad, r1 - r0, r0, g0, g1, PW, S, [&](acc_t* dst, int64_t loaded_row) {
    const acc_t* src = buf.squeeze_acc + loaded_row * W * S;
    if constexpr (std::is_same_v<acc_t, float>) {
      bias_relu_rows(dst, S, src, S, bias, W, S);
    } else {
      for (int64_t i = 0; i < W * S; i += S)
        for (int64_t s = 0; s < S; ++s) dst[i + s] = std::max(src[i + s] + bias[s], acc_t(0));
    }
  });
  return g0;
}

// Forward of one tile: rows [r0, r1) of image n. `store(n, r0, r1, acc, row_pitch)` gets the pre-activation
// accumulator [pixels, E1 + E3] (row i, column j at i * row_pitch + j).
template <typename acc_t, typename Loader, typename Store>
void fire_forward_tile(const FireWeights<acc_t>& w, const TileGrid& g, int64_t n, int64_t r0, int64_t r1,
                       TileBuffers<acc_t>& buf, const Loader& load, const Store& store) {
  squeeze_tile(w, g, n, r0, r1, buf, load, /*planar_ok=*/true);
  const int64_t W = g.width, PW = g.padded_width(), S = w.S, E1 = w.E1, E3 = w.E3, E = w.E(), R = r1 - r0,
                dense = R * W;
  acc_t* out = buf.out;
  // Winograd's transforms would make NaNs of an infinite squeeze activation (inf - inf) where the reference has
  // infinities, and can overflow on values near the float range's end: tiles with a non-finite value (NaNs, which
  // would come out right either way, included) take the direct taps.
  if (!w.expand3x3_winograd.defined() ||
      !all_finite(static_cast<const acc_t*>(buf.spad), g.padded_pixels(R) * S)) {  // both expands from the triples
    acc_t* spad3 = Scratch<acc_t>::get(Scratch<acc_t>::kSpad3, (R + 2) * W * 3 * S);  // only these tiles use it
    neighbour_triples(buf.spad, R, W, PW, S, spad3);
    gemm<acc_t>(dense, E1, S, spad3 + (W * 3 + 1) * S, 3 * S, w.p(w.expand1x1_t), E1, out, E, false);
    for (int64_t ky = 0; ky < 3; ++ky)
      gemm<acc_t>(dense, E3, 3 * S, spad3 + ky * W * 3 * S, 3 * S, w.p(w.expand3x3_t) + ky * 3 * S * E3, E3,
                  out + E1, E, ky > 0);
    store(n, r0, r1, static_cast<const acc_t*>(out), W);
    return;
  }
  // expand1x1 over the tile's own squeeze pixels (the padded rows' interiors, made dense)
  acc_t* rows = Scratch<acc_t>::get(Scratch<acc_t>::kSqueezeRows, dense * S);
  for (int64_t i = 0; i < R; ++i) std::copy_n(buf.spad + ((i + 1) * PW + 1) * S, W * S, rows + i * W * S);
  gemm<acc_t>(dense, E1, S, rows, S, w.p(w.expand1x1_t), E1, out, E, false);
  // expand3x3: Winograd F(2x2, 3x3), one GEMM per transformed point
  const int64_t blocks = winograd_blocks(R, W);
  acc_t* transformed_in = Scratch<acc_t>::get(Scratch<acc_t>::kWinogradIn, kWinogradPoints * blocks * S);
  acc_t* transformed_out = Scratch<acc_t>::get(Scratch<acc_t>::kWinogradOut, kWinogradPoints * blocks * E3);
  winograd_input_tile(transformed_in, static_cast<const acc_t*>(buf.spad), S, R, W, PW, S);
  for (int64_t k = 0; k < kWinogradPoints; ++k)
    gemm<acc_t>(blocks, E3, S, transformed_in + k * blocks * S, S, w.p(w.expand3x3_winograd) + k * S * E3, E3,
                transformed_out + k * blocks * E3, E3, false);
  winograd_output_tile(out + E1, E, W, static_cast<const acc_t*>(transformed_out), R, W, E3, /*accumulate=*/false,
                       out + dense * E + E1);
  store(n, r0, r1, static_cast<const acc_t*>(out), W);
}

// Gradient accumulators of one chunk of tiles, transposed like the forward B operands.
template <typename acc_t>
struct GradParts {
  // squeeze [S, C] pixel-major or [C, S] planar; expand1x1 [S, E1] pixel-major or [E1, S] planar; expand3x3
  // [9, S, E3] pixel-major or [9, E3, S] planar; squeeze_bias [S]; expand_bias [E1 + E3].
  acc_t *squeeze, *expand1x1, *expand3x3, *squeeze_bias, *expand_bias;
  // The weight blocks hold nothing yet (not even zeros): a chunk's first tile writes them instead of adding to
  // them, which spares zeroing them first (the bias blocks are zeroed: they are summed in loops).
  bool fresh = true;
  bool accumulate() const { return !fresh; }
  static int64_t size(int64_t C, int64_t S, int64_t E1, int64_t E3) {
    return C * S + S * E1 + 9 * S * E3 + S + E1 + E3;
  }
  GradParts(acc_t* base, int64_t C, int64_t S, int64_t E1, int64_t E3) {
    squeeze = base;
    expand1x1 = squeeze + C * S;
    expand3x3 = expand1x1 + S * E1;
    squeeze_bias = expand3x3 + 9 * S * E3;
    expand_bias = squeeze_bias + S;
  }
};

// Backward of one tile. `load_grad(n, g0, g1, dst, padded_width, E)` writes the masked output gradient
// (grad_output * (output > 0)) of rows [g0, g1) at dst[(g - g0) * padded_width + 1 + j]; `sink(n, r0, r1,
// grad_x)` receives the input gradient of rows [r0, r1) as [pixels, C].
template <typename acc_t, typename Loader, typename GradLoader, typename Sink>
void fire_backward_tile(const FireWeights<acc_t>& w, const TileGrid& g, int64_t n, int64_t r0, int64_t r1,
                        TileBuffers<acc_t>& buf, GradParts<acc_t>& parts, const Loader& load,
                        const GradLoader& load_grad, const Sink& sink) {
  const int64_t g0 = squeeze_tile(w, g, n, r0, r1, buf, load);
  const int64_t W = g.width, PW = g.padded_width(), C = w.C, S = w.S, E1 = w.E1, E3 = w.E3, E = w.E();
  const int64_t R = r1 - r0, padded_pixels = g.padded_pixels(R), flat = g.flat_pixels(R);
  const int64_t dense = R * W, centre = PW + 1;

  // Masked output gradient with a zero border and a one-row halo (the 3x3 data-gradient reads it).
  acc_t* grad = buf.grad;
  const int64_t gg0 = std::max<int64_t>(r0 - 1, 0), gg1 = std::min<int64_t>(r1 + 1, g.height);
  // zeros where the loader writes nothing: the padded rows outside the image, each loaded row's border pixel
  // and the trailing pixel (zeroing the whole buffer first ran ~2.5% of a backward)
  const int64_t first = gg0 - (r0 - 1), last = gg1 - (r0 - 1);  // loaded padded rows [first, last)
  std::fill(grad, grad + first * PW * E, acc_t(0));
  for (int64_t lr = first; lr < last; ++lr) std::fill_n(grad + lr * PW * E, E, acc_t(0));
  std::fill(grad + last * PW * E, grad + padded_pixels * E, acc_t(0));
  load_grad(n, gg0, gg1, grad + first * PW * E, PW, E);
  acc_t* __restrict__ expand_bias = parts.expand_bias;
  for (int64_t i = 0; i < R; ++i) {
    const acc_t* __restrict__ row = grad + ((i + 1) * PW + 1) * E;
    for (int64_t j = 0; j < W * E; j += E)
      for (int64_t c = 0; c < E; ++c) expand_bias[c] += row[j + c];
  }

  // Squeeze gradient over the flat range: expand1x1^T plus the nine 3x3 taps (a tap that reads s[p + shift]
  // in the forward sends grad[p] back to p + shift, i.e. reads grad[q - shift] here), then the ReLU mask.
  acc_t* gs = buf.grad_squeeze;
  gemm<acc_t>(flat, S, E1, grad + centre * E, E, w.p(w.expand1x1), S, gs, S, false);
  if (w.expand3x3_winograd.defined() && all_finite(static_cast<const acc_t*>(grad), padded_pixels * E)) {
    // the 3x3's part as Winograd F(2x2, 3x3) (a correlation with the rotated kernels, E3 -> S channels), added to
    // gs at its pixels (r, c) = r * PW + c; infinities take the taps below, as in the forward
    const int64_t blocks = winograd_blocks(R, W);
    acc_t* transformed_in = Scratch<acc_t>::get(Scratch<acc_t>::kWinogradIn, kWinogradPoints * blocks * E3);
    acc_t* transformed_out = Scratch<acc_t>::get(Scratch<acc_t>::kWinogradOut, kWinogradPoints * blocks * S);
    winograd_input_tile(transformed_in, static_cast<const acc_t*>(grad + E1), E, R, W, PW, E3);
    for (int64_t k = 0; k < kWinogradPoints; ++k)
      gemm<acc_t>(blocks, S, E3, transformed_in + k * blocks * E3, E3, w.p(w.expand3x3_winograd) + k * E3 * S, S,
                  transformed_out + k * blocks * S, S, false);
    winograd_output_tile(gs, S, PW, static_cast<const acc_t*>(transformed_out), R, W, S, /*accumulate=*/true,
                         gs + flat * S);
  } else {
    for (int64_t tap = 0; tap < 9; ++tap) {
      const int64_t shift = (tap / 3 - 1) * PW + (tap % 3 - 1);
      gemm<acc_t>(flat, S, E3, grad + (centre - shift) * E + E1, E, w.p(w.expand3x3) + tap * E3 * S, S, gs, S,
                  true);
    }
  }
  mask_where_not_positive(gs, buf.spad + centre * S, flat * S);
  const acc_t* spad = buf.spad;

  // Expand weight gradients: s^T times the masked gradient. s^T is built as [3][S][pixels], block kx holding
  // s^T shifted by kx - 1 pixels, so that the 3x3's three taps of one kernel row are one GEMM with M = 3 * S
  // (rows (kx, s), the layout of their gradients): 3 GEMMs instead of 9 with M = S.
  acc_t* spad_t3 = buf.spad_t;
  acc_t* spad_t = spad_t3 + S * padded_pixels;  // block kx = 1: s^T itself
  transpose(spad, padded_pixels, S, S, spad_t, padded_pixels);
  for (int64_t s = 0; s < S; ++s) {
    const acc_t* row = spad_t + s * padded_pixels;
    acc_t* left = spad_t3 + s * padded_pixels;            // [q] = row[q - 1]
    acc_t* right = spad_t3 + (2 * S + s) * padded_pixels;  // [q] = row[q + 1]
    left[0] = acc_t(0);
    std::copy_n(row, padded_pixels - 1, left + 1);
    std::copy_n(row + 1, padded_pixels - 1, right);
    right[padded_pixels - 1] = acc_t(0);
  }
  gemm<acc_t>(S, E1, flat, spad_t + centre, padded_pixels, grad + centre * E, E, parts.expand1x1, E1,
              parts.accumulate());
  for (int64_t ky = 0; ky < 3; ++ky)
    gemm<acc_t>(3 * S, E3, flat, spad_t3 + centre + (ky - 1) * PW, padded_pixels, grad + centre * E + E1, E,
                parts.expand3x3 + 3 * ky * S * E3, E3, parts.accumulate());

  // Dense squeeze gradient of the tile's own pixels -> squeeze bias/weight gradients and the input gradient.
  acc_t* gsd = buf.grad_squeeze_dense;
  for (int64_t i = 0; i < R; ++i) std::copy(gs + i * PW * S, gs + (i * PW + W) * S, gsd + i * W * S);
  acc_t* __restrict__ squeeze_bias = parts.squeeze_bias;
  for (int64_t p = 0; p < dense; ++p)
    for (int64_t s = 0; s < S; ++s) squeeze_bias[s] += gsd[p * S + s];
  // squeeze weight gradient [S, C] = gsd^T x: transposing the small squeeze gradient, not the input.
  acc_t* gsd_t = buf.grad_squeeze_t;
  transpose(gsd, dense, S, S, gsd_t, dense);
  gemm<acc_t>(S, C, dense, gsd_t, dense, buf.x_rows + (r0 - g0) * W * C, C, parts.squeeze, C, parts.accumulate());
  parts.fresh = false;  // all weight blocks written
  int64_t ld_direct = 0;
  if (acc_t* direct = sink.direct(n, r0, &ld_direct)) {  // the input gradient's rows as a GEMM output
    gemm<acc_t>(dense, C, S, gsd, S, w.p(w.squeeze), C, direct, ld_direct, false);
    return;
  }
  // NCHW rows: the planes [C, pixels] = squeeze^T x gsd^T straight into grad_input, no transposing sink
  // (in-process A/B on a Xeon, fwd+bwd b8: median 1.05x; computing the squeeze weight gradient from the planes
  // as well, to skip the input's transpose, was no faster: its GEMM has N = S)
  if (acc_t* planes = sink.planar_direct(n, r0, &ld_direct)) {
    gemm<acc_t>(C, dense, S, w.p(w.squeeze_t), S, gsd_t, dense, planes, ld_direct, false);
    return;
  }
  gemm<acc_t>(dense, C, S, gsd, S, w.p(w.squeeze), C, buf.grad_x, C, false);
  sink(n, r0, r1, static_cast<const acc_t*>(buf.grad_x));
}

// Runs tile(n, r0, r1, buffers) over every tile, in parallel.
template <typename acc_t, typename TileFn>
void fire_forward(const FireWeights<acc_t>& w, const TileGrid& g, const TileFn& tile) {
  at::parallel_for(0, g.tiles(), 1, [&](int64_t begin, int64_t end) {
    TileBuffers<acc_t> buf(g, w.C, w.S, w.E(), /*backward=*/false);
    for (int64_t t = begin; t < end; ++t) {
      int64_t n, r0, r1;
      g.tile(t, &n, &r0, &r1);
      tile(n, r0, r1, buf);
    }
    gemm_release();
  });
}

// Runs tile(n, r0, r1, buffers, parts) over every tile; weight gradients in the accumulation type are summed
// over a fixed number of chunks of tiles (independent of the thread count) and reduced in chunk order.
// Returns [C*S | S*E1 | 9*S*E3 | S | E1+E3] as one flat tensor (see GradParts for each block's orientation).
template <typename acc_t, typename TileFn>
at::Tensor fire_backward(const FireWeights<acc_t>& w, const TileGrid& g, const TileFn& tile) {
  constexpr int64_t kChunks = 32;
  const auto dtype = c10::CppTypeToScalarType<acc_t>::value;
  const int64_t size = GradParts<acc_t>::size(w.C, w.S, w.E1, w.E3);
  const int64_t chunks = std::min<int64_t>(kChunks, g.tiles());
  if (chunks == 0) return at::zeros({size}, at::TensorOptions().dtype(dtype));
  // A chunk's weight blocks are written by its first tile (GradParts::fresh); only its bias sums start at zero.
  at::Tensor partial = call_scratch<acc_t>(Scratch<acc_t>::kCallPartial, chunks * size);
  acc_t* partial_ptr = partial.mutable_data_ptr<acc_t>();
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    TileBuffers<acc_t> buf(g, w.C, w.S, w.E(), /*backward=*/true);
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      GradParts<acc_t> parts(partial_ptr + chunk * size, w.C, w.S, w.E1, w.E3);
      std::fill_n(parts.squeeze_bias, w.S + w.E(), acc_t(0));
      const int64_t t0 = chunk * g.tiles() / chunks, t1 = (chunk + 1) * g.tiles() / chunks;
      for (int64_t t = t0; t < t1; ++t) {
        int64_t n, r0, r1;
        g.tile(t, &n, &r0, &r1);
        tile(n, r0, r1, buf, parts);
      }
    }
    gemm_release();
  });
  // Chunk 0 + chunk 1 + ... in that order for every element, a block of elements at a time so the adds
  // vectorise.
  at::Tensor total = call_scratch<acc_t>(Scratch<acc_t>::kCallTotal, size);  // unpack_weight_grads copies out of it
  acc_t* total_ptr = total.mutable_data_ptr<acc_t>();
  at::parallel_for(0, size, 4096, [&](int64_t begin, int64_t end) {
    acc_t* __restrict__ out = total_ptr + begin;
    const int64_t count = end - begin;
    std::copy(partial_ptr + begin, partial_ptr + end, out);
    for (int64_t chunk = 1; chunk < chunks; ++chunk) {
      const acc_t* __restrict__ part = partial_ptr + chunk * size + begin;
      for (int64_t i = 0; i < count; ++i) out[i] += part[i];
    }
  });
  return total;
}

// unpack_weight_grads for weights in the accumulation type: every block goes into its own fresh tensor in one
// pass, the transposed ones through transpose() (float32: the SIMD transposes). The generic permuted copies of
// the fallback below took ~120 us of a batch-8 13x13 Fire backward for fire9's 3x3 gradient alone, on a Xeon.
template <typename T>
std::vector<at::Tensor> unpack_weight_grads_as(const at::Tensor& flat, const FireDims& d, bool planar) {
  const int64_t C = d.in_channels, S = d.squeeze, E1 = d.expand1x1, E3 = d.expand3x3, taps = E3 * S;
  const T* squeeze = flat.const_data_ptr<T>();
  const T* expand1x1 = squeeze + C * S;
  const T* expand3x3 = expand1x1 + S * E1;
  const T* squeeze_bias = expand3x3 + 9 * taps;
  const T* expand_bias = squeeze_bias + S;
  const auto options = flat.options();
  at::Tensor gsq = at::empty({S, C, 1, 1}, options), ge1 = at::empty({E1, S, 1, 1}, options),
             ge3 = at::empty({E3, S, 3, 3}, options);
  T* gsq_ptr = gsq.mutable_data_ptr<T>();
  T* ge1_ptr = ge1.mutable_data_ptr<T>();
  T* ge3_ptr = ge3.mutable_data_ptr<T>();
  if (planar) {  // squeeze [C, S], expand1x1 [E1, S]
    transpose(squeeze, C, S, S, gsq_ptr, C);
    std::copy_n(expand1x1, E1 * S, ge1_ptr);
  } else {  // squeeze [S, C], expand1x1 [S, E1]
    std::copy_n(squeeze, S * C, gsq_ptr);
    transpose(expand1x1, S, E1, E1, ge1_ptr, S);
  }
  // [E3, S, 3, 3] is [9, E3 * S] (planar's [9, E3, S]) transposed; pixel-major's [9, S, E3] is first made that
  // tap by tap
  at::Tensor by_tap;
  const T* rows = expand3x3;
  if (!planar) {
    by_tap = call_scratch<T>(Scratch<T>::kCallStaging, 9 * taps);
    T* dst = by_tap.mutable_data_ptr<T>();
    at::parallel_for(0, 9, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) transpose(expand3x3 + t * taps, S, E3, E3, dst + t * taps, S);
    });
    rows = dst;
  }
  at::parallel_for(0, taps, 4096, [&](int64_t c0, int64_t c1) {
    transpose(rows + c0, 9, c1 - c0, taps, ge3_ptr + c0 * 9, 9);
  });
  auto copy_of = [&](const T* src, int64_t count) {
    at::Tensor t = at::empty({count}, options);
    std::copy_n(src, count, t.mutable_data_ptr<T>());
    return t;
  };
  return {gsq, copy_of(squeeze_bias, S), ge1, copy_of(expand_bias, E1), ge3, copy_of(expand_bias + E1, E3)};
}

// The flat gradient of fire_backward as (grad_squeeze_weight, grad_squeeze_bias, grad_expand1x1_weight,
// grad_expand1x1_bias, grad_expand3x3_weight, grad_expand3x3_bias) in the weights' dtype and shapes.
// `planar`: the blocks are oriented as the planar tiles accumulate them (see GradParts).
inline std::vector<at::Tensor> unpack_weight_grads(const at::Tensor& flat, const FireDims& d, at::ScalarType dtype,
                                                   bool planar) {
  if (dtype == flat.scalar_type() && dtype == at::kFloat) return unpack_weight_grads_as<float>(flat, d, planar);
  if (dtype == flat.scalar_type() && dtype == at::kDouble) return unpack_weight_grads_as<double>(flat, d, planar);
  const int64_t C = d.in_channels, S = d.squeeze, E1 = d.expand1x1, E3 = d.expand3x3;
  int64_t offset = 0;
  auto take = [&](int64_t count) {
    at::Tensor part = flat.narrow(0, offset, count);
    offset += count;
    return part;
  };
  at::Tensor gsq = planar ? take(C * S).view({C, S}).t().reshape({S, C, 1, 1}) : take(C * S).view({S, C, 1, 1});
  at::Tensor ge1 = planar ? take(S * E1).view({E1, S, 1, 1}) : take(S * E1).view({S, E1}).t().reshape({E1, S, 1, 1});
  at::Tensor ge3 = planar ? take(9 * S * E3).view({3, 3, E3, S}).permute({2, 3, 0, 1})
                          : take(9 * S * E3).view({3, 3, S, E3}).permute({3, 2, 0, 1});
  at::Tensor gsb = take(S);
  at::Tensor gb = take(E1 + E3);
  // copy=true: the outputs must not alias the flat buffer or each other.
  auto out = [&](const at::Tensor& t) { return t.to(dtype, /*non_blocking=*/false, /*copy=*/true).contiguous(); };
  return {out(gsq), out(gsb), out(ge1), out(gb.narrow(0, 0, E1)), out(ge3), out(gb.narrow(0, E1, E3))};
}

// ------------------------------------------------------------------------------- loaders and stores

// Calls fn(c, h, w) for every channel c < C and pixel of rows [h0, h1) in an order that suits both sides of a
// pixel-major tile buffer <-> tensor copy: pixel by pixel when the tensor has channels innermost
// (channels_last), else in 16 x 16 (channel, pixel) blocks, so that a planar (NCHW) tensor is read and
// written a cache line at a time while the buffer side stays in L1.
template <typename Fn>
inline void for_each_element(const Strides4& st, int64_t C, int64_t h0, int64_t h1, int64_t W, const Fn& fn) {
  if (st.c <= st.w) {
    for (int64_t h = h0; h < h1; ++h)
      for (int64_t w = 0; w < W; ++w)
        for (int64_t c = 0; c < C; ++c) fn(c, h, w);
    return;
  }
  constexpr int64_t kBlock = 16;
  for (int64_t h = h0; h < h1; ++h)
    for (int64_t c0 = 0; c0 < C; c0 += kBlock)
      for (int64_t w0 = 0; w0 < W; w0 += kBlock) {
        const int64_t c1 = std::min(C, c0 + kBlock), w1 = std::min(W, w0 + kBlock);
        for (int64_t c = c0; c < c1; ++c)
          for (int64_t w = w0; w < w1; ++w) fn(c, h, w);
      }
}

// Rows [g0, g1) of a strided [N, C, H, W] tensor into dst[(g - g0) * W + w][c], converted to acc_t.
template <typename scalar_t, typename acc_t>
struct StridedRowLoader {
  const scalar_t* data;
  Strides4 st;
  int64_t C, W;
  // Rows from g0 on as planes [C, pixels] with leading dimension *ld, read in place: float32 NCHW rows only.
  const acc_t* planar_rows(int64_t n, int64_t g0, int64_t* ld) const {
    if constexpr (std::is_same_v<scalar_t, float> && std::is_same_v<acc_t, float>) {
      if (st.rows_packed(W)) {
        *ld = st.c;
        return data + n * st.n + g0 * W;
      }
    }
    return nullptr;
  }
  const acc_t* operator()(int64_t n, int64_t g0, int64_t g1, acc_t* dst) const {
    const scalar_t* base = data + n * st.n;
    if constexpr (std::is_same_v<scalar_t, acc_t>) {
      if (st.pixels_packed(C, W)) return base + g0 * st.h;  // already pixel-major rows
    }
    int64_t planes_ld = 0;
    if (const acc_t* planes = planar_rows(n, g0, &planes_ld)) {  // NCHW rows: the band is [C, pixels]
      transpose(planes, C, (g1 - g0) * W, planes_ld, dst, C);
      return dst;
    }
    for_each_element(st, C, g0, g1, W, [&](int64_t c, int64_t h, int64_t w) {
      dst[((h - g0) * W + w) * C + c] = static_cast<acc_t>(base[c * st.c + h * st.h + w * st.w]);
    });
    return dst;
  }
};

// grad_output * (output > 0) for rows [g0, g1) into dst[(g - g0) * padded_width + 1 + w][e].
template <typename scalar_t, typename acc_t>
struct MaskedGradLoader {
  const scalar_t* grad;
  const scalar_t* output;
  Strides4 gs, os;
  int64_t W;
  void operator()(int64_t n, int64_t g0, int64_t g1, acc_t* dst, int64_t padded_width, int64_t E) const {
    if (gs.c == 1 && os.c == 1) {  // channels_last: contiguous channel runs, vectorised
      if constexpr (std::is_same_v<scalar_t, float> && std::is_same_v<acc_t, float>) {
        for (int64_t h = g0; h < g1; ++h)
          relu_mask_rows(dst + ((h - g0) * padded_width + 1) * E, E, grad + gs.at(n, 0, h, 0), gs.w,
                         output + os.at(n, 0, h, 0), os.w, W, E);
        return;
      }
      for (int64_t h = g0; h < g1; ++h)
        for (int64_t w = 0; w < W; ++w) {
          const scalar_t* __restrict__ g_px = grad + gs.at(n, 0, h, w);
          const scalar_t* __restrict__ o_px = output + os.at(n, 0, h, w);
          acc_t* __restrict__ d = dst + ((h - g0) * padded_width + 1 + w) * E;
          for (int64_t e = 0; e < E; ++e) {  // both loads unconditional, so the select vectorises
            const acc_t g = static_cast<acc_t>(g_px[e]);
            d[e] = static_cast<acc_t>(o_px[e]) > acc_t(0) ? g : acc_t(0);
          }
        }
      return;
    }
    if constexpr (std::is_same_v<scalar_t, float> && std::is_same_v<acc_t, float>) {
      if (gs.rows_packed(W) && os.rows_packed(W)) {  // NCHW
        const int64_t pixels = (g1 - g0) * W;
        thread_local std::vector<float> masked;
        masked.resize(pixels * E);
        // masked in the planes (each channel's band is one contiguous run), then transposed row by row into
        // place: a third fewer passes than transposing the gradient and the output and masking pixel-major
        relu_mask_rows(masked.data(), pixels, grad + n * gs.n + g0 * W, gs.c, output + n * os.n + g0 * W, os.c, E,
                       pixels);
        for (int64_t h = g0; h < g1; ++h)
          planar_to_pixel_major(dst + ((h - g0) * padded_width + 1) * E, E, masked.data() + (h - g0) * W, pixels, W,
                                E);
        return;
      }
    }
    for_each_element(gs, E, g0, g1, W, [&](int64_t e, int64_t h, int64_t w) {
      const bool active = static_cast<acc_t>(output[os.at(n, e, h, w)]) > acc_t(0);
      dst[((h - g0) * padded_width + 1 + w) * E + e] =
          active ? static_cast<acc_t>(grad[gs.at(n, e, h, w)]) : acc_t(0);
    });
  }
};

// relu(acc + bias) into the output's channel slices (expand1x1 then expand3x3), any strides and dtype.
template <typename scalar_t, typename acc_t>
struct ActivationStore {
  scalar_t* data;
  Strides4 st;
  const acc_t* bias;  // [E]
  int64_t E, W;
  void operator()(int64_t n, int64_t r0, int64_t r1, const acc_t* acc, int64_t padded_width) const {
    scalar_t* base = data + n * st.n;
    if (st.c == 1) {  // channels_last: contiguous channel runs, vectorised
      if constexpr (std::is_same_v<scalar_t, float> && std::is_same_v<acc_t, float>) {
        for (int64_t h = r0; h < r1; ++h)
          bias_relu_rows(base + h * st.h, st.w, acc + (h - r0) * padded_width * E, E, bias, W, E);
        return;
      }
      for (int64_t h = r0; h < r1; ++h)
        for (int64_t w = 0; w < W; ++w) {
          const acc_t* a = acc + ((h - r0) * padded_width + w) * E;
          scalar_t* d = base + h * st.h + w * st.w;
          for (int64_t e = 0; e < E; ++e) d[e] = static_cast<scalar_t>(std::max(a[e] + bias[e], acc_t(0)));
        }
      return;
    }
    if constexpr (std::is_same_v<scalar_t, float> && std::is_same_v<acc_t, float>) {
      if (st.rows_packed(W) && padded_width == W) {  // NCHW rows: transposed into [E, pixels] planes
        bias_relu_to_planar(base + r0 * W, st.c, acc, E, bias, (r1 - r0) * W, E);
        return;
      }
    }
    for_each_element(st, E, r0, r1, W, [&](int64_t e, int64_t h, int64_t w) {
      const acc_t value = acc[((h - r0) * padded_width + w) * E + e] + bias[e];
      base[e * st.c + h * st.h + w * st.w] = static_cast<scalar_t>(std::max(value, acc_t(0)));
    });
  }
};

// Rows [r0, r1) of [pixels, C] into a strided [N, C, H, W] tensor.
template <typename scalar_t, typename acc_t>
struct StridedRowSink {
  scalar_t* data;
  Strides4 st;
  int64_t C, W;
  // Where rows from r0 on can be written as [pixels, C] with leading dimension *ld (a channels_last tensor of
  // the accumulation type), else nullptr.
  acc_t* direct(int64_t n, int64_t r0, int64_t* ld) const {
    if constexpr (std::is_same_v<scalar_t, acc_t>) {
      if (st.pixels_packed(C, W)) {
        *ld = C;
        return data + n * st.n + r0 * st.h;
      }
    }
    return nullptr;
  }
  // Where rows from r0 on can be written as planes [C, pixels] with leading dimension *ld (float32 NCHW rows),
  // else nullptr.
  acc_t* planar_direct(int64_t n, int64_t r0, int64_t* ld) const {
    if constexpr (std::is_same_v<scalar_t, float> && std::is_same_v<acc_t, float>) {
      if (st.rows_packed(W)) {
        *ld = st.c;
        return data + n * st.n + r0 * W;
      }
    }
    return nullptr;
  }
  void operator()(int64_t n, int64_t r0, int64_t r1, const acc_t* src) const {
    scalar_t* base = data + n * st.n;
    if (st.c == 1) {
      for (int64_t h = r0; h < r1; ++h)
        for (int64_t w = 0; w < W; ++w) {
          const acc_t* s = src + ((h - r0) * W + w) * C;
          scalar_t* d = base + h * st.h + w * st.w;
          for (int64_t c = 0; c < C; ++c) d[c] = static_cast<scalar_t>(s[c]);
        }
      return;
    }
    if constexpr (std::is_same_v<scalar_t, float> && std::is_same_v<acc_t, float>) {
      if (st.rows_packed(W)) {  // NCHW rows: transposed into [C, pixels] planes
        pixel_major_to_planar(base + r0 * W, st.c, src, C, (r1 - r0) * W, C);
        return;
      }
    }
    for_each_element(st, C, r0, r1, W, [&](int64_t c, int64_t h, int64_t w) {
      base[c * st.c + h * st.h + w * st.w] = static_cast<scalar_t>(src[((h - r0) * W + w) * C + c]);
    });
  }
};

}  // namespace cpu
}  // namespace squeezeae
