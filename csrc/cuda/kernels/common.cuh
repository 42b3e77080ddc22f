// Shared pieces of the CUDA kernels: plain tensor descriptors, the accumulation type and value conversions.
// No torch headers here: the kernel templates see raw pointers, sizes and strides only, so they compile fast
// and stand apart from the binding (csrc/cuda/*.cu fill the params structs and launch).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace squeezeae {
namespace cuda {

// Element strides of a 4-D [N, C, H, W] tensor, in elements. Any layout (NCHW, channels_last, views).
struct Strides4 {
  int64_t n = 0, c = 0, h = 0, w = 0;
  __host__ __device__ __forceinline__ int64_t at(int64_t in, int64_t ic, int64_t ih, int64_t iw) const {
    return in * n + ic * c + ih * h + iw * w;
  }
};

// Half types accumulate in float, double in double.
template <typename T>
struct AccType {
  using type = float;
};
template <>
struct AccType<double> {
  using type = double;
};

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_acc(float v);
template <typename T>
__device__ __forceinline__ T from_acc(double v);

template <>
__device__ __forceinline__ float from_acc<float>(float v) { return v; }
template <>
__device__ __forceinline__ double from_acc<double>(double v) { return v; }
template <>
__device__ __forceinline__ float from_acc<float>(double v) { return static_cast<float>(v); }
template <>
__device__ __forceinline__ double from_acc<double>(float v) { return static_cast<double>(v); }
template <>
__device__ __forceinline__ __half from_acc<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

template <typename T>
__device__ __forceinline__ T zero_value() {
  return from_acc<T>(0.0f);
}

// NaN propagates, as in torch.relu.
template <typename A>
__device__ __forceinline__ A relu_acc(A v) {
  return v < A(0) ? A(0) : v;
}

// Eight consecutive values from shared memory; `p` is 32-byte aligned (float: two 16-byte loads).
template <typename A>
__device__ __forceinline__ void load_vec8(const A* p, A (&out)[8]) {
#pragma unroll
  for (int i = 0; i < 8; ++i) out[i] = p[i];
}
template <>
__device__ __forceinline__ void load_vec8<float>(const float* p, float (&out)[8]) {
  const float4 lo = *reinterpret_cast<const float4*>(p);
  const float4 hi = *reinterpret_cast<const float4*>(p + 4);
  out[0] = lo.x; out[1] = lo.y; out[2] = lo.z; out[3] = lo.w;
  out[4] = hi.x; out[5] = hi.y; out[6] = hi.z; out[7] = hi.w;
}

__host__ __device__ __forceinline__ int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

__host__ __device__ __forceinline__ int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
__host__ __device__ __forceinline__ int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }

// Floor division for a possibly negative numerator and a positive denominator.
__host__ __device__ __forceinline__ int64_t floor_div(int64_t a, int64_t b) {
  const int64_t q = a / b;
  return (a % b != 0 && a < 0) ? q - 1 : q;
}

}  // namespace cuda
}  // namespace squeezeae
