// max_unpool2d kernels on raw pointers + strides.
//
// Semantics (same as csrc/cpu/unpool.cpp): output[n, c, index / W_out, index % W_out] = input[n, c, ph, pw]
// with index = indices[n, c, ph, pw]; zero where no index points; with duplicate indices the pooled element
// latest in row-major (ph, pw) order of its (n, c) plane wins.
//
// Two ways to get there, both deterministic:
//  - gather (fast, output-stationary): valid when every index lies inside its own pooling window (what
//    max_pool2d produces). Each output element looks only at the pooled elements whose windows cover it,
//    latest first, and takes the first that points to it. No atomics, no zero-fill pass, each output written
//    once.
//  - winner (general): an int32 buffer per output element, atomicMax of (pooled position + 1) per in-range
//    index, then a pass writes input[winner - 1] or 0. Works for arbitrary indices.
// unpool_check_indices_kernel tells the launcher which one applies and whether an index is out of range.
#pragma once

#include "common.cuh"

namespace squeezeae {
namespace cuda {

struct UnpoolParams {
  int64_t batch = 0, channels = 0;
  int64_t in_h = 0, in_w = 0;    // pooled (input) plane
  int64_t out_h = 0, out_w = 0;  // unpooled (output) plane
  int64_t kernel_h = 1, kernel_w = 1, stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0;
  Strides4 input, indices, output;
  // Walk elements channels-fastest (channels_last tensors) rather than width-fastest, so that neighbouring
  // threads touch neighbouring addresses.
  bool channels_inner = false;
};

// Flags written by the check kernels (one int64 each, zero-initialised by the launcher).
enum UnpoolFlag : int { kFlagOutOfRange = 0, kFlagOutOfWindow = 1, kFlagBadIndexValue = 2, kNumFlags = 3 };

struct Coord4 {
  int64_t n, c, h, w;
};

__device__ __forceinline__ Coord4 decompose(int64_t linear, int64_t C, int64_t H, int64_t W, bool channels_inner) {
  Coord4 r;
  if (channels_inner) {
    r.c = linear % C;
    int64_t t = linear / C;
    r.w = t % W;
    t /= W;
    r.h = t % H;
    r.n = t / H;
  } else {
    r.w = linear % W;
    int64_t t = linear / W;
    r.h = t % H;
    t /= H;
    r.c = t % C;
    r.n = t / C;
  }
  return r;
}

__device__ __forceinline__ void report_bad_index(unsigned long long* flags, int64_t index) {
  atomicOr(flags + kFlagOutOfRange, 1ull);
  // Which offending value is reported is not deterministic; that one is, is enough for the message.
  atomicExch(flags + kFlagBadIndexValue, static_cast<unsigned long long>(index));
}

// Sets kFlagOutOfRange (with one offending value) and kFlagOutOfWindow.
static __global__ void unpool_check_indices_kernel(const int64_t* __restrict__ indices, UnpoolParams p,
                                            unsigned long long* __restrict__ flags) {
  const int64_t total = p.batch * p.channels * p.in_h * p.in_w;
  const int64_t plane = p.out_h * p.out_w;
  bool out_of_window = false;
  for (int64_t linear = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; linear < total;
       linear += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const Coord4 e = decompose(linear, p.channels, p.in_h, p.in_w, p.channels_inner);
    const int64_t index = indices[p.indices.at(e.n, e.c, e.h, e.w)];
    if (index < 0 || index >= plane) {
      report_bad_index(flags, index);
      out_of_window = true;
      continue;
    }
    const int64_t oh = index / p.out_w, ow = index % p.out_w;
    const int64_t h0 = e.h * p.stride_h - p.pad_h, w0 = e.w * p.stride_w - p.pad_w;
    if (oh < h0 || oh >= h0 + p.kernel_h || ow < w0 || ow >= w0 + p.kernel_w) out_of_window = true;
  }
  if (out_of_window) atomicOr(flags + kFlagOutOfWindow, 1ull);
}

// The unpooled value at (n, c, oh, ow), assuming every index lies inside its pooling window: the latest
// (in row-major order) pooled element whose window covers (oh, ow) and whose index points to it, else zero.
template <typename T>
__device__ __forceinline__ T unpooled_value(const T* __restrict__ input, const int64_t* __restrict__ indices,
                                            const UnpoolParams& p, int64_t n, int64_t c, int64_t oh, int64_t ow) {
  // Pooled row ph covers rows ph*stride - pad .. ph*stride - pad + kernel - 1.
  const int64_t ph_lo = imax(0, floor_div(oh + p.pad_h - p.kernel_h + p.stride_h, p.stride_h));
  const int64_t ph_hi = imin(p.in_h - 1, floor_div(oh + p.pad_h, p.stride_h));
  const int64_t pw_lo = imax(0, floor_div(ow + p.pad_w - p.kernel_w + p.stride_w, p.stride_w));
  const int64_t pw_hi = imin(p.in_w - 1, floor_div(ow + p.pad_w, p.stride_w));
  const int64_t target = oh * p.out_w + ow;
  for (int64_t ph = ph_hi; ph >= ph_lo; --ph) {
    for (int64_t pw = pw_hi; pw >= pw_lo; --pw) {
      if (indices[p.indices.at(n, c, ph, pw)] == target) return input[p.input.at(n, c, ph, pw)];
    }
  }
  return zero_value<T>();
}

template <typename T>
__global__ void unpool_gather_kernel(const T* __restrict__ input, const int64_t* __restrict__ indices,
                                     T* __restrict__ output, UnpoolParams p) {
  const int64_t total = p.batch * p.channels * p.out_h * p.out_w;
  for (int64_t linear = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; linear < total;
       linear += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const Coord4 e = decompose(linear, p.channels, p.out_h, p.out_w, p.channels_inner);
    output[p.output.at(e.n, e.c, e.h, e.w)] = unpooled_value(input, indices, p, e.n, e.c, e.h, e.w);
  }
}

// winner[(n * C + c) * plane + index] = max over pooled elements pointing there of (ph * in_w + pw + 1).
// Out-of-range indices are skipped (the launcher has raised before, or is capturing a graph).
static __global__ void unpool_scatter_winner_kernel(const int64_t* __restrict__ indices, int32_t* __restrict__ winner,
                                             UnpoolParams p) {
  const int64_t total = p.batch * p.channels * p.in_h * p.in_w;
  const int64_t plane = p.out_h * p.out_w;
  for (int64_t linear = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; linear < total;
       linear += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const Coord4 e = decompose(linear, p.channels, p.in_h, p.in_w, p.channels_inner);
    const int64_t index = indices[p.indices.at(e.n, e.c, e.h, e.w)];
    if (index < 0 || index >= plane) continue;
    atomicMax(winner + (e.n * p.channels + e.c) * plane + index, static_cast<int32_t>(e.h * p.in_w + e.w + 1));
  }
}

template <typename T>
__global__ void unpool_write_winner_kernel(const T* __restrict__ input, const int32_t* __restrict__ winner,
                                           T* __restrict__ output, UnpoolParams p) {
  const int64_t plane = p.out_h * p.out_w;
  const int64_t total = p.batch * p.channels * plane;
  for (int64_t linear = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; linear < total;
       linear += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const Coord4 e = decompose(linear, p.channels, p.out_h, p.out_w, p.channels_inner);
    const int32_t win = winner[(e.n * p.channels + e.c) * plane + e.h * p.out_w + e.w];
    T value = zero_value<T>();
    if (win > 0) {
      const int64_t pos = win - 1;
      value = input[p.input.at(e.n, e.c, pos / p.in_w, pos % p.in_w)];
    }
    output[p.output.at(e.n, e.c, e.h, e.w)] = value;
  }
}

// grad_input[n, c, ph, pw] = grad_output[n, c, index] (zero, and a flag, for an out-of-range index).
// Here `input` strides describe grad_input and `output` strides grad_output.
template <typename T>
__global__ void unpool_backward_kernel(const T* __restrict__ grad_output, const int64_t* __restrict__ indices,
                                       T* __restrict__ grad_input, UnpoolParams p,
                                       unsigned long long* __restrict__ flags) {
  const int64_t total = p.batch * p.channels * p.in_h * p.in_w;
  const int64_t plane = p.out_h * p.out_w;
  for (int64_t linear = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; linear < total;
       linear += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const Coord4 e = decompose(linear, p.channels, p.in_h, p.in_w, p.channels_inner);
    const int64_t index = indices[p.indices.at(e.n, e.c, e.h, e.w)];
    T value = zero_value<T>();
    if (index < 0 || index >= plane) {
      report_bad_index(flags, index);
    } else {
      value = grad_output[p.output.at(e.n, e.c, index / p.out_w, index % p.out_w)];
    }
    grad_input[p.input.at(e.n, e.c, e.h, e.w)] = value;
  }
}

}  // namespace cuda
}  // namespace squeezeae
