// Fused Fire kernels on raw pointers + strides (no torch headers).
//
// Forward, one block per (8x8 output tile, group of output-channel chunks):
//   1. squeeze: the input tile plus a one-pixel halo (10x10) is staged through shared memory in chunks of
//      input channels; s = relu(Wsq x + bsq) for up to kSqueezeChunk squeeze channels is kept in shared memory
//      (float accumulation; zero outside the image, which is the 3x3 conv's zero padding of s).
//   2. expand: for each chunk of 64 output channels (expand1x1 chunks first, then expand3x3 chunks; a chunk
//      never straddles the two), weights are staged through shared memory 8 squeeze channels at a time and
//      accumulated in registers; bias + ReLU and the result is written straight into its channel slice of
//      the output (E1 first, then E3) with the output's strides.
//   When S fits in one squeeze chunk (every SqueezeNet Fire: S <= 64), s is computed once per block; otherwise
//   it is recomputed per output-channel chunk and squeeze chunk (slower, but any S works).
//   The input can also be gathered from max-unpooling (input + indices): the unpooled tensor never exists.
//
// Backward data pass, one block per (8x8 tile, chunk of squeeze channels):
//   ds = W1^T (g1 * [out1 > 0]) + W3^T (*) (g3 * [out3 > 0]) (transposed 3x3 conv over a halo tile), the
//   squeeze pre-activation recomputed from x, then ds_pre = ds * [s > 0]; writes s and ds_pre (accumulation
//   type) for the weight gradients, and a second kernel forms grad_x = Wsq^T ds_pre.
//
// Thread layout (256 threads = 8 warps): pixels along the lanes, channels along the warps, so that weights
// read from shared memory are warp-wide broadcasts and tile values are conflict-free consecutive words.
#pragma once

#include "common.cuh"
#include "unpool.cuh"

namespace squeezeae {
namespace cuda {
namespace fire {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kTileH = 8, kTileW = 8, kTilePixels = kTileH * kTileW;  // 64 = 2 pixels per lane
constexpr int kHaloH = kTileH + 2, kHaloW = kTileW + 2, kHaloPixels = kHaloH * kHaloW;  // 100
constexpr int kHaloLd = kHaloPixels + 1;    // odd row pitch: channel-major stores do not collide in banks
constexpr int kTileLd = kTilePixels + 1;
constexpr int kSqueezeChunk = 64;           // squeeze channels held on chip (8 per warp)
constexpr int kInChunk = 32;                // input channels staged per step
constexpr int kOutChunk = 64;               // output channels per pass (8 per warp)
constexpr int kWeightSqueeze = 8;           // squeeze channels of expand weights staged per step
constexpr int kExpandChunk = 16;            // expand channels staged per step of the backward data pass
constexpr int kHaloSlots = 4;               // ceil(kHaloPixels / 32) halo pixels per lane
constexpr int kSqueezePerWarp = kSqueezeChunk / kWarps;  // 8
constexpr int kOutPerWarp = kOutChunk / kWarps;          // 8
static_assert(kHaloSlots * 32 >= kHaloPixels, "halo slots");
static_assert(kTilePixels == 64, "two tile pixels per lane");
static_assert(kOutPerWarp == 8, "load_vec8 reads a warp's eight expand weights");
static_assert(kSqueezeChunk * kHaloLd * sizeof(float) % 16 == 0, "the staging area (w_tile) is 16-byte aligned");

template <typename T>
struct FireForwardArgs {
  const T* x = nullptr;          // Fire input [N, C, H, W], or with `indices` the pooled input [N, C, Hp, Wp]
  const int64_t* indices = nullptr;  // non-null: gather the Fire input by max-unpooling (all in-window)
  UnpoolParams unpool;           // geometry of that unpooling (input/indices strides; out_* = H, W)
  const T* squeeze_weight = nullptr;
  const T* squeeze_bias = nullptr;  // may be null
  const T* expand1x1_weight = nullptr;
  const T* expand1x1_bias = nullptr;
  const T* expand3x3_weight = nullptr;
  const T* expand3x3_bias = nullptr;
  T* out = nullptr;
  int64_t batch = 0, in_channels = 0, height = 0, width = 0;
  int64_t squeeze = 0, expand1x1 = 0, expand3x3 = 0;
  Strides4 x_strides, out_strides, wsq_strides, w1_strides, w3_strides;
  int64_t tiles_h = 0, tiles_w = 0;
  int chunks_per_group = 1;  // output-channel chunks handled by one block (blockIdx.y picks the group)
  bool x_channels_inner = false;
};

template <typename A>
constexpr size_t forward_smem_elems() {
  return size_t(kSqueezeChunk) * kHaloLd +
         (size_t(kInChunk) * kHaloLd + size_t(kSqueezeChunk) * kInChunk > size_t(kWeightSqueeze) * 9 * kOutChunk
              ? size_t(kInChunk) * kHaloLd + size_t(kSqueezeChunk) * kInChunk
              : size_t(kWeightSqueeze) * 9 * kOutChunk);
}
template <typename A>
constexpr size_t forward_smem_bytes() {
  return forward_smem_elems<A>() * sizeof(A);
}

// Value of the Fire input at (n, c, h, w) inside the image.
template <typename T>
__device__ __forceinline__ T load_fire_input(const FireForwardArgs<T>& a, int64_t n, int64_t c, int64_t h, int64_t w) {
  if (a.indices != nullptr) return unpooled_value(a.x, a.indices, a.unpool, n, c, h, w);
  return a.x[a.x_strides.at(n, c, h, w)];
}

// s for squeeze channels [sq0, sq0 + count) over the halo tile into s_tile[count][kHaloLd]. Starts and ends
// with a barrier (s_tile and the staging area may be in use by other threads before the call).
template <typename T, typename A>
__device__ void compute_squeeze_tile(const FireForwardArgs<T>& a, int64_t n, int64_t h0, int64_t w0, int64_t sq0,
                                     int count, A* s_tile, A* x_tile, A* wsq_tile) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  A acc[kHaloSlots][kSqueezePerWarp];
#pragma unroll
  for (int k = 0; k < kHaloSlots; ++k)
#pragma unroll
    for (int j = 0; j < kSqueezePerWarp; ++j) acc[k][j] = A(0);

