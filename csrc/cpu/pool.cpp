// max_pool2d on the CPU: F.max_pool2d's values (and, when asked, its indices) and its backward.
//
// Why a kernel of our own: ATen's CPU max_pool2d always computes the indices, and for NCHW inputs it walks each
// window element by element: a SqueezeNet's first pool (64 x 111 x 111 -> 55 x 55, batch 1) took 2.7-2.9 ms there
// on a 2-core Xeon, as long as its first three Fires together, and 0.22 ms in channels_last.
//
// Semantics are ATen's to the bit: the window rule (padding, dilation, ceil_mode), and within a window the first
// maximum in row-major order wins unless a NaN comes, when the last NaN wins (`value > max || isnan(value)` over
// the window in row-major order). Indices are flat positions h * W + w in the input's plane.
//
// channels_last: a work item is a band of output rows of one image; each output pixel folds its window's pixels
// over the channels, which vectorise. NCHW: a work item is a band of output rows of one plane; each input row of
// the band is first folded along the row (an output column's window of one row), then the rows along the column.
// Folding rows first keeps the row-major rule: the row fold keeps a row's first maximum, the column fold the first
// row holding the window's maximum (or its last NaN).
//
// The backward adds grad_output into a zeroed grad_input at the indices, each plane's outputs in row-major order
// (ATen's order, so sums of ties come out the same).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/NumericUtils.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <tuple>
#include <vector>

#include "checks.h"
#include "cpu/clones.h"
#include "shapes.h"

