// Float epilogues of the CPU tiles and the pooling-index check, compiled for AVX-512, AVX2 and baseline x86-64 and picked at load time
// (GCC/Clang function multiversioning): the rest of the extension is built for baseline x86-64, where these
// loops would run 4 floats at a time.
#pragma once

#include <cstdint>

namespace squeezeae {
namespace cpu {

// dst[r * dst_pitch + c] = max(src[r * src_pitch + c] + bias[c], 0) for r < rows, c < cols.
void bias_relu_rows(float* dst, int64_t dst_pitch, const float* src, int64_t src_pitch, const float* bias,
                    int64_t rows, int64_t cols);

// The same into bfloat16 bits (dst: uint16_t), rounded to nearest even (NaN stays a NaN): the epilogues of the
// bfloat16 forward (fire_bf16.h).
void bias_relu_rows_bf16(uint16_t* dst, int64_t dst_pitch, const float* src, int64_t src_pitch, const float* bias,
                         int64_t rows, int64_t cols);

// dst[p * dst_ld + i] = max(src[p * src_ld + i] + bias[p], 0) for p < planes, i < count: planar tiles' epilogue.
void bias_relu_planes(float* dst, int64_t dst_ld, const float* src, int64_t src_ld, const float* bias,
                      int64_t planes, int64_t count);

// dst[r * dst_pitch + c] = out[r * out_pitch + c] > 0 ? grad[r * grad_pitch + c] : 0 for r < rows, c < cols.
void relu_mask_rows(float* dst, int64_t dst_pitch, const float* grad, int64_t grad_pitch, const float* out,
                    int64_t out_pitch, int64_t rows, int64_t cols);

// True if no value is an infinity or a NaN (the Winograd tiles' guard, see fire_forward_tile).
bool all_finite(const float* values, int64_t count);

// Transposing copies between pixel-major [pixels, channels] tiles and planar [channels, pixels] tensors, in
// 16 x 16 blocks of AVX-512 registers or 8 x 8 of AVX2 ones where the CPU has them:
//   bias_relu_to_planar: dst[c * dst_ld + p] = max(src[p * src_ld + c] + bias[c], 0)
//   pixel_major_to_planar: dst[c * dst_ld + p] = src[p * src_ld + c]
//   planar_to_pixel_major: dst[row(p) * dst_ld + c] = src[c * src_ld + p], row(p) = dst_rows[p] given a table
//     of rows (a permuted transpose, such as the 3x3 weights' (s, tap) -> (tap, s) in one pass), else p
//   bias_relu_to_pixel_major: dst[p * dst_ld + c] = max(src[c * src_ld + p] + bias[c], 0)
// for p < pixels, c < channels.
void bias_relu_to_planar(float* dst, int64_t dst_ld, const float* src, int64_t src_ld, const float* bias,
                         int64_t pixels, int64_t channels);
void pixel_major_to_planar(float* dst, int64_t dst_ld, const float* src, int64_t src_ld, int64_t pixels,
                           int64_t channels);
void planar_to_pixel_major(float* dst, int64_t dst_ld, const float* src, int64_t src_ld, int64_t pixels,
                           int64_t channels, const int64_t* dst_rows = nullptr);
void bias_relu_to_pixel_major(float* dst, int64_t dst_ld, const float* src, int64_t src_ld, const float* bias,
                              int64_t pixels, int64_t channels);

// 16, 8 or 1: the floats per register of the transposes above on this CPU (AVX-512, AVX2, scalar; capped by
// SQUEEZEAE_CPU_ISA=avx2 or =scalar).
int transpose_simd_width();

// The max-unpool scatter into a range [lo, hi) of a plane's flat pixel indices: for i < count with
// lo <= idx[i] < hi, dst[(idx[i] - lo) * pos_stride + i * lane_stride] = src[i], in i order (a later i wins
// an address). A pooled pixel's channels into a channels_last range (pos_stride C, lane_stride 1), or a pooled
// row of one plane (lane_stride 0). Returns true if some idx[i] lies outside [0, plane), which the caller
// reports (the in-range elements are written either way).
bool scatter_in_range(float* dst, int64_t pos_stride, int64_t lane_stride, const int64_t* idx, const float* src,
                      int64_t count, int64_t lo, int64_t hi, int64_t plane);

// Its gather: dst[i] = src[(idx[i] - lo) * pos_stride + i * lane_stride] for i < count with lo <= idx[i] < hi;
// the other dst[i] are neither read nor written (another tile's, maybe another thread's). Returns true if some
// idx[i] lies outside [lo, hi) (with [0, plane), the max-unpool backward's invalid index). [lo, hi) must lie
// below 2^31 for the SIMD path, else the scalar one runs.
bool gather_in_range(float* dst, const int64_t* idx, const float* src, int64_t count, int64_t pos_stride,
                     int64_t lane_stride, int64_t lo, int64_t hi);

// Checks pooling indices idx[r * row_step + i * step] (r < rows, i < count) of an out_h x out_w plane, row r's
// pooling windows spanning plane rows [top + r * top_step, + kernel_h). Returns bit 0 set if some index is
// outside [0, out_h * out_w), bit 1 set if some index lies outside its window's rows.
int check_pool_indices(const int64_t* idx, int64_t rows, int64_t row_step, int64_t top, int64_t top_step,
                       int64_t count, int64_t step, int64_t kernel_h, int64_t out_h, int64_t out_w);

}  // namespace cpu
}  // namespace squeezeae
