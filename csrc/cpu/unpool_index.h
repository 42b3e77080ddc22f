// Pooling-index helpers for the CPU unpool kernels: validate every index before anything is written, and
// find which pooled rows can point into a band of output rows.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "checks.h"
#include "cpu/strides.h"

namespace squeezeae {
namespace cpu {

struct PoolGeometry {
  int64_t kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w;
  int64_t pooled_h, pooled_w, out_h, out_w;
  // True when every index lies inside its own pooling window (always so for indices from max_pool2d). Only
  // then may a band of output rows look at the pooled rows whose windows overlap it; otherwise every pooled
  // row is scanned (F.max_unpool2d accepts any index inside the plane).
  bool in_window = true;

  // Pooled rows [first, last) whose windows overlap output rows [r0, r1).
  std::pair<int64_t, int64_t> pooled_rows_for(int64_t r0, int64_t r1) const {
    if (!in_window) return {0, pooled_h};
    // window of pooled row p covers [p * stride - pad, p * stride - pad + kernel)
    const int64_t lo_num = r0 + pad_h - kernel_h + 1;  // p * stride >= lo_num
    int64_t first = lo_num <= 0 ? 0 : (lo_num + stride_h - 1) / stride_h;
    int64_t last = (r1 - 1 + pad_h) / stride_h + 1;  // p * stride <= r1 - 1 + pad
    first = std::max<int64_t>(first, 0);
    last = std::min<int64_t>(last, pooled_h);
    return {first, std::max(first, last)};
  }
};

// Checks every index of `indices` [N, C, Hp, Wp] against the output plane (raising ATen's message for the
// first bad one found) and records whether all lie in their windows.
inline PoolGeometry scan_pool_indices(const at::Tensor& indices, at::IntArrayRef kernel_size,
                                      at::IntArrayRef stride, at::IntArrayRef padding, int64_t out_h,
                                      int64_t out_w) {
  PoolGeometry g{kernel_size[0], kernel_size[1], stride[0], stride[1], padding[0], padding[1],
                 indices.size(2), indices.size(3), out_h, out_w};
  const int64_t N = indices.size(0), C = indices.size(1), plane = out_h * out_w;
  const Strides4 st(indices);
  const int64_t* idx = indices.const_data_ptr<int64_t>();
  std::atomic<bool> all_in_window{true};
  at::parallel_for(0, N * C, 16, [&](int64_t begin, int64_t end) {
    bool in_window = true;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / C, c = item % C;
      for (int64_t ph = 0; ph < g.pooled_h; ++ph) {
        const int64_t row0 = ph * g.stride_h - g.pad_h;
        for (int64_t pw = 0; pw < g.pooled_w; ++pw) {
          const int64_t index = idx[st.at(n, c, ph, pw)];
          if (index < 0 || index >= plane) throw_invalid_index(index, out_h, out_w);
          const int64_t row = index / out_w, col = index % out_w, col0 = pw * g.stride_w - g.pad_w;
          in_window = in_window && row >= row0 && row < row0 + g.kernel_h && col >= col0 &&
                      col < col0 + g.kernel_w;
        }
      }
    }
    if (!in_window) all_in_window.store(false);
  });
  g.in_window = all_in_window.load();
  return g;
}

}  // namespace cpu
}  // namespace squeezeae