namespace squeezeae {
namespace {

// The rows (or columns) of output position `o`'s window that lie inside the input: [start, end) by `dilation`.
struct Span {
  int64_t start, end;
};

inline Span window(int64_t o, int64_t stride, int64_t pad, int64_t kernel, int64_t dilation, int64_t size) {
  int64_t start = o * stride - pad;
  const int64_t end = std::min(start + (kernel - 1) * dilation + 1, size);
  while (start < 0) start += dilation;
  return {start, end};
}

// ATen's update rule: a later element replaces the running maximum if greater, or if it is a NaN.
template <typename T>
inline bool replaces(T value, T running) {
  return value > running || at::_isnan(value);
}

template <typename T>
constexpr T lowest() {
  return -std::numeric_limits<T>::infinity();
}

// One output pixel's window, for `count` channels side by side (kCount > 0: that many, fixed, so that the running
// maxima stay in registers; 0: read `count`, running in o and oi).
template <typename T, bool kIndices, int64_t kCount>
SQUEEZEAE_INLINE void fold_pixels(const T* in, T* __restrict__ o, int64_t* __restrict__ oi, int64_t C, int64_t W,
                                  const Span& rows, const Span& cols, int64_t dilation_h, int64_t dilation_w,
                                  int64_t count) {
  constexpr int64_t kLocal = kCount > 0 ? kCount : 1;
  T local[kLocal];
  int64_t local_index[kLocal];
  T* __restrict__ m = kCount > 0 ? local : o;
  int64_t* __restrict__ mi = kCount > 0 ? local_index : oi;
  const int64_t n = kCount > 0 ? kCount : count;
  const int64_t first = rows.start * W + cols.start;
  for (int64_t c = 0; c < n; ++c) m[c] = lowest<T>();
  if constexpr (kIndices)
    for (int64_t c = 0; c < n; ++c) mi[c] = first;
  for (int64_t ih = rows.start; ih < rows.end; ih += dilation_h)
    for (int64_t iw = cols.start; iw < cols.end; iw += dilation_w) {
      const T* __restrict__ p = in + (ih * W + iw) * C;
      const int64_t position = ih * W + iw;
      for (int64_t c = 0; c < n; ++c) {
        const T v = p[c];
        const bool take = replaces(v, m[c]);
        m[c] = take ? v : m[c];
        if constexpr (kIndices) mi[c] = take ? position : mi[c];
      }
    }
  if constexpr (kCount > 0) {
    for (int64_t c = 0; c < n; ++c) o[c] = m[c];
    if constexpr (kIndices)
      for (int64_t c = 0; c < n; ++c) oi[c] = mi[c];
  }
}

// channels_last: output rows [oh0, oh1) of one image. in: [H][W][C], out and idx: [OH][OW][C]. Channels go in
// blocks of 64 (four AVX-512 registers of float32), the rest together.
template <typename T, bool kIndices>
SQUEEZEAE_INLINE void pool_rows_channels_last(const T* in, T* out, int64_t* idx, const PoolDims& d, int64_t oh0,
                                              int64_t oh1) {
  constexpr int64_t kBlock = 64;
  const int64_t C = d.channels, W = d.width, full = C / kBlock * kBlock;
  for (int64_t oh = oh0; oh < oh1; ++oh) {
    const Span rows = window(oh, d.stride_h, d.pad_h, d.kernel_h, d.dilation_h, d.height);
    for (int64_t ow = 0; ow < d.out_width; ++ow) {
      const Span cols = window(ow, d.stride_w, d.pad_w, d.kernel_w, d.dilation_w, W);
      const int64_t at = (oh * d.out_width + ow) * C;
      for (int64_t c = 0; c < full; c += kBlock)
        fold_pixels<T, kIndices, kBlock>(in + c, out + at + c, kIndices ? idx + at + c : nullptr, C, W, rows, cols,
                                         d.dilation_h, d.dilation_w, kBlock);
      if (full < C)
        fold_pixels<T, kIndices, 0>(in + full, out + at + full, kIndices ? idx + at + full : nullptr, C, W, rows,
                                    cols, d.dilation_h, d.dilation_w, C - full);
    }
  }
}

// NCHW, the row fold: dst[ow] = first maximum of row[] over output column ow's window, col[ow] its column.
// kKernel/kStride > 0 fix the window's width and stride (dilation 1) so that the interior loop vectorises;
// 0 reads them from `d`.
template <typename T, bool kIndices, int kKernel, int kStride>
SQUEEZEAE_INLINE void fold_row(const T* __restrict__ row, T* __restrict__ dst, int64_t* __restrict__ col,
                               const PoolDims& d) {
  const int64_t kernel = kKernel > 0 ? kKernel : d.kernel_w, stride = kStride > 0 ? kStride : d.stride_w;
  const int64_t dilation = kKernel > 0 ? 1 : d.dilation_w, W = d.width, OW = d.out_width;
  auto edge = [&](int64_t ow) {
    const Span cols = window(ow, stride, d.pad_w, kernel, dilation, W);
    T m = lowest<T>();
    int64_t at = cols.start;
    for (int64_t iw = cols.start; iw < cols.end; iw += dilation)
      if (replaces(row[iw], m)) m = row[iw], at = iw;
    dst[ow] = m;
    if constexpr (kIndices) col[ow] = at;
  };
  // interior: windows wholly inside the row, ow * stride - pad >= 0 and ow * stride - pad + span <= W
  const int64_t span = (kernel - 1) * dilation + 1;
  const int64_t lo = std::min(OW, (d.pad_w + stride - 1) / stride);
  const int64_t hi = std::max(lo, std::min(OW, W - span + d.pad_w >= 0 ? (W - span + d.pad_w) / stride + 1 : 0));
  for (int64_t ow = 0; ow < lo; ++ow) edge(ow);
  for (int64_t ow = lo; ow < hi; ++ow) {
    const int64_t base = ow * stride - d.pad_w;
    T m = row[base];
    int64_t at = base;
    for (int64_t j = 1; j < kernel; ++j) {
      const T v = row[base + j * dilation];
      const bool take = replaces(v, m);
      m = take ? v : m;
      if constexpr (kIndices) at = take ? base + j * dilation : at;
    }
    dst[ow] = m;
    if constexpr (kIndices) col[ow] = at;
  }
  for (int64_t ow = hi; ow < OW; ++ow) edge(ow);
}

// NCHW: output rows [oh0, oh1) of one plane. in: [H][W], out and idx: [OH][OW]. fold/fold_col: scratch for the
// folded input rows of the band, OW each.
template <typename T, bool kIndices, int kKernel, int kStride>
SQUEEZEAE_INLINE void pool_rows_planar(const T* in, T* out, int64_t* idx, const PoolDims& d, int64_t oh0,
                                       int64_t oh1, T* fold, int64_t* fold_col) {
  const int64_t OW = d.out_width, W = d.width;
  // the band's input rows (with dilation, a window's first row inside the input need not grow with oh)
  const int64_t r0 = std::max<int64_t>(0, oh0 * d.stride_h - d.pad_h);
  const int64_t r1 = window(oh1 - 1, d.stride_h, d.pad_h, d.kernel_h, d.dilation_h, d.height).end;
  for (int64_t ih = r0; ih < r1; ++ih)
    fold_row<T, kIndices, kKernel, kStride>(in + ih * W, fold + (ih - r0) * OW, fold_col + (ih - r0) * OW, d);
  for (int64_t oh = oh0; oh < oh1; ++oh) {
    const Span rows = window(oh, d.stride_h, d.pad_h, d.kernel_h, d.dilation_h, d.height);
    T* __restrict__ o = out + oh * OW;
    int64_t* __restrict__ oi = kIndices ? idx + oh * OW : nullptr;
    if (rows.start >= rows.end) {  // a window of padding only (dilation can skip every input row): ATen's -inf
      for (int64_t ow = 0; ow < OW; ++ow) {
        o[ow] = lowest<T>();
        if constexpr (kIndices)
          oi[ow] = rows.start * W + window(ow, d.stride_w, d.pad_w, d.kernel_w, d.dilation_w, W).start;
      }
      continue;
    }
    const T* __restrict__ f = fold + (rows.start - r0) * OW;
    for (int64_t ow = 0; ow < OW; ++ow) o[ow] = f[ow];
    if constexpr (kIndices) {
      const int64_t* __restrict__ fc = fold_col + (rows.start - r0) * OW;
      const int64_t row_base = rows.start * W;
      for (int64_t ow = 0; ow < OW; ++ow) oi[ow] = row_base + fc[ow];
    }
    for (int64_t ih = rows.start + d.dilation_h; ih < rows.end; ih += d.dilation_h) {
      f = fold + (ih - r0) * OW;
      const int64_t* __restrict__ fc = fold_col + (ih - r0) * OW;
      const int64_t row_base = ih * W;
      for (int64_t ow = 0; ow < OW; ++ow) {
        const T v = f[ow];
        const bool take = replaces(v, o[ow]);
        o[ow] = take ? v : o[ow];
        if constexpr (kIndices) oi[ow] = take ? row_base + fc[ow] : oi[ow];
      }
    }
  }
}

template <typename T, bool kIndices>
SQUEEZEAE_INLINE void pool_planar_dispatch(const T* in, T* out, int64_t* idx, const PoolDims& d, int64_t oh0,
                                           int64_t oh1, T* fold, int64_t* fold_col) {
  const bool plain = d.dilation_w == 1;
  if (plain && d.kernel_w == 3 && d.stride_w == 2)
    pool_rows_planar<T, kIndices, 3, 2>(in, out, idx, d, oh0, oh1, fold, fold_col);
  else if (plain && d.kernel_w == 2 && d.stride_w == 2)
    pool_rows_planar<T, kIndices, 2, 2>(in, out, idx, d, oh0, oh1, fold, fold_col);
  else if (plain && d.kernel_w == 3 && d.stride_w == 1)
    pool_rows_planar<T, kIndices, 3, 1>(in, out, idx, d, oh0, oh1, fold, fold_col);
  else
    pool_rows_planar<T, kIndices, 0, 0>(in, out, idx, d, oh0, oh1, fold, fold_col);
}

// One band, any dtype, with indices where idx is given.
template <typename T>
SQUEEZEAE_INLINE void pool_band_channels_last(const T* in, T* out, int64_t* idx, const PoolDims& d, int64_t oh0,
                                              int64_t oh1) {
  if (idx != nullptr)
    pool_rows_channels_last<T, true>(in, out, idx, d, oh0, oh1);
  else
    pool_rows_channels_last<T, false>(in, out, idx, d, oh0, oh1);
}

template <typename T>
SQUEEZEAE_INLINE void pool_band_planar(const T* in, T* out, int64_t* idx, const PoolDims& d, int64_t oh0,
                                       int64_t oh1, T* fold, int64_t* fold_col) {
  if (idx != nullptr)
    pool_planar_dispatch<T, true>(in, out, idx, d, oh0, oh1, fold, fold_col);
  else
    pool_planar_dispatch<T, false>(in, out, idx, d, oh0, oh1, fold, fold_col);
}

// float32 builds of the two, cloned for AVX-512 / AVX2 / baseline (clones.h); overloads, so that the dtype
// dispatch below picks them for float32 and the baseline templates for the other dtypes.
SQUEEZEAE_CLONES void pool_band_channels_last(const float* in, float* out, int64_t* idx, const PoolDims& d,
                                              int64_t oh0, int64_t oh1) {
  pool_band_channels_last<float>(in, out, idx, d, oh0, oh1);
}

SQUEEZEAE_CLONES void pool_band_planar(const float* in, float* out, int64_t* idx, const PoolDims& d, int64_t oh0,
                                       int64_t oh1, float* fold, int64_t* fold_col) {
  pool_band_planar<float>(in, out, idx, d, oh0, oh1, fold, fold_col);
}

// Output rows per work item: enough items for 4 per thread, whole images or planes where there are that many.
int64_t band_rows(int64_t units, int64_t out_height) {
  const int64_t wanted = std::max<int64_t>(1, (4 * at::get_num_threads() + units - 1) / units);
  const int64_t bands = std::min(wanted, out_height);
  return (out_height + bands - 1) / bands;
}

std::tuple<at::Tensor, at::Tensor> max_pool2d_forward(const char* op, const at::Tensor& input_arg,
                                                      at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                                      at::IntArrayRef padding, at::IntArrayRef dilation,
                                                      bool ceil_mode, bool with_indices) {
  const PoolDims d = check_max_pool(op, input_arg, kernel_size, stride, padding, dilation, ceil_mode);
  const at::MemoryFormat format = output_memory_format(input_arg);
  const bool channels_last = format == at::MemoryFormat::ChannelsLast;
  const at::Tensor input = input_arg.contiguous(format);  // the kernels walk packed rows or packed pixels
  const std::vector<int64_t> sizes{d.batch, d.channels, d.out_height, d.out_width};
  at::Tensor output = empty_like_layout(input, sizes);
  at::Tensor indices = with_indices ? at::empty(sizes, input.options().dtype(at::kLong).memory_format(format))
                                    : at::Tensor();
  if (output.numel() == 0) return {output, indices};
  const int64_t in_plane = d.height * d.width, out_plane = d.out_height * d.out_width;
  int64_t* idx_ptr = with_indices ? indices.mutable_data_ptr<int64_t>() : nullptr;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "max_pool2d_cpu", [&] {
    const scalar_t* in_ptr = input.const_data_ptr<scalar_t>();
    scalar_t* out_ptr = output.mutable_data_ptr<scalar_t>();
    if (channels_last) {
      const int64_t rows = band_rows(d.batch, d.out_height);
      const int64_t bands = (d.out_height + rows - 1) / rows;
      const int64_t in_image = in_plane * d.channels, out_image = out_plane * d.channels;
      at::parallel_for(0, d.batch * bands, 1, [&](int64_t begin, int64_t end) {
        for (int64_t item = begin; item < end; ++item) {
          const int64_t n = item / bands, oh0 = (item % bands) * rows, oh1 = std::min(d.out_height, oh0 + rows);
          const scalar_t* in_n = in_ptr + n * in_image;
          scalar_t* out_n = out_ptr + n * out_image;
          int64_t* idx_n = with_indices ? idx_ptr + n * out_image : nullptr;
          pool_band_channels_last(in_n, out_n, idx_n, d, oh0, oh1);
        }
      });
      return;
    }
    const int64_t planes = d.batch * d.channels;
    const int64_t rows = band_rows(planes, d.out_height);
    const int64_t bands = (d.out_height + rows - 1) / rows;
    // a band's folded input rows: (rows - 1) * stride + span, at most the plane's height
    const int64_t fold_rows = std::min(d.height, (rows - 1) * d.stride_h + (d.kernel_h - 1) * d.dilation_h + 1);
    at::parallel_for(0, planes * bands, 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> fold(fold_rows * d.out_width);
      std::vector<int64_t> fold_col(with_indices ? fold_rows * d.out_width : 0);
      for (int64_t item = begin; item < end; ++item) {
        const int64_t plane = item / bands, oh0 = (item % bands) * rows, oh1 = std::min(d.out_height, oh0 + rows);
        const scalar_t* in_p = in_ptr + plane * in_plane;
        scalar_t* out_p = out_ptr + plane * out_plane;
        int64_t* idx_p = with_indices ? idx_ptr + plane * out_plane : nullptr;
        pool_band_planar(in_p, out_p, idx_p, d, oh0, oh1, fold.data(), fold_col.data());
      }
    });
  });
  return {output, indices};
}

