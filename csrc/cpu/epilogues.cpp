#include "cpu/epilogues.h"

#include <algorithm>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(SQUEEZEAE_NO_MULTIVERSION)
#define SQUEEZEAE_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SQUEEZEAE_CLONES
#endif

namespace squeezeae {
namespace cpu {

SQUEEZEAE_CLONES
void bias_relu_rows(float* dst, int64_t dst_pitch, const float* src, int64_t src_pitch, const float* bias,
                    int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    float* __restrict__ d = dst + r * dst_pitch;
    const float* __restrict__ s = src + r * src_pitch;
    for (int64_t c = 0; c < cols; ++c) d[c] = std::max(s[c] + bias[c], 0.0f);
  }
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
