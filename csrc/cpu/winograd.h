// Winograd F(2x2, 3x3) for the 3x3 convolutions of the pixel-major tiles (the forward's expand3x3 in
// fire_forward_tile, the backward's squeeze gradient in fire_backward_tile; see use_winograd in fire_tiles.h):
// each 2x2 block of output pixels is computed from the 4x4 patch of input pixels around it as
// Y = A^T [(G g G^T) . (B^T d B)] A,
// i.e. 16 GEMMs [blocks, S] x [S, E3] (one per point of the 4x4 transformed patch) instead of 9 taps'
// worth of [pixels, S] x [S, E3]: 16 / (4 * 9) = 0.44x the multiply-adds (0.52x on a 13x13 image, whose last
// block row and column are half outside). The transforms' coefficients are 0, +-1 and +-1/2, exact in binary;
// against a float64 reference its float32 results carry errors of the same size as a direct float32
// convolution's (max 1.0-1.4e-6 against 1.1-1.9e-6 on SqueezeNet's 13/27/55 layers at unit scale, mean within
// 1.5x). Larger tiles (F(4x4, 3x3)) would save more but lose accuracy (coefficients up to 8). Each output
// still depends only on its own 3x3 window (y0 reads points 0-2 of a row, y1 points 1-3, and those read patch
// pixels 0-2 and 1-3), so NaNs land where the direct convolution puts them; infinities do not (inf - inf in the
// transforms), so the callers keep non-finite weights and activations on the direct path.
#pragma once

#include <algorithm>
#include <cstdint>

