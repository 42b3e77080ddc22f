// The four strides of an [N, C, H, W] tensor, for kernels that walk any layout by element offsets.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace squeezeae {
namespace cpu {

struct Strides4 {
  int64_t n = 0, c = 0, h = 0, w = 0;
  Strides4() = default;
  explicit Strides4(const at::Tensor& t) : n(t.stride(0)), c(t.stride(1)), h(t.stride(2)), w(t.stride(3)) {}
  int64_t at(int64_t in, int64_t ic, int64_t ih, int64_t iw) const { return in * n + ic * c + ih * h + iw * w; }
  // Each plane's rows of `width` elements packed back to back (NCHW-like): a band of rows of one plane is one
  // contiguous run, and a band of every plane is a [C, pixels] matrix with leading dimension c.
  bool rows_packed(int64_t width) const { return w == 1 && h == width; }
  // Each image's pixels of `channels` elements packed back to back, rows too (channels_last): a band of rows is
  // one [pixels, channels] matrix.
  bool pixels_packed(int64_t channels, int64_t width) const {
    return c == 1 && w == channels && h == width * channels;
  }
};

}  // namespace cpu
}  // namespace squeezeae
