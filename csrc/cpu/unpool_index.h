// Pooling-index helpers for the CPU unpool kernels: validate every index before anything is written, and
// find which pooled rows can point into a band of output rows.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "checks.h"
#include "cpu/epilogues.h"
#include "cpu/strides.h"

namespace squeezeae {
namespace cpu {

struct PoolGeometry {
  int64_t kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w;
  int64_t pooled_h, pooled_w, out_h, out_w;
  // True when every index lies in the rows of its own pooling window (always so for indices from
  // max_pool2d; columns do not matter here). Only then may a band of output rows look at just the pooled rows
  // whose windows overlap it; otherwise every pooled row is scanned (F.max_unpool2d accepts any index inside
  // the plane).
  bool in_window_rows = true;

  // Pooled rows [first, last) whose windows overlap output rows [r0, r1).
  std::pair<int64_t, int64_t> pooled_rows_for(int64_t r0, int64_t r1) const {
    if (!in_window_rows) return {0, pooled_h};
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
// first bad one found) and records whether all lie in their windows' rows.
inline PoolGeometry scan_pool_indices(const at::Tensor& indices, at::IntArrayRef kernel_size,
                                      at::IntArrayRef stride, at::IntArrayRef padding, int64_t out_h,
                                      int64_t out_w) {
  PoolGeometry g{kernel_size[0], kernel_size[1], stride[0], stride[1], padding[0], padding[1],
                 indices.size(2), indices.size(3), out_h, out_w};
  const int64_t N = indices.size(0), C = indices.size(1), plane = out_h * out_w;
  const Strides4 st(indices);
  const int64_t* idx = indices.const_data_ptr<int64_t>();
  std::atomic<bool> all_in_window_rows{true}, any_out_of_plane{false};
  // channels_last: one pooled row of one image per item, channels innermost; otherwise one (n, c) plane.
  const bool channels_inner = st.c <= st.w;
  at::parallel_for(0, channels_inner ? N * g.pooled_h : N * C, 4, [&](int64_t begin, int64_t end) {
    int flags = 0;
    for (int64_t item = begin; item < end; ++item) {
      if (channels_inner) {
        const int64_t n = item / g.pooled_h, ph = item % g.pooled_h;
        for (int64_t pw = 0; pw < g.pooled_w; ++pw)
          flags |= check_pool_indices(idx + st.at(n, 0, ph, pw), 1, 0, ph * g.stride_h - g.pad_h, 0, C, st.c,
                                      g.kernel_h, out_h, out_w);
      } else {
        const int64_t n = item / C, c = item % C;
        flags |= check_pool_indices(idx + st.at(n, c, 0, 0), g.pooled_h, st.h, -g.pad_h, g.stride_h, g.pooled_w,
                                    st.w, g.kernel_h, out_h, out_w);
      }
    }
    if (flags & 1) any_out_of_plane.store(true);
    if (flags & 2) all_in_window_rows.store(false);
  });
  if (any_out_of_plane.load()) {  // name the first bad index, in (n, c, h, w) order
    const at::Tensor flat = indices.contiguous().view(-1);
    const int64_t* p = flat.const_data_ptr<int64_t>();
    for (int64_t i = 0; i < flat.numel(); ++i)
      if (p[i] < 0 || p[i] >= plane) throw_invalid_index(p[i], out_h, out_w);
  }
  g.in_window_rows = all_in_window_rows.load();
  return g;
}

}  // namespace cpu
}  // namespace squeezeae