  __syncthreads();  // previous readers of s_tile and of the staging area are done
  for (int64_t c0 = 0; c0 < a.in_channels; c0 += kInChunk) {
    const int c_count = static_cast<int>(imin(kInChunk, a.in_channels - c0));
    if (c0 > 0) __syncthreads();  // readers of the previous chunk's x_tile / wsq_tile are done
    for (int i = tid; i < kInChunk * kHaloPixels; i += kThreads) {
      int c, hp;
      if (a.x_channels_inner) {
        c = i % kInChunk;
        hp = i / kInChunk;
      } else {
        hp = i % kHaloPixels;
        c = i / kHaloPixels;
      }
      const int64_t h = h0 - 1 + hp / kHaloW, w = w0 - 1 + hp % kHaloW;
      A v = A(0);
      if (c < c_count && h >= 0 && h < a.height && w >= 0 && w < a.width) v = to_acc(load_fire_input(a, n, c0 + c, h, w));
      x_tile[c * kHaloLd + hp] = v;
    }
    for (int i = tid; i < kSqueezeChunk * kInChunk; i += kThreads) {
      const int s = i / kInChunk, c = i % kInChunk;
      A v = A(0);
      if (s < count && c < c_count) v = to_acc(a.squeeze_weight[a.wsq_strides.at(sq0 + s, c0 + c, 0, 0)]);
      wsq_tile[i] = v;
    }
    __syncthreads();
    for (int c = 0; c < c_count; ++c) {
      A xv[kHaloSlots];
#pragma unroll
      for (int k = 0; k < kHaloSlots; ++k) {
        const int hp = lane + 32 * k;
        xv[k] = hp < kHaloPixels ? x_tile[c * kHaloLd + hp] : A(0);
      }
#pragma unroll
      for (int j = 0; j < kSqueezePerWarp; ++j) {
        const int s = warp + kWarps * j;
        if (s < count) {  // warp-uniform
          const A wv = wsq_tile[s * kInChunk + c];
#pragma unroll
          for (int k = 0; k < kHaloSlots; ++k) acc[k][j] += wv * xv[k];
        }
      }
    }
  }
  // s_tile is not read between the barrier at the top of the last chunk and the one below.
#pragma unroll
  for (int j = 0; j < kSqueezePerWarp; ++j) {
    const int s = warp + kWarps * j;
    if (s >= count) continue;
    const A bias = a.squeeze_bias != nullptr ? to_acc(a.squeeze_bias[sq0 + s]) : A(0);
#pragma unroll
    for (int k = 0; k < kHaloSlots; ++k) {
      const int hp = lane + 32 * k;
      if (hp >= kHaloPixels) continue;
      const int64_t h = h0 - 1 + hp / kHaloW, w = w0 - 1 + hp % kHaloW;
      const bool inside = h >= 0 && h < a.height && w >= 0 && w < a.width;
      s_tile[s * kHaloLd + hp] = inside ? relu_acc(acc[k][j] + bias) : A(0);
    }
  }
  __syncthreads();
}

template <typename T>
__global__ void __launch_bounds__(kThreads, 2) fire_forward_kernel(const FireForwardArgs<T> a) {
  using A = typename AccType<T>::type;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  A* s_tile = reinterpret_cast<A*>(smem_raw);               // [kSqueezeChunk][kHaloLd]
  A* stage = s_tile + size_t(kSqueezeChunk) * kHaloLd;      // staging, used by one phase at a time:
  A* x_tile = stage;                                        //   squeeze: [kInChunk][kHaloLd]
  A* wsq_tile = stage + size_t(kInChunk) * kHaloLd;         //            [kSqueezeChunk][kInChunk]
  A* w_tile = stage;                                        //   expand:  [kWeightSqueeze][taps][kOutChunk]

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  int64_t t = blockIdx.x;
  const int64_t tile_w = t % a.tiles_w;
  t /= a.tiles_w;
  const int64_t tile_h = t % a.tiles_h;
  const int64_t n = t / a.tiles_h;
  const int64_t h0 = tile_h * kTileH, w0 = tile_w * kTileW;

  const int64_t chunks1 = ceil_div(a.expand1x1, kOutChunk), chunks3 = ceil_div(a.expand3x3, kOutChunk);
  const int64_t q_begin = static_cast<int64_t>(blockIdx.y) * a.chunks_per_group;
  const int64_t q_end = imin(q_begin + a.chunks_per_group, chunks1 + chunks3);
  if (q_begin >= q_end) return;  // whole block leaves together

  const bool single_squeeze_chunk = a.squeeze <= kSqueezeChunk;
  if (single_squeeze_chunk) compute_squeeze_tile(a, n, h0, w0, 0, static_cast<int>(a.squeeze), s_tile, x_tile, wsq_tile);

  // This lane's two tile pixels and their centres in the halo tile.
  int py[2], px[2], centre[2];
#pragma unroll
  for (int k = 0; k < 2; ++k) {
    const int p = lane + 32 * k;
    py[k] = p / kTileW;
    px[k] = p % kTileW;
    centre[k] = (py[k] + 1) * kHaloW + (px[k] + 1);
  }

  for (int64_t q = q_begin; q < q_end; ++q) {
    const bool is3 = q >= chunks1;
    const int64_t e0 = (is3 ? q - chunks1 : q) * kOutChunk;
    const int64_t e_total = is3 ? a.expand3x3 : a.expand1x1;
    const T* weight = is3 ? a.expand3x3_weight : a.expand1x1_weight;
    const Strides4 ws = is3 ? a.w3_strides : a.w1_strides;
    const int taps = is3 ? 9 : 1;

    A acc[2][kOutPerWarp];
#pragma unroll
    for (int k = 0; k < 2; ++k)
#pragma unroll
      for (int j = 0; j < kOutPerWarp; ++j) acc[k][j] = A(0);

    for (int64_t sc0 = 0; sc0 < a.squeeze; sc0 += kSqueezeChunk) {
      const int sc_count = static_cast<int>(imin(kSqueezeChunk, a.squeeze - sc0));
      if (!single_squeeze_chunk) compute_squeeze_tile(a, n, h0, w0, sc0, sc_count, s_tile, x_tile, wsq_tile);
      for (int s0 = 0; s0 < sc_count; s0 += kWeightSqueeze) {
        const int sw_count = min(kWeightSqueeze, sc_count - s0);
        __syncthreads();  // previous readers of w_tile (or of the aliased squeeze staging) are done
        const int w_elems = kWeightSqueeze * taps * kOutChunk;
        for (int i = tid; i < w_elems; i += kThreads) {
          const int oc = i % kOutChunk;
          const int tap = (i / kOutChunk) % taps;
          const int sl = i / (kOutChunk * taps);
          A v = A(0);
          if (sl < sw_count && e0 + oc < e_total)
            v = to_acc(weight[ws.at(e0 + oc, sc0 + s0 + sl, tap / 3, tap % 3)]);
          w_tile[i] = v;
        }
        __syncthreads();
        if (is3) {
          for (int sl = 0; sl < sw_count; ++sl) {
            const A* s_row = s_tile + (s0 + sl) * kHaloLd;
#pragma unroll
            for (int tap = 0; tap < 9; ++tap) {
              const int offset = (tap / 3 - 1) * kHaloW + (tap % 3 - 1);
              const A sv0 = s_row[centre[0] + offset], sv1 = s_row[centre[1] + offset];
              A wv8[kOutPerWarp];
              load_vec8(w_tile + (sl * 9 + tap) * kOutChunk + warp * kOutPerWarp, wv8);
#pragma unroll
              for (int j = 0; j < kOutPerWarp; ++j) {
                const A wv = wv8[j];
                acc[0][j] += wv * sv0;
                acc[1][j] += wv * sv1;
              }
            }
          }
        } else {
          for (int sl = 0; sl < sw_count; ++sl) {
            const A* s_row = s_tile + (s0 + sl) * kHaloLd;
            const A sv0 = s_row[centre[0]], sv1 = s_row[centre[1]];
            A wv8[kOutPerWarp];
            load_vec8(w_tile + sl * kOutChunk + warp * kOutPerWarp, wv8);
#pragma unroll
            for (int j = 0; j < kOutPerWarp; ++j) {
              const A wv = wv8[j];
              acc[0][j] += wv * sv0;
              acc[1][j] += wv * sv1;
            }
          }
        }
      }
    }

    const T* bias_ptr = is3 ? a.expand3x3_bias : a.expand1x1_bias;
    const int64_t channel_base = is3 ? a.expand1x1 : 0;
#pragma unroll
    for (int j = 0; j < kOutPerWarp; ++j) {
      const int64_t e = e0 + warp * kOutPerWarp + j;
      if (e >= e_total) continue;
      const A bias = bias_ptr != nullptr ? to_acc(bias_ptr[e]) : A(0);
#pragma unroll
      for (int k = 0; k < 2; ++k) {
        const int64_t h = h0 + py[k], w = w0 + px[k];
        if (h < a.height && w < a.width)
          a.out[a.out_strides.at(n, channel_base + e, h, w)] = from_acc<T>(relu_acc(acc[k][j] + bias));
      }
    }
  }
}

// ------------------------------------------------------------------------------------------------ backward
template <typename T>
struct FireBackwardDataArgs {
  using A = typename AccType<T>::type;
  const T* grad_output = nullptr;  // [N, E1 + E3, H, W]
  const T* output = nullptr;       // [N, E1 + E3, H, W] (ReLU masks of the expands)
  const T* x = nullptr;            // [N, C, H, W]
  const T* squeeze_weight = nullptr;
  const T* squeeze_bias = nullptr;  // may be null
  const T* expand1x1_weight = nullptr;
  const T* expand3x3_weight = nullptr;
  A* s_out = nullptr;        // [N, S, H, W] relu(squeeze(x))
  A* ds_out = nullptr;       // [N, S, H, W] gradient w.r.t. the squeeze pre-activation
  int64_t batch = 0, in_channels = 0, height = 0, width = 0;
  int64_t squeeze = 0, expand1x1 = 0, expand3x3 = 0;
  Strides4 go_strides, out_strides, x_strides, wsq_strides, w1_strides, w3_strides, s_strides, ds_strides;
  int64_t tiles_h = 0, tiles_w = 0;
  bool go_channels_inner = false, x_channels_inner = false;
};

template <typename A>
constexpr size_t backward_data_smem_elems() {
  return (size_t(kExpandChunk) * kHaloLd + size_t(kExpandChunk) * 9 * kSqueezeChunk >
          size_t(kInChunk) * kTileLd + size_t(kSqueezeChunk) * kInChunk)
             ? size_t(kExpandChunk) * kHaloLd + size_t(kExpandChunk) * 9 * kSqueezeChunk
             : size_t(kInChunk) * kTileLd + size_t(kSqueezeChunk) * kInChunk;
}
template <typename A>
constexpr size_t backward_data_smem_bytes() {
  return backward_data_smem_elems<A>() * sizeof(A);
}

// grid: x = N * tiles, y = squeeze chunks of kSqueezeChunk.
template <typename T>
__global__ void __launch_bounds__(kThreads, 2) fire_backward_data_kernel(const FireBackwardDataArgs<T> a) {
  using A = typename AccType<T>::type;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  A* smem = reinterpret_cast<A*>(smem_raw);
  A* g_tile = smem;                                   // ds phase: [kExpandChunk][kHaloLd] masked grads
  A* wt_tile = smem + size_t(kExpandChunk) * kHaloLd;  //           [kExpandChunk][taps][kSqueezeChunk]
  A* x_tile = smem;                                   // squeeze phase: [kInChunk][kTileLd]
  A* wsq_tile = smem + size_t(kInChunk) * kTileLd;     //                [kSqueezeChunk][kInChunk]

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  int64_t t = blockIdx.x;
  const int64_t tile_w = t % a.tiles_w;
  t /= a.tiles_w;
  const int64_t tile_h = t % a.tiles_h;
  const int64_t n = t / a.tiles_h;
  const int64_t h0 = tile_h * kTileH, w0 = tile_w * kTileW;
  const int64_t sq0 = static_cast<int64_t>(blockIdx.y) * kSqueezeChunk;
  const int count = static_cast<int>(imin(kSqueezeChunk, a.squeeze - sq0));

  int py[2], px[2], centre[2];
#pragma unroll
  for (int k = 0; k < 2; ++k) {
    const int p = lane + 32 * k;
    py[k] = p / kTileW;
    px[k] = p % kTileW;
    centre[k] = (py[k] + 1) * kHaloW + (px[k] + 1);
  }

  // ds[s, p] = sum_e W1[e, s] g1[e, p] + sum_{e, ky, kx} W3[e, s, ky, kx] g3[e, p - (ky - 1, kx - 1)]
  A ds[2][kSqueezePerWarp];
#pragma unroll
  for (int k = 0; k < 2; ++k)
#pragma unroll
    for (int j = 0; j < kSqueezePerWarp; ++j) ds[k][j] = A(0);

  const int64_t chunks1 = ceil_div(a.expand1x1, kExpandChunk), chunks3 = ceil_div(a.expand3x3, kExpandChunk);
  for (int64_t q = 0; q < chunks1 + chunks3; ++q) {
    const bool is3 = q >= chunks1;
    const int64_t e0 = (is3 ? q - chunks1 : q) * kExpandChunk;
    const int64_t e_total = is3 ? a.expand3x3 : a.expand1x1;
    const int e_count = static_cast<int>(imin(kExpandChunk, e_total - e0));
    const int64_t channel_base = is3 ? a.expand1x1 : 0;
    const T* weight = is3 ? a.expand3x3_weight : a.expand1x1_weight;
    const Strides4 ws = is3 ? a.w3_strides : a.w1_strides;
    const int taps = is3 ? 9 : 1;
    __syncthreads();  // previous readers of g_tile / wt_tile are done
    for (int i = tid; i < kExpandChunk * kHaloPixels; i += kThreads) {
      int e, hp;
      if (a.go_channels_inner) {
        e = i % kExpandChunk;
        hp = i / kExpandChunk;
      } else {
        hp = i % kHaloPixels;
        e = i / kHaloPixels;
      }
      const int64_t h = h0 - 1 + hp / kHaloW, w = w0 - 1 + hp % kHaloW;
      A v = A(0);
      // The 1x1 part only needs the tile itself; its halo cells are never read.
      if (e < e_count && h >= 0 && h < a.height && w >= 0 && w < a.width) {
        const int64_t ch = channel_base + e0 + e;
        const A o = to_acc(a.output[a.out_strides.at(n, ch, h, w)]);
        if (o > A(0)) v = to_acc(a.grad_output[a.go_strides.at(n, ch, h, w)]);
      }
      g_tile[e * kHaloLd + hp] = v;
    }
    const int wt_elems = kExpandChunk * taps * kSqueezeChunk;
    for (int i = tid; i < wt_elems; i += kThreads) {
      const int s = i % kSqueezeChunk;
      const int tap = (i / kSqueezeChunk) % taps;
      const int e = i / (kSqueezeChunk * taps);
      A v = A(0);
      if (e < e_count && s < count) v = to_acc(weight[ws.at(e0 + e, sq0 + s, tap / 3, tap % 3)]);
      wt_tile[i] = v;
    }
    __syncthreads();
    if (is3) {
      for (int e = 0; e < e_count; ++e) {
        const A* g_row = g_tile + e * kHaloLd;
#pragma unroll
        for (int tap = 0; tap < 9; ++tap) {
          // output pixel p - (ky - 1, kx - 1) contributed to s at p through tap (ky, kx)
          const int offset = -((tap / 3 - 1) * kHaloW + (tap % 3 - 1));
          const A g0 = g_row[centre[0] + offset], g1 = g_row[centre[1] + offset];
          const A* w_row = wt_tile + (e * 9 + tap) * kSqueezeChunk;
#pragma unroll
          for (int j = 0; j < kSqueezePerWarp; ++j) {
            const int s = warp + kWarps * j;  // s < kSqueezeChunk always; zero weights beyond `count`
            const A wv = w_row[s];
            ds[0][j] += wv * g0;
            ds[1][j] += wv * g1;
          }
        }
      }
    } else {
      for (int e = 0; e < e_count; ++e) {
        const A g0 = g_tile[e * kHaloLd + centre[0]], g1 = g_tile[e * kHaloLd + centre[1]];
        const A* w_row = wt_tile + e * kSqueezeChunk;
#pragma unroll
        for (int j = 0; j < kSqueezePerWarp; ++j) {
          const A wv = w_row[warp + kWarps * j];
          ds[0][j] += wv * g0;
          ds[1][j] += wv * g1;
        }
      }
    }
  }

  // Squeeze pre-activation at the tile's pixels.
  A pre[2][kSqueezePerWarp];
#pragma unroll
  for (int k = 0; k < 2; ++k)
#pragma unroll
    for (int j = 0; j < kSqueezePerWarp; ++j) pre[k][j] = A(0);
  for (int64_t c0 = 0; c0 < a.in_channels; c0 += kInChunk) {
    const int c_count = static_cast<int>(imin(kInChunk, a.in_channels - c0));
    __syncthreads();
    for (int i = tid; i < kInChunk * kTilePixels; i += kThreads) {
      int c, p;
      if (a.x_channels_inner) {
        c = i % kInChunk;
        p = i / kInChunk;
      } else {
        p = i % kTilePixels;
        c = i / kTilePixels;
      }
      const int64_t h = h0 + p / kTileW, w = w0 + p % kTileW;
      A v = A(0);
      if (c < c_count && h < a.height && w < a.width) v = to_acc(a.x[a.x_strides.at(n, c0 + c, h, w)]);
      x_tile[c * kTileLd + p] = v;
    }
    for (int i = tid; i < kSqueezeChunk * kInChunk; i += kThreads) {
      const int s = i / kInChunk, c = i % kInChunk;
      A v = A(0);
      if (s < count && c < c_count) v = to_acc(a.squeeze_weight[a.wsq_strides.at(sq0 + s, c0 + c, 0, 0)]);
      wsq_tile[i] = v;
    }
    __syncthreads();
    for (int c = 0; c < c_count; ++c) {
      const A x0 = x_tile[c * kTileLd + lane], x1 = x_tile[c * kTileLd + lane + 32];
#pragma unroll
      for (int j = 0; j < kSqueezePerWarp; ++j) {
        const A wv = wsq_tile[(warp + kWarps * j) * kInChunk + c];
        pre[0][j] += wv * x0;
        pre[1][j] += wv * x1;
      }
    }
  }

#pragma unroll
  for (int j = 0; j < kSqueezePerWarp; ++j) {
    const int s = warp + kWarps * j;
    if (s >= count) continue;
    const A bias = a.squeeze_bias != nullptr ? to_acc(a.squeeze_bias[sq0 + s]) : A(0);
#pragma unroll
    for (int k = 0; k < 2; ++k) {
      const int64_t h = h0 + py[k], w = w0 + px[k];
      if (h >= a.height || w >= a.width) continue;
      const A v = pre[k][j] + bias;
      a.s_out[a.s_strides.at(n, sq0 + s, h, w)] = relu_acc(v);
      a.ds_out[a.ds_strides.at(n, sq0 + s, h, w)] = v > A(0) ? ds[k][j] : A(0);
    }
  }
}

// grad_x[n, c, p] = sum_s Wsq[s, c] ds_pre[n, s, p]. grid: x = N * tiles; each block loops over all of C.
template <typename T>
struct SqueezeInputGradArgs {
  using A = typename AccType<T>::type;
  const A* ds = nullptr;  // [N, S, H, W]
  const T* squeeze_weight = nullptr;
  T* grad_x = nullptr;    // [N, C, H, W]
  int64_t batch = 0, in_channels = 0, height = 0, width = 0, squeeze = 0;
  Strides4 ds_strides, wsq_strides, gx_strides;
  int64_t tiles_h = 0, tiles_w = 0;
  bool ds_channels_inner = false;
};

constexpr int kGradXChannels = 64;  // input channels per pass (8 per warp)

template <typename A>
constexpr size_t squeeze_input_grad_smem_bytes() {
  return (size_t(kSqueezeChunk) * kTileLd + size_t(kSqueezeChunk) * kGradXChannels) * sizeof(A);
}

template <typename T>
__global__ void __launch_bounds__(kThreads, 2) squeeze_input_grad_kernel(const SqueezeInputGradArgs<T> a) {
  using A = typename AccType<T>::type;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  A* ds_tile = reinterpret_cast<A*>(smem_raw);                // [kSqueezeChunk][kTileLd]
  A* w_tile = ds_tile + size_t(kSqueezeChunk) * kTileLd;       // [kSqueezeChunk][kGradXChannels]
  constexpr int kPerWarp = kGradXChannels / kWarps;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  int64_t t = blockIdx.x;
  const int64_t tile_w = t % a.tiles_w;
  t /= a.tiles_w;
  const int64_t tile_h = t % a.tiles_h;
  const int64_t n = t / a.tiles_h;
  const int64_t h0 = tile_h * kTileH, w0 = tile_w * kTileW;

  for (int64_t c0 = 0; c0 < a.in_channels; c0 += kGradXChannels) {
    A acc[2][kPerWarp];
#pragma unroll
    for (int k = 0; k < 2; ++k)
#pragma unroll
      for (int j = 0; j < kPerWarp; ++j) acc[k][j] = A(0);
    for (int64_t s0 = 0; s0 < a.squeeze; s0 += kSqueezeChunk) {
      const int s_count = static_cast<int>(imin(kSqueezeChunk, a.squeeze - s0));
      __syncthreads();
      for (int i = tid; i < kSqueezeChunk * kTilePixels; i += kThreads) {
        int s, p;
        if (a.ds_channels_inner) {
          s = i % kSqueezeChunk;
          p = i / kSqueezeChunk;
        } else {
          p = i % kTilePixels;
          s = i / kTilePixels;
        }
        const int64_t h = h0 + p / kTileW, w = w0 + p % kTileW;
        A v = A(0);
        if (s < s_count && h < a.height && w < a.width) v = a.ds[a.ds_strides.at(n, s0 + s, h, w)];
        ds_tile[s * kTileLd + p] = v;
      }
      for (int i = tid; i < kSqueezeChunk * kGradXChannels; i += kThreads) {
        const int c = i % kGradXChannels, s = i / kGradXChannels;
        A v = A(0);
        if (s < s_count && c0 + c < a.in_channels) v = to_acc(a.squeeze_weight[a.wsq_strides.at(s0 + s, c0 + c, 0, 0)]);
        w_tile[i] = v;
      }
      __syncthreads();
      for (int s = 0; s < s_count; ++s) {
        const A d0 = ds_tile[s * kTileLd + lane], d1 = ds_tile[s * kTileLd + lane + 32];
        const A* w_row = w_tile + s * kGradXChannels + warp * kPerWarp;
#pragma unroll
        for (int j = 0; j < kPerWarp; ++j) {
          const A wv = w_row[j];
          acc[0][j] += wv * d0;
          acc[1][j] += wv * d1;
        }
      }
    }
#pragma unroll
    for (int j = 0; j < kPerWarp; ++j) {
      const int64_t c = c0 + warp * kPerWarp + j;
      if (c >= a.in_channels) continue;
#pragma unroll
      for (int k = 0; k < 2; ++k) {
        const int p = lane + 32 * k;
        const int64_t h = h0 + p / kTileW, w = w0 + p % kTileW;
        if (h < a.height && w < a.width) a.grad_x[a.gx_strides.at(n, c, h, w)] = from_acc<T>(acc[k][j]);
      }
    }
  }
}

}  // namespace fire
}  // namespace cuda
}  // namespace squeezeae
