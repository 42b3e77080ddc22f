#include "cpu/epilogues.h"
#include "cpu/clones.h"
#include "cpu/winograd.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include <c10/util/Exception.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define SQUEEZEAE_HAVE_SIMD_PATHS 1
#endif


namespace squeezeae {
namespace cpu {

namespace {

// dst[r][c] = max(src[r][c] + bias[kPerRow ? r : c], 0); inlined into each clone of its two callers.
template <bool kPerRow>
inline void bias_relu_2d(float* dst, int64_t dst_pitch, const float* src, int64_t src_pitch, const float* bias,
                         int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    float* __restrict__ d = dst + r * dst_pitch;
    const float* __restrict__ s = src + r * src_pitch;
    if constexpr (kPerRow) {
      const float b = bias[r];
      for (int64_t c = 0; c < cols; ++c) d[c] = std::max(s[c] + b, 0.0f);
    } else {
      for (int64_t c = 0; c < cols; ++c) d[c] = std::max(s[c] + bias[c], 0.0f);
    }
  }
}

}  // namespace

SQUEEZEAE_CLONES
void bias_relu_rows(float* dst, int64_t dst_pitch, const float* src, int64_t src_pitch, const float* bias,
                    int64_t rows, int64_t cols) {
  bias_relu_2d<false>(dst, dst_pitch, src, src_pitch, bias, rows, cols);
}

SQUEEZEAE_CLONES
void bias_relu_planes(float* dst, int64_t dst_ld, const float* src, int64_t src_ld, const float* bias,
                      int64_t planes, int64_t count) {
  bias_relu_2d<true>(dst, dst_ld, src, src_ld, bias, planes, count);
}

SQUEEZEAE_CLONES
bool all_finite(const float* values, int64_t count) {
  uint32_t non_finite = 0;  // an integer OR vectorises without reassociating float sums
  for (int64_t i = 0; i < count; ++i) {
    uint32_t bits;
    std::memcpy(&bits, values + i, sizeof(bits));
    non_finite |= static_cast<uint32_t>((bits & 0x7F800000u) == 0x7F800000u);
  }
  return non_finite == 0;
}

SQUEEZEAE_CLONES
void winograd_weight_transform(float* U, const float* taps, int64_t count, int64_t stride, bool flip) {
  winograd_weight_transform_impl(U, taps, count, stride, flip);
}

SQUEEZEAE_CLONES
void winograd_input_tile(float* V, const float* padded, int64_t ld, int64_t R, int64_t W, int64_t PW, int64_t S) {
  winograd_input_tile_impl(V, padded, ld, R, W, PW, S);
}

SQUEEZEAE_CLONES
void winograd_output_tile(float* out, int64_t ld, int64_t pitch, const float* M, int64_t R, int64_t W, int64_t E3,
                          bool accumulate, float* discard) {
  winograd_output_tile_impl(out, ld, pitch, M, R, W, E3, accumulate, discard);
}

SQUEEZEAE_CLONES
void relu_mask_rows(float* dst, int64_t dst_pitch, const float* grad, int64_t grad_pitch, const float* out,
                    int64_t out_pitch, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    float* __restrict__ d = dst + r * dst_pitch;
    const float* __restrict__ g = grad + r * grad_pitch;
    const float* __restrict__ o = out + r * out_pitch;
    for (int64_t c = 0; c < cols; ++c) d[c] = o[c] > 0.0f ? g[c] : 0.0f;
  }
}