namespace squeezeae {
namespace cpu {

constexpr int64_t kWinogradPoints = 16;  // the 4 x 4 transformed points of a block

// The 2x2 blocks covering a tile of `rows` x `width` output pixels.
inline int64_t winograd_blocks(int64_t rows, int64_t width) { return ((rows + 1) / 2) * ((width + 1) / 2); }

// U = G g G^T for `count` kernels g, G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]: tap t = 3 * y +
// x of kernel i at taps[t * stride + i] (`flip`: at taps[(8 - t) * stride + i], the kernel rotated by 180
// degrees, as the data gradient applies it), point 4 * a + b of its U at U[(4 * a + b) * stride + i].
template <typename T>
inline void winograd_weight_transform_impl(T* U, const T* taps, int64_t count, int64_t stride, bool flip) {
  const T* tap[9];
  for (int64_t t = 0; t < 9; ++t) tap[t] = taps + (flip ? 8 - t : t) * stride;
#pragma GCC ivdep
  for (int64_t i = 0; i < count; ++i) {
    T gg[4][3];  // G g: rows 0 and 3 are g's first and last rows
    for (int64_t x = 0; x < 3; ++x) {
      const T g0 = tap[x][i], g1 = tap[3 + x][i], g2 = tap[6 + x][i];
      gg[0][x] = g0;
      gg[1][x] = T(0.5) * (g0 + g1 + g2);
      gg[2][x] = T(0.5) * (g0 - g1 + g2);
      gg[3][x] = g2;
    }
    for (int64_t a = 0; a < 4; ++a) {  // (G g) G^T
      U[(4 * a + 0) * stride + i] = gg[a][0];
      U[(4 * a + 1) * stride + i] = T(0.5) * (gg[a][0] + gg[a][1] + gg[a][2]);
      U[(4 * a + 2) * stride + i] = T(0.5) * (gg[a][0] - gg[a][1] + gg[a][2]);
      U[(4 * a + 3) * stride + i] = gg[a][2];
    }
  }
}

// V[k][b][s] = (B^T d B)[k / 4][k % 4] for block b of a tile of R rows x W columns (b = block row * ceil(W / 2) +
// block column), d the block's 4x4 patch of a zero-bordered tile buffer `padded` (TileGrid::padded_width: padded
// row lr is the tile's row lr - 1, PW = W + 1 pixels, a zero pixel first; channel s of a pixel at pixel * ld +
// s, s < S); pixels past the tile's last padded row or column are zeros. B^T = [[1, 0, -1, 0], [0, 1, 1, 0],
// [0, -1, 1, 0], [0, 1, 0, -1]]. V: [16][blocks][S].
template <typename T>
inline void winograd_input_tile_impl(T* V, const T* padded, int64_t ld, int64_t R, int64_t W, int64_t PW,
                                     int64_t S) {
  const int64_t block_cols = (W + 1) / 2, point_stride = winograd_blocks(R, W) * S;
  const T* zeros = padded;  // padded row 0's border pixel
  for (int64_t bi = 0; bi < (R + 1) / 2; ++bi)
    for (int64_t bj = 0; bj < block_cols; ++bj) {
      const T* p[4][4];
      for (int64_t i = 0; i < 4; ++i)
        for (int64_t j = 0; j < 4; ++j) {
          const int64_t lr = 2 * bi + i, column = 2 * bj - 1 + j;  // column -1: the row's own zero border
          p[i][j] = lr < R + 2 && column < W ? padded + (lr * PW + column + 1) * ld : zeros;
        }
      T* v = V + (bi * block_cols + bj) * S;
#pragma GCC ivdep
      for (int64_t s = 0; s < S; ++s) {
        T t[4][4];  // B^T d
        for (int64_t j = 0; j < 4; ++j) {
          const T d0 = p[0][j][s], d1 = p[1][j][s], d2 = p[2][j][s], d3 = p[3][j][s];
          t[0][j] = d0 - d2;
          t[1][j] = d1 + d2;
          t[2][j] = d2 - d1;
          t[3][j] = d1 - d3;
        }
        for (int64_t i = 0; i < 4; ++i) {  // (B^T d) B
          v[(4 * i + 0) * point_stride + s] = t[i][0] - t[i][2];
          v[(4 * i + 1) * point_stride + s] = t[i][1] + t[i][2];
          v[(4 * i + 2) * point_stride + s] = t[i][2] - t[i][1];
          v[(4 * i + 3) * point_stride + s] = t[i][1] - t[i][3];
        }
      }
    }
}

// One block of winograd_output_tile_impl: y[i][j][e] (+)= (A^T m A)[i][j].
template <bool kAccumulate, typename T>
inline void winograd_output_block(T* const (&y)[2][2], const T* m, int64_t point_stride, int64_t E3) {
#pragma GCC ivdep
  for (int64_t e = 0; e < E3; ++e) {
    T t[2][4];  // A^T m
    for (int64_t j = 0; j < 4; ++j) {
      const T m0 = m[j * point_stride + e], m1 = m[(4 + j) * point_stride + e], m2 = m[(8 + j) * point_stride + e],
              m3 = m[(12 + j) * point_stride + e];
      t[0][j] = m0 + m1 + m2;
      t[1][j] = m1 - m2 - m3;
    }
    for (int64_t i = 0; i < 2; ++i) {  // (A^T m) A
      const T y0 = t[i][0] + t[i][1] + t[i][2], y1 = t[i][1] - t[i][2] - t[i][3];
      if constexpr (kAccumulate) {
        y[i][0][e] += y0;
        y[i][1][e] += y1;
      } else {
        y[i][0][e] = y0;
        y[i][1][e] = y1;
      }
    }
  }
}

// out[(r * pitch + c) * ld + e] = (or += with `accumulate`) (A^T m A) for the tile's R x W pixels, m the block's
// 4x4 points of M [16][blocks][E3] (e < E3), A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]. The half of a block past the
// last row or column goes to `discard` (E3 values, overwritten).
template <typename T>
inline void winograd_output_tile_impl(T* out, int64_t ld, int64_t pitch, const T* M, int64_t R, int64_t W,
                                      int64_t E3, bool accumulate, T* discard) {
  const int64_t block_cols = (W + 1) / 2, point_stride = winograd_blocks(R, W) * E3;
  for (int64_t bi = 0; bi < (R + 1) / 2; ++bi)
    for (int64_t bj = 0; bj < block_cols; ++bj) {
      const int64_t r = 2 * bi, c = 2 * bj;
      T* y[2][2];
      for (int64_t i = 0; i < 2; ++i)
        for (int64_t j = 0; j < 2; ++j)
          y[i][j] = r + i < R && c + j < W ? out + ((r + i) * pitch + c + j) * ld : discard;
      const T* m = M + (bi * block_cols + bj) * E3;
      if (accumulate)
        winograd_output_block<true>(y, m, point_stride, E3);
      else
        winograd_output_block<false>(y, m, point_stride, E3);
    }
}

// The float versions are compiled for AVX-512, AVX2 and baseline x86-64 (epilogues.cpp).
void winograd_weight_transform(float* U, const float* taps, int64_t count, int64_t stride, bool flip);
void winograd_input_tile(float* V, const float* padded, int64_t ld, int64_t R, int64_t W, int64_t PW, int64_t S);
void winograd_output_tile(float* out, int64_t ld, int64_t pitch, const float* M, int64_t R, int64_t W, int64_t E3,
                          bool accumulate, float* discard);

inline void winograd_weight_transform(double* U, const double* taps, int64_t count, int64_t stride, bool flip) {
  winograd_weight_transform_impl(U, taps, count, stride, flip);
}
inline void winograd_input_tile(double* V, const double* padded, int64_t ld, int64_t R, int64_t W, int64_t PW,
                                int64_t S) {
  winograd_input_tile_impl(V, padded, ld, R, W, PW, S);
}
inline void winograd_output_tile(double* out, int64_t ld, int64_t pitch, const double* M, int64_t R, int64_t W,
                                 int64_t E3, bool accumulate, double* discard) {
  winograd_output_tile_impl(out, ld, pitch, M, R, W, E3, accumulate, discard);
}

}  // namespace cpu
}  // namespace squeezeae