at::Tensor max_pool2d_cpu(const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                          at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode) {
  return std::get<0>(max_pool2d_forward("max_pool2d", input, kernel_size, stride, padding, dilation, ceil_mode,
                                        /*with_indices=*/false));
}

std::tuple<at::Tensor, at::Tensor> max_pool2d_with_indices_cpu(const at::Tensor& input, at::IntArrayRef kernel_size,
                                                               at::IntArrayRef stride, at::IntArrayRef padding,
                                                               at::IntArrayRef dilation, bool ceil_mode) {
  return max_pool2d_forward("max_pool2d_with_indices", input, kernel_size, stride, padding, dilation, ceil_mode,
                            /*with_indices=*/true);
}

[[noreturn]] void throw_invalid_pool_index(int64_t index, int64_t height, int64_t width) {
  TORCH_CHECK(false, "max_pool2d_backward: indices must be flat positions in input's ", height, "x", width,
              " planes, in [0, ", height * width, "), got ", index);
}

at::Tensor max_pool2d_backward_cpu(const at::Tensor& grad_output_arg, const at::Tensor& input,
                                   const at::Tensor& indices_arg) {
  check_max_pool_backward("max_pool2d_backward", grad_output_arg, input, indices_arg);
  const at::MemoryFormat format = output_memory_format(input);
  const bool channels_last = format == at::MemoryFormat::ChannelsLast;
  at::Tensor grad_input = zeros_like_layout(input, input.sizes());
  if (grad_input.numel() == 0 || grad_output_arg.numel() == 0) return grad_input;
  const at::Tensor grad_output = grad_output_arg.contiguous(format);
  const at::Tensor indices = indices_arg.contiguous(format);
  const int64_t N = input.size(0), C = input.size(1), H = input.size(2), W = input.size(3);
  const int64_t in_plane = H * W, out_plane = grad_output.size(2) * grad_output.size(3);
  const int64_t* idx_ptr = indices.const_data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "max_pool2d_backward_cpu", [&] {
    const scalar_t* go_ptr = grad_output.const_data_ptr<scalar_t>();
    scalar_t* gi_ptr = grad_input.mutable_data_ptr<scalar_t>();
    if (!channels_last) {
      at::parallel_for(0, N * C, 1, [&](int64_t begin, int64_t end) {
        for (int64_t plane = begin; plane < end; ++plane) {
          const int64_t* idx = idx_ptr + plane * out_plane;
          const scalar_t* go = go_ptr + plane * out_plane;
          scalar_t* gi = gi_ptr + plane * in_plane;
          for (int64_t i = 0; i < out_plane; ++i) {
            const int64_t at = idx[i];
            if (static_cast<uint64_t>(at) >= static_cast<uint64_t>(in_plane)) throw_invalid_pool_index(at, H, W);
            gi[at] += go[i];
          }
        }
      });
      return;
    }
    // channels_last: a work item is a block of one image's channels, each channel's outputs in row-major order
    const int64_t wanted = std::max<int64_t>(1, (4 * at::get_num_threads() + N - 1) / N);
    const int64_t block = std::clamp<int64_t>((C + wanted - 1) / wanted, std::min<int64_t>(C, 16), 256);
    const int64_t blocks = (C + block - 1) / block;
    at::parallel_for(0, N * blocks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t item = begin; item < end; ++item) {
        const int64_t n = item / blocks, c0 = (item % blocks) * block, cb = std::min(C, c0 + block) - c0;
        const int64_t* idx = idx_ptr + n * out_plane * C + c0;
        const scalar_t* go = go_ptr + n * out_plane * C + c0;
        scalar_t* gi = gi_ptr + n * in_plane * C + c0;
        for (int64_t p = 0; p < out_plane; ++p)
          for (int64_t c = 0; c < cb; ++c) {
            const int64_t at = idx[p * C + c];
            if (static_cast<uint64_t>(at) >= static_cast<uint64_t>(in_plane)) throw_invalid_pool_index(at, H, W);
            gi[at * C + c] += go[p * C + c];
          }
      }
    });
  });
  return grad_input;
}

}  // namespace

TORCH_LIBRARY_IMPL(squeezeae, CPU, m) {
  m.impl("max_pool2d", &max_pool2d_cpu);
  m.impl("max_pool2d_with_indices", &max_pool2d_with_indices_cpu);
  m.impl("max_pool2d_backward", &max_pool2d_backward_cpu);
}

}  // namespace squeezeae
