// Planar (NCHW) tiles of the fused CPU Fire: the same algorithm as the pixel-major tiles of fire_tiles.h,
// with every activation held as [channels, pixels] and every GEMM transposed (weights [out, in] on the left).
// An NCHW band of rows is then already a GEMM operand (one row per channel plane, leading dimension H * W):
// the input is read in place and the output written one contiguous row of a channel plane at a time, with no
// transposition of the big tensors at all.
#pragma once

#include "cpu/fire_tiles.h"

namespace squeezeae {
namespace cpu {

// Input rows [r0 - 1, r1 + 1) as [C, pixels] (returned with its leading dimension), squeeze + bias + ReLU into
// buf.spad as [S, padded pixels] with a zero border (TileGrid::padded_width). Returns the first loaded row.
template <typename acc_t, typename Loader>
int64_t squeeze_tile_planar(const FireWeights<acc_t>& w, const TileGrid& g, int64_t n, int64_t r0, int64_t r1,
                            TileBuffers<acc_t>& buf, const Loader& load, int64_t* x_ld) {
  const int64_t W = g.width, PW = g.padded_width(), S = w.S;
  const int64_t g0 = std::max<int64_t>(r0 - 1, 0), g1 = std::min<int64_t>(r1 + 1, g.height);
  const int64_t pixels = (g1 - g0) * W, padded_rows = (r1 - r0) + 2, padded_pixels = g.padded_pixels(r1 - r0);
  buf.x_rows = load(n, g0, g1, buf.x, x_ld);
  acc_t* sq = buf.squeeze_acc;
  gemm<acc_t>(S, pixels, w.C, w.p(w.squeeze), w.C, buf.x_rows, *x_ld, sq, pixels, false);
  const acc_t* bias = w.p(w.squeeze_bias);
  for (int64_t s = 0; s < S; ++s) {
    acc_t* plane = buf.spad + s * padded_pixels;
    for (int64_t lr = 0; lr < padded_rows; ++lr) {
      acc_t* row = plane + lr * PW;
      const int64_t gr = r0 - 1 + lr;
      if (gr < g0 || gr >= g1) {
        std::fill(row, row + PW, acc_t(0));
        continue;
      }
      row[0] = acc_t(0);
      const acc_t* src = sq + s * pixels + (gr - g0) * W;
      for (int64_t j = 0; j < W; ++j) row[1 + j] = std::max(src[j] + bias[s], acc_t(0));
    }
    plane[padded_rows * PW] = acc_t(0);  // the last row's right border
  }
  return g0;
}

// `store(n, r0, r1, acc, ld, row_pitch)` gets the pre-activation accumulator [E1 + E3, pixels].
template <typename acc_t, typename Loader, typename Store>
void fire_forward_tile_planar(const FireWeights<acc_t>& w, const TileGrid& g, int64_t n, int64_t r0, int64_t r1,
                              TileBuffers<acc_t>& buf, const Loader& load, const Store& store) {
  int64_t x_ld = 0;
  squeeze_tile_planar(w, g, n, r0, r1, buf, load, &x_ld);
  const int64_t W = g.width, PW = g.padded_width(), S = w.S, R = r1 - r0, dense = R * W;
  const int64_t padded_pixels = g.padded_pixels(R);
  const acc_t* spad = buf.spad;
  acc_t* out = buf.out;
  // im2col over the tile's own pixels, [(tap, s) or (s, tap), dense] as the weights' columns: each row the shifted
  // rows of a squeeze plane (only the planar tiles need this buffer). Its centre tap is the expand1x1 GEMM's
  // operand too.
  acc_t* cols = Scratch<acc_t>::get(Scratch<acc_t>::kIm2col, dense * 9 * S);
  for (int64_t tap = 0; tap < 9; ++tap)
    for (int64_t s = 0; s < S; ++s) {
      const acc_t* src = spad + s * padded_pixels + (tap / 3) * PW + tap % 3;
      acc_t* dst = cols + (w.im2col_tap_major ? tap * S + s : s * 9 + tap) * dense;
      for (int64_t i = 0; i < R; ++i) std::copy_n(src + i * PW, W, dst + i * W);
    }
  const int64_t centre_ld = w.im2col_tap_major ? dense : 9 * dense;  // the centre tap's rows: every 9th in (s, tap)
  gemm<acc_t>(w.E1, dense, S, w.p(w.expand1x1), S, cols + 4 * (w.im2col_tap_major ? S : 1) * dense, centre_ld, out,
              dense, false);
  gemm<acc_t>(w.E3, dense, 9 * S, w.p(w.expand3x3_rows), 9 * S, cols, dense, out + w.E1 * dense, dense, false);
  store(n, r0, r1, static_cast<const acc_t*>(out), dense, W);
}

// `load_grad(n, g0, g1, dst, ld, padded_width)` writes grad_output * (output > 0) of rows [g0, g1) at
// dst[e * ld + (g - g0) * padded_width + 1 + j]; `sink(n, r0, r1, grad_x, ld)` receives [C, pixels].
template <typename acc_t, typename Loader, typename GradLoader, typename Sink>
void fire_backward_tile_planar(const FireWeights<acc_t>& w, const TileGrid& g, int64_t n, int64_t r0, int64_t r1,
                               TileBuffers<acc_t>& buf, GradParts<acc_t>& parts, const Loader& load,
                               const GradLoader& load_grad, const Sink& sink) {
  int64_t x_ld = 0;
  const int64_t g0 = squeeze_tile_planar(w, g, n, r0, r1, buf, load, &x_ld);
  const int64_t W = g.width, PW = g.padded_width(), C = w.C, S = w.S, E1 = w.E1, E3 = w.E3, E = w.E();
  const int64_t R = r1 - r0, padded_pixels = g.padded_pixels(R), flat = g.flat_pixels(R), dense = R * W;
  const int64_t centre = PW + 1;
  const acc_t* spad = buf.spad;

  acc_t* grad = buf.grad;  // [E, padded pixels]
  const int64_t gg0 = std::max<int64_t>(r0 - 1, 0), gg1 = std::min<int64_t>(r1 + 1, g.height);
  std::fill(grad, grad + E * padded_pixels, acc_t(0));
  load_grad(n, gg0, gg1, grad + (gg0 - (r0 - 1)) * PW, padded_pixels, PW);
  for (int64_t e = 0; e < E; ++e) {
    acc_t sum = 0;
    for (int64_t i = 0; i < R; ++i) {
      const acc_t* row = grad + e * padded_pixels + (i + 1) * PW + 1;
      for (int64_t j = 0; j < W; ++j) sum += row[j];
    }
    parts.expand_bias[e] += sum;
  }

  // Squeeze gradient [S, flat]: expand1x1^T and the nine 3x3 taps, then the squeeze ReLU mask.
  acc_t* gs = buf.grad_squeeze;
  gemm<acc_t>(S, flat, E1, w.p(w.expand1x1_t), E1, grad + centre, padded_pixels, gs, flat, false);
  for (int64_t tap = 0; tap < 9; ++tap) {
    const int64_t shift = (tap / 3 - 1) * PW + (tap % 3 - 1);
    gemm<acc_t>(S, flat, E3, w.p(w.expand3x3_t) + tap * S * E3, E3, grad + E1 * padded_pixels + centre - shift,
                padded_pixels, gs, flat, true);
  }
  for (int64_t s = 0; s < S; ++s) mask_where_not_positive(gs + s * flat, spad + s * padded_pixels + centre, flat);

  // Expand weight gradients [E1, S] and [9, E3, S]: gradient rows times the pixel-major squeeze tile.
  acc_t* spad_pm = buf.spad_t;
  transpose(spad, S, padded_pixels, padded_pixels, spad_pm, S);
  gemm<acc_t>(E1, S, flat, grad + centre, padded_pixels, spad_pm + centre * S, S, parts.expand1x1, S,
              parts.accumulate());
  for (int64_t tap = 0; tap < 9; ++tap) {
    const int64_t shift = (tap / 3 - 1) * PW + (tap % 3 - 1);
    gemm<acc_t>(E3, S, flat, grad + E1 * padded_pixels + centre, padded_pixels, spad_pm + (centre + shift) * S, S,
                parts.expand3x3 + tap * E3 * S, S, parts.accumulate());
  }

  // The tile's own pixels: squeeze bias/weight gradients and the input gradient.
  acc_t* gsd = buf.grad_squeeze_dense;  // [S, dense]
  for (int64_t s = 0; s < S; ++s) {
    acc_t sum = 0;
    for (int64_t i = 0; i < R; ++i) {
      const acc_t* src = gs + s * flat + i * PW;
      std::copy(src, src + W, gsd + s * dense + i * W);
      for (int64_t j = 0; j < W; ++j) sum += src[j];
    }
    parts.squeeze_bias[s] += sum;
  }
  acc_t* gsd_pm = buf.grad_squeeze_t;  // [dense, S]
  transpose(gsd, S, dense, dense, gsd_pm, S);
  gemm<acc_t>(C, S, dense, buf.x_rows + (r0 - g0) * W, x_ld, gsd_pm, S, parts.squeeze, S,
              parts.accumulate());
  parts.fresh = false;  // all weight blocks written
  int64_t ld_direct = 0;
  if (acc_t* direct = sink.direct(n, r0, &ld_direct)) {  // the input gradient's rows as a GEMM output
    gemm<acc_t>(C, dense, S, w.p(w.squeeze_t), S, gsd, dense, direct, ld_direct, false);
    return;
  }
  gemm<acc_t>(C, dense, S, w.p(w.squeeze_t), S, gsd, dense, buf.grad_x, dense, false);
  sink(n, r0, r1, static_cast<const acc_t*>(buf.grad_x), dense);
}

// ------------------------------------------------------------------------------- loaders and stores

// Rows [g0, g1) of a strided [N, C, H, W] tensor as [C, pixels]: the tensor itself when its planes are
// row-contiguous in acc_t, else a converted copy in dst.
template <typename scalar_t, typename acc_t>
struct PlanarRowLoader {
  const scalar_t* data;
  Strides4 st;
  int64_t C, W;
  const acc_t* operator()(int64_t n, int64_t g0, int64_t g1, acc_t* dst, int64_t* ld) const {
    const scalar_t* base = data + n * st.n;
    if constexpr (std::is_same_v<scalar_t, acc_t>) {
      if (st.rows_packed(W)) {
        *ld = st.c;
        return base + g0 * st.h;
      }
    }
    const int64_t pixels = (g1 - g0) * W;
    *ld = pixels;
    if constexpr (std::is_same_v<scalar_t, float> && std::is_same_v<acc_t, float>) {
      if (st.pixels_packed(C, W)) {  // channels_last rows: one SIMD transpose
        pixel_major_to_planar(dst, pixels, base + g0 * st.h, C, pixels, C);
        return dst;
      }
    }
    for (int64_t c = 0; c < C; ++c)
      for (int64_t h = g0; h < g1; ++h) {
        const scalar_t* src = base + c * st.c + h * st.h;
        acc_t* d = dst + c * pixels + (h - g0) * W;
        for (int64_t w = 0; w < W; ++w) d[w] = static_cast<acc_t>(src[w * st.w]);
      }
    return dst;
  }
};

template <typename scalar_t, typename acc_t>
struct PlanarMaskedGradLoader {
  const scalar_t* grad;
  const scalar_t* output;
  Strides4 gs, os;
  int64_t E, W;
  void operator()(int64_t n, int64_t g0, int64_t g1, acc_t* dst, int64_t ld, int64_t padded_width) const {
    for (int64_t e = 0; e < E; ++e)
      for (int64_t h = g0; h < g1; ++h) {
        const scalar_t* __restrict__ g_row = grad + gs.at(n, e, h, 0);
        const scalar_t* __restrict__ o_row = output + os.at(n, e, h, 0);
        acc_t* __restrict__ d = dst + e * ld + (h - g0) * padded_width + 1;
        if (gs.w == 1 && os.w == 1) {
          for (int64_t w = 0; w < W; ++w) {  // both loads unconditional, so the select vectorises
            const acc_t g = static_cast<acc_t>(g_row[w]);
            d[w] = static_cast<acc_t>(o_row[w]) > acc_t(0) ? g : acc_t(0);
          }
        } else {
          for (int64_t w = 0; w < W; ++w)
            d[w] = static_cast<acc_t>(o_row[w * os.w]) > acc_t(0) ? static_cast<acc_t>(g_row[w * gs.w]) : acc_t(0);
        }
      }
  }
};

template <typename scalar_t, typename acc_t>
struct PlanarActivationStore {
  scalar_t* data;
  Strides4 st;
  const acc_t* bias;
  int64_t E, W;
  void operator()(int64_t n, int64_t r0, int64_t r1, const acc_t* acc, int64_t ld, int64_t padded_width) const {
    if constexpr (std::is_same_v<scalar_t, float> && std::is_same_v<acc_t, float>) {
      // NCHW rows (each plane's band contiguous): the SIMD epilogue; a 4-wide baseline loop here ran ~18% of a
      // batch-8 55x55 NCHW Fire's forward on a Xeon
      if (st.rows_packed(W) && padded_width == W) {
        bias_relu_planes(data + st.at(n, 0, r0, 0), st.c, acc, ld, bias, E, (r1 - r0) * W);
        return;
      }
      if (st.pixels_packed(E, W) && padded_width == W) {  // channels_last: transposed back
        bias_relu_to_pixel_major(data + st.at(n, 0, r0, 0), E, acc, ld, bias, (r1 - r0) * W, E);
        return;
      }
    }
    for (int64_t e = 0; e < E; ++e)
      for (int64_t h = r0; h < r1; ++h) {
        const acc_t* a = acc + e * ld + (h - r0) * padded_width;
        scalar_t* d = data + st.at(n, e, h, 0);
        const acc_t b = bias[e];
        if (st.w == 1) {
          for (int64_t w = 0; w < W; ++w) d[w] = static_cast<scalar_t>(std::max(a[w] + b, acc_t(0)));
        } else {
          for (int64_t w = 0; w < W; ++w) d[w * st.w] = static_cast<scalar_t>(std::max(a[w] + b, acc_t(0)));
        }
      }
  }
};

template <typename scalar_t, typename acc_t>
struct PlanarRowSink {
  scalar_t* data;
  Strides4 st;
  int64_t C, W;
  // Where rows from r0 on can be written as [C, pixels] with leading dimension *ld (planes of packed rows in
  // the accumulation type), else nullptr.
  acc_t* direct(int64_t n, int64_t r0, int64_t* ld) const {
    if constexpr (std::is_same_v<scalar_t, acc_t>) {
      if (st.rows_packed(W)) {
        *ld = st.c;
        return data + n * st.n + r0 * W;
      }
    }
    return nullptr;
  }
  void operator()(int64_t n, int64_t r0, int64_t r1, const acc_t* src, int64_t ld) const {
    for (int64_t c = 0; c < C; ++c)
      for (int64_t h = r0; h < r1; ++h) {
        const acc_t* s = src + c * ld + (h - r0) * W;
        scalar_t* d = data + st.at(n, c, h, 0);
        if (st.w == 1) {
          for (int64_t w = 0; w < W; ++w) d[w] = static_cast<scalar_t>(s[w]);
        } else {
          for (int64_t w = 0; w < W; ++w) d[w * st.w] = static_cast<scalar_t>(s[w]);
        }
      }
  }
};

}  // namespace cpu
}  // namespace squeezeae
