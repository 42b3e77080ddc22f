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

}  // namespace cpu
}  // namespace squeezeae
