// Row-major GEMM on raw pointers for the CPU tile kernels: C[M, N] (+)= A[M, K] * B[K, N] with leading
// dimensions, so operands can be channel slices or shifted windows of a tile buffer.
//
// float goes through at::native::cpublas::brgemm (oneDNN's micro-kernel; ~2.5x MKL-through-at::mm on the
// small Fire-sized GEMMs on AVX-512 machines, see DESIGN.md) when it works on this CPU; double, and float on
// CPUs where the ukernel is unavailable (or with SQUEEZEAE_CPU_GEMM=plain), use a plain loop nest that the
// compiler vectorises along N.
#pragma once

#include <ATen/native/CPUBlas.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>

namespace squeezeae {
namespace cpu {

template <typename T>
inline void gemm_plain(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb, T* C,
                       int64_t ldc, bool accumulate) {
  for (int64_t i = 0; i < M; ++i) {
    T* __restrict__ c = C + i * ldc;
    if (!accumulate) std::fill(c, c + N, T(0));
    const T* a = A + i * lda;
    for (int64_t k = 0; k < K; ++k) {
      const T a_ik = a[k];
      const T* __restrict__ b = B + k * ldb;
      for (int64_t j = 0; j < N; ++j) c[j] += a_ik * b[j];
    }
  }
}

// Decided once per process: the ukernel must exist on this CPU and give the right answer on a probe.
inline bool brgemm_usable() {
  static const bool usable = [] {
    const char* forced = std::getenv("SQUEEZEAE_CPU_GEMM");
    if (forced != nullptr && std::strcmp(forced, "plain") == 0) return false;
    try {
      const float a[6] = {1, 2, 3, 4, 5, 6};  // [2, 3]
      const float b[6] = {1, 0, 0, 1, 1, 1};  // [3, 2]
      float c[4] = {-1, -1, -1, -1};
      at::native::cpublas::brgemm(2, 2, 3, 3, 2, 2, false, a, b, c, false);
      at::native::cpublas::brgemm_release(false);
      return c[0] == 4 && c[1] == 5 && c[2] == 10 && c[3] == 11;
    } catch (...) {
      return false;
    }
  }();
  return usable;
}

inline const char* cpu_gemm_backend() { return brgemm_usable() ? "onednn-brgemm" : "plain"; }

template <typename T>
inline void gemm(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb, T* C,
                 int64_t ldc, bool accumulate) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (!accumulate)
      for (int64_t i = 0; i < M; ++i) std::fill(C + i * ldc, C + i * ldc + N, T(0));
    return;
  }
  if constexpr (std::is_same_v<T, float>) {
    if (brgemm_usable()) {
      at::native::cpublas::brgemm(M, N, K, lda, ldb, ldc, accumulate, A, B, C, false);
      return;
    }
  }
  gemm_plain(M, N, K, A, lda, B, ldb, C, ldc, accumulate);
}

// Ends a thread's batch of gemm calls (frees the ukernel's per-thread hardware context).
inline void gemm_release() {
  if (brgemm_usable()) at::native::cpublas::brgemm_release(false);
}

}  // namespace cpu
}  // namespace squeezeae