namespace {

// Scalar paths (and the edges of the SIMD blocks): dst[c * dst_ld + p] = f(src[p * src_ld + c]), f =
// max(. + bias[c], 0) with kBiasRelu, else the identity.
template <bool kBiasRelu>
void to_planar_scalar(float* dst, int64_t dst_ld, const float* src, int64_t src_ld, const float* bias,
                      int64_t pixels, int64_t channels) {
  for (int64_t c = 0; c < channels; ++c)
    for (int64_t p = 0; p < pixels; ++p) {
      const float v = src[p * src_ld + c];
      dst[c * dst_ld + p] = kBiasRelu ? std::max(v + bias[c], 0.0f) : v;
    }
}

// float -> bfloat16 bits, rounded to nearest even; NaN stays a (quiet) NaN.
inline uint16_t bf16_bits(float v) {
  uint32_t u;
  std::memcpy(&u, &v, sizeof(u));
  return static_cast<uint16_t>(v != v ? 0x7FC0u : (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

void bias_relu_rows_bf16_scalar(uint16_t* dst, int64_t dst_pitch, const float* src, int64_t src_pitch,
                                const float* bias, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      dst[r * dst_pitch + c] = bf16_bits(std::max(src[r * src_pitch + c] + bias[c], 0.0f));
}

// dst_rows: see planar_to_pixel_major (nullptr: pixel p's row is p).
inline int64_t pixel_row(const int64_t* dst_rows, int64_t p) { return dst_rows == nullptr ? p : dst_rows[p]; }

// bias: nullptr for the plain transpose, else max(. + bias[c], 0) on the way (bias_relu_to_pixel_major).
void planar_to_pixel_major_scalar(float* dst, int64_t dst_ld, const float* src, int64_t src_ld, int64_t pixels,
                                  int64_t channels, const int64_t* dst_rows, const float* bias) {
  for (int64_t p = 0; p < pixels; ++p) {
    float* __restrict__ row = dst + pixel_row(dst_rows, p) * dst_ld;
    if (bias == nullptr) {
      for (int64_t c = 0; c < channels; ++c) row[c] = src[c * src_ld + p];
    } else {
      for (int64_t c = 0; c < channels; ++c) row[c] = std::max(src[c * src_ld + p] + bias[c], 0.0f);
    }
  }
}

// The pixels past the last full SIMD block (p_full), then the channels past the last full block (c_full).
void planar_to_pixel_major_edges(float* dst, int64_t dst_ld, const float* src, int64_t src_ld, int64_t pixels,
                                 int64_t channels, const int64_t* dst_rows, const float* bias, int64_t p_full,
                                 int64_t c_full) {
  if (dst_rows == nullptr)
    planar_to_pixel_major_scalar(dst + p_full * dst_ld, dst_ld, src + p_full, src_ld, pixels - p_full, c_full,
                                 nullptr, bias);
  else
    planar_to_pixel_major_scalar(dst, dst_ld, src + p_full, src_ld, pixels - p_full, c_full, dst_rows + p_full,
                                 bias);
  planar_to_pixel_major_scalar(dst + c_full, dst_ld, src + c_full * src_ld, src_ld, pixels, channels - c_full,
                               dst_rows, bias == nullptr ? nullptr : bias + c_full);
}

#if defined(SQUEEZEAE_HAVE_SIMD_PATHS)
// GCC 12 reports its own _mm512_undefined_ps() inside the intrinsics as maybe-uninitialized.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// r[i] = row i of a 16 x 16 block; on return r[j] holds column j.
__attribute__((target("avx512f"))) inline void transpose16(__m512 r[16]) {
  __m512 t[16], u[16];
  for (int i = 0; i < 8; ++i) {  // 32-bit interleave of row pairs, within each 128-bit lane
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {  // 64-bit interleave: u[4i + k], lane L = column k + 4L of rows 4i..4i+3
    const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
    const __m512d c = _mm512_castps_pd(t[4 * i + 2]), d = _mm512_castps_pd(t[4 * i + 3]);
    u[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    u[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    u[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    u[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
  for (int k = 0; k < 4; ++k) {  // gather lane L of the four row groups into column k + 4L
    const __m512 v0 = _mm512_shuffle_f32x4(u[k], u[4 + k], 0x44), v1 = _mm512_shuffle_f32x4(u[k], u[4 + k], 0xEE);
    const __m512 w0 = _mm512_shuffle_f32x4(u[8 + k], u[12 + k], 0x44);
    const __m512 w1 = _mm512_shuffle_f32x4(u[8 + k], u[12 + k], 0xEE);
    r[k] = _mm512_shuffle_f32x4(v0, w0, 0x88);
    r[k + 4] = _mm512_shuffle_f32x4(v0, w0, 0xDD);
    r[k + 8] = _mm512_shuffle_f32x4(v1, w1, 0x88);
    r[k + 12] = _mm512_shuffle_f32x4(v1, w1, 0xDD);
  }
}

// dst[c * dst_ld + p] = f(src[p * src_ld + c]), f = max(. + bias[c], 0) with kBiasRelu, else the identity.
template <bool kBiasRelu>
__attribute__((target("avx512f"))) void to_planar_avx512(float* dst, int64_t dst_ld, const float* src,
                                                         int64_t src_ld, const float* bias, int64_t pixels,
                                                         int64_t channels) {
  const int64_t p_full = pixels / 16 * 16, c_full = channels / 16 * 16;
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t c0 = 0; c0 < c_full; c0 += 16) {
    const __m512 b = kBiasRelu ? _mm512_loadu_ps(bias + c0) : zero;
    for (int64_t p0 = 0; p0 < p_full; p0 += 16) {
      __m512 r[16];
      for (int i = 0; i < 16; ++i) {
        r[i] = _mm512_loadu_ps(src + (p0 + i) * src_ld + c0);
        if (kBiasRelu) r[i] = _mm512_max_ps(zero, _mm512_add_ps(r[i], b));  // max(0, x) keeps a NaN x
      }
      transpose16(r);
      for (int i = 0; i < 16; ++i) _mm512_storeu_ps(dst + (c0 + i) * dst_ld + p0, r[i]);
    }
  }
  // edges: the pixels past the last full block, then the channels past the last full block
  to_planar_scalar<kBiasRelu>(dst + p_full, dst_ld, src + p_full * src_ld, src_ld, bias, pixels - p_full, c_full);
  to_planar_scalar<kBiasRelu>(dst + c_full * dst_ld, dst_ld, src + c_full, src_ld, kBiasRelu ? bias + c_full : bias,
                              pixels, channels - c_full);
}

__attribute__((target("avx512f"))) void planar_to_pixel_major_avx512(float* dst, int64_t dst_ld, const float* src,
                                                                     int64_t src_ld, int64_t pixels,
                                                                     int64_t channels, const int64_t* dst_rows,
                                                                     const float* bias) {
  const int64_t p_full = pixels / 16 * 16, c_full = channels / 16 * 16;
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t p0 = 0; p0 < p_full; p0 += 16) {
    float* rows[16];
    for (int i = 0; i < 16; ++i) rows[i] = dst + pixel_row(dst_rows, p0 + i) * dst_ld;
    for (int64_t c0 = 0; c0 < c_full; c0 += 16) {
      __m512 r[16];
      for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + (c0 + i) * src_ld + p0);
      transpose16(r);
      if (bias != nullptr) {
        const __m512 b = _mm512_loadu_ps(bias + c0);
        for (int i = 0; i < 16; ++i) r[i] = _mm512_max_ps(zero, _mm512_add_ps(r[i], b));  // keeps a NaN
      }
      for (int i = 0; i < 16; ++i) _mm512_storeu_ps(rows[i] + c0, r[i]);
    }
  }
  planar_to_pixel_major_edges(dst, dst_ld, src, src_ld, pixels, channels, dst_rows, bias, p_full, c_full);
}

// 16 channels at a time: bias, ReLU, the rounding of bf16_bits in integer lanes, then a 32 -> 16-bit narrowing
// store (a baseline loop ran ~20% of a batch-8 13x13 bfloat16 Fire).
__attribute__((target("avx512f"))) void bias_relu_rows_bf16_avx512(uint16_t* dst, int64_t dst_pitch, const float* src,
                                                                   int64_t src_pitch, const float* bias, int64_t rows,
                                                                   int64_t cols) {
  const int64_t c_full = cols / 16 * 16;
  const __m512 zero = _mm512_setzero_ps();
  const __m512i round = _mm512_set1_epi32(0x7FFF), one = _mm512_set1_epi32(1), nan = _mm512_set1_epi32(0x7FC0);
  for (int64_t r = 0; r < rows; ++r) {
    uint16_t* d = dst + r * dst_pitch;
    const float* s = src + r * src_pitch;
    for (int64_t c = 0; c < c_full; c += 16) {
      // max(0, x): a NaN x comes through (the second operand is returned when either is NaN), as in the scalar
      // loop and torch.relu
      const __m512 v = _mm512_max_ps(zero, _mm512_add_ps(_mm512_loadu_ps(s + c), _mm512_loadu_ps(bias + c)));
      const __m512i u = _mm512_castps_si512(v);
      __m512i rounded = _mm512_add_epi32(_mm512_add_epi32(u, round), _mm512_and_si512(_mm512_srli_epi32(u, 16), one));
      rounded = _mm512_srli_epi32(rounded, 16);
      rounded = _mm512_mask_mov_epi32(rounded, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), nan);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + c), _mm512_cvtepi32_epi16(rounded));
    }
  }
  bias_relu_rows_bf16_scalar(dst + c_full, dst_pitch, src + c_full, src_pitch, bias + c_full, rows, cols - c_full);
}

// r[i] = row i of an 8 x 8 block; on return r[j] holds column j.
__attribute__((target("avx2"))) inline void transpose8(__m256 r[8]) {
  __m256 t[8], u[8];
  for (int i = 0; i < 4; ++i) {  // 32-bit interleave of row pairs, within each 128-bit lane
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 2; ++i) {  // 64-bit interleave: u[4i + k], lane L = column k + 4L of rows 4i..4i+3
    u[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
    u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
    u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
  }
  for (int k = 0; k < 4; ++k) {  // lane 0 of both row groups is column k, lane 1 column k + 4
    r[k] = _mm256_permute2f128_ps(u[k], u[4 + k], 0x20);
    r[k + 4] = _mm256_permute2f128_ps(u[k], u[4 + k], 0x31);
  }
}

template <bool kBiasRelu>
__attribute__((target("avx2"))) void to_planar_avx2(float* dst, int64_t dst_ld, const float* src, int64_t src_ld,
                                                    const float* bias, int64_t pixels, int64_t channels) {
  const int64_t p_full = pixels / 8 * 8, c_full = channels / 8 * 8;
  const __m256 zero = _mm256_setzero_ps();
  for (int64_t c0 = 0; c0 < c_full; c0 += 8) {
    const __m256 b = kBiasRelu ? _mm256_loadu_ps(bias + c0) : zero;
    for (int64_t p0 = 0; p0 < p_full; p0 += 8) {
      __m256 r[8];
      for (int i = 0; i < 8; ++i) {
        r[i] = _mm256_loadu_ps(src + (p0 + i) * src_ld + c0);
        if (kBiasRelu) r[i] = _mm256_max_ps(zero, _mm256_add_ps(r[i], b));  // max(0, x) keeps a NaN x
      }
      transpose8(r);
      for (int i = 0; i < 8; ++i) _mm256_storeu_ps(dst + (c0 + i) * dst_ld + p0, r[i]);
    }
  }
  to_planar_scalar<kBiasRelu>(dst + p_full, dst_ld, src + p_full * src_ld, src_ld, bias, pixels - p_full, c_full);
  to_planar_scalar<kBiasRelu>(dst + c_full * dst_ld, dst_ld, src + c_full, src_ld, kBiasRelu ? bias + c_full : bias,
                              pixels, channels - c_full);
}

__attribute__((target("avx2"))) void planar_to_pixel_major_avx2(float* dst, int64_t dst_ld, const float* src,
                                                                 int64_t src_ld, int64_t pixels, int64_t channels,
                                                                 const int64_t* dst_rows, const float* bias) {
  const int64_t p_full = pixels / 8 * 8, c_full = channels / 8 * 8;
  const __m256 zero = _mm256_setzero_ps();
  for (int64_t p0 = 0; p0 < p_full; p0 += 8) {
    float* rows[8];
    for (int i = 0; i < 8; ++i) rows[i] = dst + pixel_row(dst_rows, p0 + i) * dst_ld;
    for (int64_t c0 = 0; c0 < c_full; c0 += 8) {
      __m256 r[8];
      for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + (c0 + i) * src_ld + p0);
      transpose8(r);
      if (bias != nullptr) {
        const __m256 b = _mm256_loadu_ps(bias + c0);
        for (int i = 0; i < 8; ++i) r[i] = _mm256_max_ps(zero, _mm256_add_ps(r[i], b));  // keeps a NaN
      }
      for (int i = 0; i < 8; ++i) _mm256_storeu_ps(rows[i] + c0, r[i]);
    }
  }
  planar_to_pixel_major_edges(dst, dst_ld, src, src_ld, pixels, channels, dst_rows, bias, p_full, c_full);
}

enum class Isa { kScalar, kAvx2, kAvx512 };

// The widest SIMD paths (transposes, scatters, gathers) this CPU runs; SQUEEZEAE_CPU_ISA=avx2 or =scalar caps
// them (to test the narrower paths on a wider machine). Any other value is reported once and caps them at
// scalar (slow, never wrong).
Isa simd_isa() {
  static const Isa isa = [] {
    const char* cap = std::getenv("SQUEEZEAE_CPU_ISA");
    const bool allow512 = cap == nullptr || std::strcmp(cap, "avx512") == 0;
    const bool allow2 = allow512 || std::strcmp(cap, "avx2") == 0;
    if (cap != nullptr && !allow2 && std::strcmp(cap, "scalar") != 0)
      TORCH_WARN("SQUEEZEAE_CPU_ISA=", cap, " is not one of avx512, avx2, scalar: running the scalar CPU paths");
    if (allow512 && __builtin_cpu_supports("avx512f")) return Isa::kAvx512;
    if (allow2 && __builtin_cpu_supports("avx2")) return Isa::kAvx2;
    return Isa::kScalar;
  }();
  return isa;
}
#pragma GCC diagnostic pop
#endif

}  // namespace

template <bool kBiasRelu>
void to_planar(float* dst, int64_t dst_ld, const float* src, int64_t src_ld, const float* bias, int64_t pixels,
               int64_t channels) {
#if defined(SQUEEZEAE_HAVE_SIMD_PATHS)
  switch (simd_isa()) {
    case Isa::kAvx512: return to_planar_avx512<kBiasRelu>(dst, dst_ld, src, src_ld, bias, pixels, channels);
    case Isa::kAvx2: return to_planar_avx2<kBiasRelu>(dst, dst_ld, src, src_ld, bias, pixels, channels);
    case Isa::kScalar: break;
  }
#endif
  to_planar_scalar<kBiasRelu>(dst, dst_ld, src, src_ld, bias, pixels, channels);
}

void bias_relu_to_planar(float* dst, int64_t dst_ld, const float* src, int64_t src_ld, const float* bias,
                         int64_t pixels, int64_t channels) {
  to_planar<true>(dst, dst_ld, src, src_ld, bias, pixels, channels);
}

void pixel_major_to_planar(float* dst, int64_t dst_ld, const float* src, int64_t src_ld, int64_t pixels,
                           int64_t channels) {
  to_planar<false>(dst, dst_ld, src, src_ld, nullptr, pixels, channels);
}

namespace {
void to_pixel_major(float* dst, int64_t dst_ld, const float* src, int64_t src_ld, int64_t pixels, int64_t channels,
                    const int64_t* dst_rows, const float* bias) {
#if defined(SQUEEZEAE_HAVE_SIMD_PATHS)
  switch (simd_isa()) {
    case Isa::kAvx512:
      return planar_to_pixel_major_avx512(dst, dst_ld, src, src_ld, pixels, channels, dst_rows, bias);
    case Isa::kAvx2: return planar_to_pixel_major_avx2(dst, dst_ld, src, src_ld, pixels, channels, dst_rows, bias);
    case Isa::kScalar: break;
  }
#endif
  planar_to_pixel_major_scalar(dst, dst_ld, src, src_ld, pixels, channels, dst_rows, bias);
}
}  // namespace

void planar_to_pixel_major(float* dst, int64_t dst_ld, const float* src, int64_t src_ld, int64_t pixels,
                           int64_t channels, const int64_t* dst_rows) {
  to_pixel_major(dst, dst_ld, src, src_ld, pixels, channels, dst_rows, nullptr);
}

void bias_relu_to_pixel_major(float* dst, int64_t dst_ld, const float* src, int64_t src_ld, const float* bias,
                              int64_t pixels, int64_t channels) {
  to_pixel_major(dst, dst_ld, src, src_ld, pixels, channels, nullptr, bias);
}

void bias_relu_rows_bf16(uint16_t* dst, int64_t dst_pitch, const float* src, int64_t src_pitch, const float* bias,
                         int64_t rows, int64_t cols) {
#if defined(SQUEEZEAE_HAVE_SIMD_PATHS)
  if (simd_isa() == Isa::kAvx512) return bias_relu_rows_bf16_avx512(dst, dst_pitch, src, src_pitch, bias, rows, cols);
#endif
  bias_relu_rows_bf16_scalar(dst, dst_pitch, src, src_pitch, bias, rows, cols);
}

int transpose_simd_width() {
#if defined(SQUEEZEAE_HAVE_SIMD_PATHS)
  switch (simd_isa()) {
    case Isa::kAvx512: return 16;
    case Isa::kAvx2: return 8;
    case Isa::kScalar: break;
  }
#endif
  return 1;
}

namespace {

bool scatter_in_range_scalar(float* dst, int64_t pos_stride, int64_t lane_stride, const int64_t* idx,
                             const float* src, int64_t count, int64_t lo, int64_t hi, int64_t plane) {
  bool bad = false;
  const uint64_t span = static_cast<uint64_t>(hi - lo);
  for (int64_t i = 0; i < count; ++i) {
    const int64_t index = idx[i];
    bad |= static_cast<uint64_t>(index) >= static_cast<uint64_t>(plane);
    const uint64_t rel = static_cast<uint64_t>(index - lo);
    if (rel < span) dst[static_cast<int64_t>(rel) * pos_stride + i * lane_stride] = src[i];
  }
  return bad;
}

bool gather_in_range_scalar(float* dst, const int64_t* idx, const float* src, int64_t count, int64_t pos_stride,
                            int64_t lane_stride, int64_t lo, int64_t hi) {
  const uint64_t span = static_cast<uint64_t>(hi - lo);
  bool outside = false;
  for (int64_t i = 0; i < count; ++i) {
    const uint64_t rel = static_cast<uint64_t>(idx[i] - lo);
    if (rel < span)
      dst[i] = src[static_cast<int64_t>(rel) * pos_stride + i * lane_stride];
    else
      outside = true;
  }
  return outside;
}

#if defined(SQUEEZEAE_HAVE_SIMD_PATHS)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // as above: inside GCC 12's own intrinsics
// Runs of 8 consecutive elements i of scatter_in_range / gather_in_range: rel = idx - lo is in range where it
// is below hi - lo (unsigned), and the element sits at rel * pos_stride + i * lane_stride, a 32 x 32 -> 64-bit
// product (the callers keep plane and pos_stride below 2^31).
struct Runs8 {
  __m512i lo, span, stride, lane, step;
};

__attribute__((target("avx512f"))) inline Runs8 runs8(int64_t lo, int64_t hi, int64_t pos_stride, int64_t ls) {
  return {_mm512_set1_epi64(lo), _mm512_set1_epi64(hi - lo), _mm512_set1_epi64(pos_stride),
          _mm512_setr_epi64(0, ls, 2 * ls, 3 * ls, 4 * ls, 5 * ls, 6 * ls, 7 * ls), _mm512_set1_epi64(8 * ls)};
}

__attribute__((target("avx512f"))) inline __m512i runs8_offsets(const Runs8& r, __m512i rel) {
  return _mm512_add_epi64(_mm512_mul_epu32(rel, r.stride), r.lane);
}

// 8 indices per compare; the elements in range go out in one masked scatter (lanes naming the same address
// are written in lane order, so the later element wins, as in the scalar loop), a group with none costs a
// load and two compares.
__attribute__((target("avx512f"))) bool scatter_in_range_avx512(float* dst, int64_t pos_stride, int64_t lane_stride,
                                                              const int64_t* idx, const float* src, int64_t count,
                                                              int64_t lo, int64_t hi, int64_t plane) {
  Runs8 r = runs8(lo, hi, pos_stride, lane_stride);
  const __m512i vplane = _mm512_set1_epi64(plane);
  __mmask8 bad = 0;
  int64_t i = 0;
  for (; i + 8 <= count; i += 8, r.lane = _mm512_add_epi64(r.lane, r.step)) {
    const __m512i v = _mm512_loadu_si512(idx + i);
    bad |= _mm512_cmpge_epu64_mask(v, vplane);
    const __m512i rel = _mm512_sub_epi64(v, r.lo);
    const __mmask8 in = _mm512_cmplt_epu64_mask(rel, r.span);
    if (in == 0) continue;
    _mm512_mask_i64scatter_ps(dst, in, runs8_offsets(r, rel), _mm256_loadu_ps(src + i), 4);
  }
  const bool tail_bad = scatter_in_range_scalar(dst + i * lane_stride, pos_stride, lane_stride, idx + i, src + i,
                                                count - i, lo, hi, plane);
  return bad != 0 || tail_bad;
}

// The matching gather: a masked gather and a masked store, so the elements out of range (another tile's) are
// neither read nor written.
__attribute__((target("avx512f"))) bool gather_in_range_avx512(float* dst, const int64_t* idx, const float* src,
                                                             int64_t count, int64_t pos_stride, int64_t lane_stride,
                                                             int64_t lo, int64_t hi) {
  Runs8 r = runs8(lo, hi, pos_stride, lane_stride);
  __mmask8 outside = 0;
  int64_t i = 0;
  for (; i + 8 <= count; i += 8, r.lane = _mm512_add_epi64(r.lane, r.step)) {
    const __m512i rel = _mm512_sub_epi64(_mm512_loadu_si512(idx + i), r.lo);
    const __mmask8 in = _mm512_cmplt_epu64_mask(rel, r.span);
    outside |= static_cast<__mmask8>(~in);
    if (in == 0) continue;
    const __m256 values = _mm512_mask_i64gather_ps(_mm256_setzero_ps(), in, runs8_offsets(r, rel), src, 4);
    _mm512_mask_storeu_ps(dst + i, static_cast<__mmask16>(in), _mm512_castps256_ps512(values));
  }
  const bool tail_outside = gather_in_range_scalar(dst + i, idx + i, src + i * lane_stride, count - i, pos_stride,
                                                   lane_stride, lo, hi);
  return outside != 0 || tail_outside;
}

// 4 indices per compare, a group with none in range skipped; the rest element by element (AVX2 has no
// scatter).
__attribute__((target("avx2"))) bool scatter_in_range_avx2(float* dst, int64_t pos_stride, int64_t lane_stride,
                                                         const int64_t* idx, const float* src, int64_t count,
                                                         int64_t lo, int64_t hi, int64_t plane) {
  // indices are < 2^62 in practice but need not be: compare as signed after checking the sign separately
  const __m256i vlo = _mm256_set1_epi64x(lo), vhi = _mm256_set1_epi64x(hi), vplane = _mm256_set1_epi64x(plane);
  const __m256i zero = _mm256_setzero_si256();
  __m256i bad = zero;
  int64_t i = 0;
  for (; i + 4 <= count; i += 4) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(idx + i));
    // bad: v < 0 or v >= plane (v > plane - 1)
    bad = _mm256_or_si256(bad, _mm256_or_si256(_mm256_cmpgt_epi64(zero, v),
                                               _mm256_cmpgt_epi64(v, _mm256_sub_epi64(vplane, _mm256_set1_epi64x(1)))));
    // in range: lo <= v < hi, i.e. not (lo > v) and (hi > v)
    const __m256i in = _mm256_andnot_si256(_mm256_cmpgt_epi64(vlo, v), _mm256_cmpgt_epi64(vhi, v));
    int mask = _mm256_movemask_pd(_mm256_castsi256_pd(in));
    for (; mask != 0; mask &= mask - 1) {
      const int j = __builtin_ctz(mask);
      dst[(idx[i + j] - lo) * pos_stride + (i + j) * lane_stride] = src[i + j];
    }
  }
  const bool any_bad = _mm256_movemask_pd(_mm256_castsi256_pd(bad)) != 0;
  const bool tail_bad = scatter_in_range_scalar(dst + i * lane_stride, pos_stride, lane_stride, idx + i, src + i,
                                                count - i, lo, hi, plane);
  return any_bad || tail_bad;
}
#pragma GCC diagnostic pop
#endif

// The AVX-512 offsets are 32 x 32 -> 64-bit products.
bool small_offsets(int64_t plane, int64_t pos_stride) {
  return plane < (int64_t(1) << 31) && pos_stride >= 0 && pos_stride < (int64_t(1) << 31);
}

}  // namespace

bool scatter_in_range(float* dst, int64_t pos_stride, int64_t lane_stride, const int64_t* idx, const float* src,
                      int64_t count, int64_t lo, int64_t hi, int64_t plane) {
#if defined(SQUEEZEAE_HAVE_SIMD_PATHS)
  switch (simd_isa()) {
    case Isa::kAvx512:
      if (small_offsets(plane, pos_stride) && lane_stride >= 0)
        return scatter_in_range_avx512(dst, pos_stride, lane_stride, idx, src, count, lo, hi, plane);
      break;
    case Isa::kAvx2: return scatter_in_range_avx2(dst, pos_stride, lane_stride, idx, src, count, lo, hi, plane);
    case Isa::kScalar: break;
  }
#endif
  return scatter_in_range_scalar(dst, pos_stride, lane_stride, idx, src, count, lo, hi, plane);
}

bool gather_in_range(float* dst, const int64_t* idx, const float* src, int64_t count, int64_t pos_stride,
                     int64_t lane_stride, int64_t lo, int64_t hi) {
#if defined(SQUEEZEAE_HAVE_SIMD_PATHS)
  // lo and hi lie within a checked plane, so an index in range has a small offset
  if (simd_isa() == Isa::kAvx512 && small_offsets(hi, pos_stride) && lane_stride >= 0)
    return gather_in_range_avx512(dst, idx, src, count, pos_stride, lane_stride, lo, hi);
#endif
  return gather_in_range_scalar(dst, idx, src, count, pos_stride, lane_stride, lo, hi);
}

SQUEEZEAE_CLONES
int check_pool_indices(const int64_t* idx, int64_t rows, int64_t row_step, int64_t top, int64_t top_step,
                       int64_t count, int64_t step, int64_t kernel_h, int64_t out_h, int64_t out_w) {
  const uint64_t plane = static_cast<uint64_t>(out_h * out_w);
  int64_t out_of_plane = 0, out_of_rows = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t* __restrict__ row_idx = idx + r * row_step;
    const int64_t first = top + r * top_step;
    // the window's rows, as a range of flat indices (two compares, no division)
    const int64_t lo = std::max<int64_t>(first, 0) * out_w, hi = std::min<int64_t>(first + kernel_h, out_h) * out_w;
    for (int64_t i = 0; i < count; ++i) {
      const int64_t index = row_idx[i * step];
      out_of_plane |= static_cast<int64_t>(static_cast<uint64_t>(index) >= plane);
      out_of_rows |= static_cast<int64_t>(index < lo) | static_cast<int64_t>(index >= hi);
    }
  }
  return static_cast<int>(out_of_plane != 0) | (static_cast<int>(out_of_rows != 0) << 1);
}

}  // namespace cpu
}  // namespace squeezeae
