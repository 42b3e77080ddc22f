// max_unpool2d on the CPU: per work item (an image's block of channels) zero-fill then scatter into a buffer
// that stays in L2, one (n, c) plane's elements always in row-major (h, w) order so that, with duplicate
// indices, the latest element wins whatever the thread count; then one copy to the output, streamed when the
// output is too big for the caches (max_unpool2d_stream_bytes). Each output element is written to memory once (a
// zero-fill of the whole output followed by a scatter writes it twice and reads it back once). channels_last with fewer
// images than twice the threads, with images of half an L2 or more, or with a big output that the L3 holds, gives
// each work item a range of one image's output pixels instead (unpool_pixel_range). The backward is the matching
// gather.
// Both walk sizes and strides, so any layout works; the loop order follows the memory format (planes
// outermost for NCHW, channels innermost for channels_last).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "checks.h"
#include "cpu/caches.h"
#include "cpu/epilogues.h"
#include "cpu/paths.h"
#include "cpu/strides.h"
#include "cpu/unpool.h"
#include "shapes.h"

namespace squeezeae {
namespace {

using cpu::Strides4;

// Visits every (n, c, h, w) of a [N, C, H, W] iteration space in parallel chunks, keeping each (n, c) plane's
// pixels in row-major order within one thread. fn(n, c0, c1, h, w) handles channels [c0, c1) of one pixel.
template <typename Fn>
void for_each_plane_ordered(int64_t N, int64_t C, int64_t H, int64_t W, bool channels_inner, const Fn& fn) {
  if (!channels_inner) {
    at::parallel_for(0, N * C, 1, [&](int64_t begin, int64_t end) {
      for (int64_t plane = begin; plane < end; ++plane) {
        const int64_t n = plane / C, c = plane % C;
        for (int64_t h = 0; h < H; ++h)
          for (int64_t w = 0; w < W; ++w) fn(n, c, c + 1, h, w);
      }
    });
    return;
  }
  // Blocks of up to 64 channels, smaller when that would leave threads idle (batch 1): any block size keeps
  // each plane's order, since a channel is never split.
  const int64_t wanted = std::max<int64_t>(1, (4 * at::get_num_threads() + N - 1) / N);
  const int64_t kChannelBlock = std::clamp<int64_t>((C + wanted - 1) / wanted, 8, 64);
  const int64_t blocks = (C + kChannelBlock - 1) / kChannelBlock;
  at::parallel_for(0, N * blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / blocks, c0 = (item % blocks) * kChannelBlock;
      const int64_t c1 = std::min(C, c0 + kChannelBlock);
      for (int64_t h = 0; h < H; ++h)
        for (int64_t w = 0; w < W; ++w) fn(n, c0, c1, h, w);
    }
  });
}

// The stride between consecutive flat (h * W + w) positions of a plane of `t`, when one exists (rows packed
// back to back: every contiguous or channels_last tensor), else -1. Lets a flat index address the plane
// without a division.
int64_t flat_position_stride(const at::Tensor& t) {
  if (t.size(2) == 1 || t.stride(2) == t.size(3) * t.stride(3)) return t.stride(3);
  return -1;
}

// Output bytes from which the forward counts an output as big: big outputs are written with non-temporal
// stores where they cannot stay in the last-level cache anyway (a streamed line is written once instead of
// read for ownership and written back), and otherwise, in channels_last, one image's range of pixels per work
// item (unpool_pixel_range). Below it, ordinary stores leave the result in cache for whatever reads it next.
constexpr int64_t kBigOutputBytes = int64_t(8) << 20;

// Bytes of one work item's slice of the output, built in a thread-local buffer that stays in L2 (1 MiB per
// core here). channels_last copies a pixel's slice of channels at a time, so it wants wide slices: with
// 55x55 planes, 768 KiB blocks (48 channels) ran 1.2x eager and 256 KiB blocks (16 channels) 0.7x.
constexpr int64_t kBlockBytesChannelsLast = 768 << 10;
constexpr int64_t kBlockBytesPlanar = 256 << 10;

// memcpy with non-temporal 16-byte stores (SSE2, part of every x86-64) where available.
void copy_out(char* dst, const char* src, int64_t bytes) {
#if defined(__SSE2__)
  {
    const int64_t head = std::min<int64_t>(bytes, (16 - reinterpret_cast<uintptr_t>(dst) % 16) % 16);
    std::memcpy(dst, src, head);
    dst += head, src += head, bytes -= head;
    for (; bytes >= 16; bytes -= 16, dst += 16, src += 16)
      _mm_stream_si128(reinterpret_cast<__m128i*>(dst), _mm_loadu_si128(reinterpret_cast<const __m128i*>(src)));
  }
#endif
  std::memcpy(dst, src, bytes);
}

// One work item: channels [c0, c1) of image n. Their slice of the output is zeroed, then scattered into in
// each plane's row-major order (so with duplicate indices the latest element wins). A slice that goes out by
// non-temporal stores is built in `buf` ([pixel][channel] for channels_last, [channel][pixel] otherwise, like
// the output) and copied out once; otherwise the slice of the output itself is the target.
template <typename T>
void unpool_block(const T* in, const int64_t* idx, const Strides4& in_s, const Strides4& idx_s, T* out,
                  const Strides4& out_s, int64_t n, int64_t c0, int64_t c1, int64_t H, int64_t W, int64_t out_h,
                  int64_t out_w, bool channels_inner, bool stream, T* buf) {
  const int64_t plane = out_h * out_w, cb = c1 - c0;
  T* dst = out + n * out_s.n + c0 * out_s.c;
  // the target: pixels `pixel` apart (the fresh output's pixels are out_s.w apart), channels `channel` apart
  T* target = stream ? buf : dst;
  const int64_t pixel = stream ? (channels_inner ? cb : 1) : out_s.w;
  const int64_t channel = stream ? (channels_inner ? 1 : plane) : out_s.c;
  if (channels_inner && !stream && pixel != cb) {  // a strided slice of the pixels: inline fills, no calls
    for (int64_t p = 0; p < plane; ++p) std::fill_n(target + p * pixel, cb, T(0));
  } else {
    std::memset(static_cast<void*>(target), 0, sizeof(T) * plane * cb);  // contiguous in both cases
  }
  const int64_t idx_c = idx_s.c, in_c = in_s.c, idx_w = idx_s.w, in_w = in_s.w;
  auto put = [&](int64_t index, T value, int64_t c) {
    if (static_cast<uint64_t>(index) >= static_cast<uint64_t>(plane)) throw_invalid_index(index, out_h, out_w);
    target[index * pixel + c * channel] = value;
  };
  if (channels_inner) {
    for (int64_t h = 0; h < H; ++h)
      for (int64_t w = 0; w < W; ++w) {
        const int64_t* ip = idx + idx_s.at(n, c0, h, w);
        const T* xp = in + in_s.at(n, c0, h, w);
        for (int64_t c = 0; c < cb; ++c) put(ip[c * idx_c], xp[c * in_c], c);
      }
  } else {
    for (int64_t c = 0; c < cb; ++c)
      for (int64_t h = 0; h < H; ++h) {
        const int64_t* ip = idx + idx_s.at(n, c0 + c, h, 0);
        const T* xp = in + in_s.at(n, c0 + c, h, 0);
        for (int64_t w = 0; w < W; ++w) put(ip[w * idx_w], xp[w * in_w], c);
      }
  }
  if (!stream) return;
  if (channels_inner) {
    for (int64_t p = 0; p < plane; ++p)
      copy_out(reinterpret_cast<char*>(dst + p * out_s.w), reinterpret_cast<const char*>(buf + p * cb),
               sizeof(T) * cb);
  } else {
    copy_out(reinterpret_cast<char*>(dst), reinterpret_cast<const char*>(buf), sizeof(T) * plane * cb);
  }
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

// After a SIMD run reported an index outside the plane: names the first one of the run.
[[noreturn]] void throw_first_invalid(const int64_t* idx, int64_t count, int64_t out_h, int64_t out_w) {
  for (int64_t i = 0; i < count; ++i)
    if (idx[i] < 0 || idx[i] >= out_h * out_w) throw_invalid_index(idx[i], out_h, out_w);
  TORCH_INTERNAL_ASSERT(false, "max_unpool2d: a run reported an invalid index but holds none");
}

// channels_last with few images per thread, big images, or a big output kept in the caches (see
// max_unpool2d_cpu): work item = one image's range of output pixels [lo, hi), a contiguous stretch of memory
// that its thread alone zeroes and writes. Every item scans all of its
// image's input and keeps the elements whose index falls in its range, so each (n, c) plane's elements still
// land in row-major order (the latest duplicate wins) and no cache line or fresh page is shared between
// threads. Splitting the channels instead puts both threads' writes in every line and every page of the
// output: on a 2-core Xeon that ran 0.4-0.6x eager at batch 1 (2 threads slower than 1), this 1.1-1.4x.
template <typename T>
void unpool_pixel_range(const T* in, const int64_t* idx, const Strides4& in_s, const Strides4& idx_s, T* out,
                        const Strides4& out_s, int64_t n, int64_t lo, int64_t hi, int64_t C, int64_t H, int64_t W,
                        int64_t out_h, int64_t out_w) {
  const int64_t plane = out_h * out_w;
  T* dst = out + n * out_s.n;  // a fresh channels_last output: pixel p, channel c at p * C + c
  std::memset(static_cast<void*>(dst + lo * C), 0, sizeof(T) * (hi - lo) * C);
  const int64_t idx_c = idx_s.c, in_c = in_s.c;
  const bool whole = lo == 0 && hi == plane;
  if constexpr (std::is_same_v<T, float>) {
    if (idx_c == 1 && in_c == 1) {  // a pixel's channels side by side in both: SIMD compares and scatters
      for (int64_t h = 0; h < H; ++h)
        for (int64_t w = 0; w < W; ++w) {
          const int64_t* ip = idx + idx_s.at(n, 0, h, w);
          if (cpu::scatter_in_range(dst + lo * C, C, 1, ip, in + in_s.at(n, 0, h, w), C, lo, hi, plane))
            throw_first_invalid(ip, C, out_h, out_w);
        }
      return;
    }
  }
  for (int64_t h = 0; h < H; ++h)
    for (int64_t w = 0; w < W; ++w) {
      const int64_t* ip = idx + idx_s.at(n, 0, h, w);
      const T* xp = in + in_s.at(n, 0, h, w);
      for (int64_t c = 0; c < C; ++c) {
        const int64_t index = ip[c * idx_c];
        if (static_cast<uint64_t>(index) >= static_cast<uint64_t>(plane)) throw_invalid_index(index, out_h, out_w);
        if (whole || (index >= lo && index < hi)) dst[index * C + c] = xp[c * in_c];
      }
    }
}

// Pixel ranges per image for unpool_pixel_range: enough for every thread to have one, and up to twice that
// where more even out the rounds of work items over the threads (an odd batch on 2 threads: 2 per image, each
// rescanning its image's input, instead of a 2:1 imbalance); otherwise as few as that (smaller ranges
// measured no faster on 1.5-6 MB images).
int64_t ranges_per_image(int64_t images, int64_t threads) {
  const int64_t least = (threads + images - 1) / images;
  int64_t best = least, best_rounds = (images * least + threads - 1) / threads;
  for (int64_t parts = least + 1; parts <= 2 * least; ++parts) {
    const int64_t rounds = (images * parts + threads - 1) / threads;  // each round: 1 / parts of an image
    if (rounds * best < best_rounds * parts) best = parts, best_rounds = rounds;
  }
  return best;
}

// Channels per work item: as many as keep the item's output slice within kBlockBytes, fewer when that would
// leave threads idle; whole cache lines of a channels_last pixel where the channel count allows.
int64_t unpool_channel_block(int64_t N, int64_t C, int64_t plane, int64_t element_size, bool channels_inner) {
  const int64_t block_bytes = channels_inner ? kBlockBytesChannelsLast : kBlockBytesPlanar;
  const int64_t fits = std::max<int64_t>(1, block_bytes / (plane * element_size));
  // channels_last: 2 blocks per thread (a pixel's slice shrinks with the block: at batch 1 on an AMD EPYC, 1,
  // 2, 4 and 8 blocks per thread ran 0.89x, 1.11x, 1.06x and 0.97x eager; batch 1 now takes
  // unpool_pixel_range); planar: 4
  const int64_t per_thread = channels_inner ? 2 : 4;
  const int64_t wanted_blocks = std::max<int64_t>(1, (per_thread * at::get_num_threads() + N - 1) / N);
  int64_t cb = std::min(fits, (C + wanted_blocks - 1) / wanted_blocks);
  const int64_t line = 64 / element_size;
  if (channels_inner && C >= line) cb = std::max(line, cb / line * line);
  return std::clamp<int64_t>(cb, 1, C);
}

at::Tensor max_unpool2d_cpu(const at::Tensor& input, const at::Tensor& indices, at::IntArrayRef kernel_size,
                            at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef output_size) {
  const UnpoolDims d = check_max_unpool("max_unpool2d", input, indices, kernel_size, stride, padding, output_size);
  at::Tensor output = empty_like_layout(input, {d.batch, d.channels, d.out_height, d.out_width});
  if (output.numel() == 0) return output;
  if (input.numel() == 0) return output.zero_();
  const bool channels_inner = output_memory_format(input) == at::MemoryFormat::ChannelsLast;
  const Strides4 in_s(input), idx_s(indices), out_s(output);
  const int64_t plane = d.out_plane(), C = d.channels;
  const int64_t* idx_ptr = indices.const_data_ptr<int64_t>();
  const int64_t threads = at::get_num_threads();
  const bool stream = static_cast<int64_t>(output.nbytes()) >= cpu::max_unpool2d_stream_bytes();
  const bool big_cached = static_cast<int64_t>(output.nbytes()) >= kBigOutputBytes && !stream;
  // channels_last takes pixel ranges with few images per thread, with images of half an L2 or more, and with
  // big outputs the L3 keeps; channel blocks otherwise. On the 2-core Xeon, against F.max_unpool2d at batch 1-8
  // (in-process, rotating order): channel blocks ran 0.68-0.78x at batch 3 and at batch 2-5 with 1.5 MB
  // images, pixel ranges 1.04-1.2x there; elsewhere they were level (batch 4-8 with 0.35-0.75 MB images,
  // channel blocks 1.1-1.35x).
  const int64_t image_bytes = plane * C * static_cast<int64_t>(input.element_size()), l2 = cpu::l2_cache_bytes();
  if (channels_inner && (d.batch < 2 * threads || big_cached || (l2 > 0 && 2 * image_bytes >= l2))) {
    // ranges of a multiple of 16 pixels: whole 64-byte cache lines for any channel count (float32)
    const int64_t parts = std::min(ranges_per_image(d.batch, threads), plane);
    const int64_t chunk = std::min(plane, ((plane + parts - 1) / parts + 15) / 16 * 16);
    const int64_t ranges = (plane + chunk - 1) / chunk;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "max_unpool2d_cpu", [&] {
      const scalar_t* in_ptr = input.const_data_ptr<scalar_t>();
      scalar_t* out_ptr = output.mutable_data_ptr<scalar_t>();
      at::parallel_for(0, d.batch * ranges, 1, [&](int64_t begin, int64_t end) {
        for (int64_t item = begin; item < end; ++item) {
          const int64_t n = item / ranges, lo = (item % ranges) * chunk;
          unpool_pixel_range(in_ptr, idx_ptr, in_s, idx_s, out_ptr, out_s, n, lo, std::min(plane, lo + chunk), C,
                             d.in_height, d.in_width, d.out_height, d.out_width);
        }
      });
    });
    return output;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "max_unpool2d_cpu", [&] {
    const int64_t cb = unpool_channel_block(d.batch, C, plane, sizeof(scalar_t), channels_inner);
    // Streaming builds each slice in a thread-local buffer that outlives the call: only for slices that fit
    // the block budget (a single huge plane is zeroed and scattered in place instead).
    const bool stream_blocks =
        stream && plane * cb * static_cast<int64_t>(sizeof(scalar_t)) <= kBlockBytesChannelsLast;
    const int64_t blocks = (C + cb - 1) / cb;
    const scalar_t* in_ptr = input.const_data_ptr<scalar_t>();
    scalar_t* out_ptr = output.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, d.batch * blocks, 1, [&](int64_t begin, int64_t end) {
      thread_local std::vector<scalar_t> buffer;
      if (stream_blocks && static_cast<int64_t>(buffer.size()) < plane * cb) buffer.resize(plane * cb);
      for (int64_t item = begin; item < end; ++item) {
        const int64_t n = item / blocks, c0 = (item % blocks) * cb;
        unpool_block(in_ptr, idx_ptr, in_s, idx_s, out_ptr, out_s, n, c0, std::min(C, c0 + cb), d.in_height,
                     d.in_width, d.out_height, d.out_width, channels_inner, stream_blocks, buffer.data());
      }
    });
  });
  return output;
}

at::Tensor max_unpool2d_backward_cpu(const at::Tensor& grad_output, const at::Tensor& indices) {
  check_unpool_grad_output("max_unpool2d_backward", grad_output, indices);
  const int64_t N = indices.size(0), C = indices.size(1), H = indices.size(2), W = indices.size(3);
  at::Tensor grad_input =
      at::empty(indices.sizes(), grad_output.options().memory_format(output_memory_format(indices)));
  if (grad_input.numel() == 0) return grad_input;
  const int64_t out_h = grad_output.size(2), out_w = grad_output.size(3), plane = out_h * out_w;
  const bool channels_inner = output_memory_format(indices) == at::MemoryFormat::ChannelsLast;
  const Strides4 go_s(grad_output), idx_s(indices), gi_s(grad_input);
  const int64_t* idx_ptr = indices.const_data_ptr<int64_t>();
  const int64_t position = flat_position_stride(grad_output);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_output.scalar_type(), "max_unpool2d_backward_cpu", [&] {
    const scalar_t* go_ptr = grad_output.const_data_ptr<scalar_t>();
    scalar_t* gi_ptr = grad_input.mutable_data_ptr<scalar_t>();
    if (std::is_same_v<scalar_t, float>) {  // (not constexpr: the dispatch lambda is no template)
      float* gif = reinterpret_cast<float*>(gi_ptr);
      const float* gof = reinterpret_cast<const float*>(go_ptr);
      // float32 with a flat grad_output plane: SIMD gathers over runs that are contiguous in the indices and in
      // grad_input (a fresh tensor in the indices' layout), a plane's pixels (NCHW) or a pixel's channels
      // (channels_last). A gather has no order to keep, so the work splits however balances best.
      if (position >= 0 && !channels_inner && idx_s.rows_packed(W) && gi_s.rows_packed(W)) {
        const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(H * W, 1));
        at::parallel_for(0, N * C, grain, [&](int64_t b, int64_t e) {
          for (int64_t p = b; p < e; ++p) {
            const int64_t n = p / C, c = p % C;
            const int64_t* idx = idx_ptr + idx_s.at(n, c, 0, 0);
            if (cpu::gather_in_range(gif + gi_s.at(n, c, 0, 0), idx, gof + n * go_s.n + c * go_s.c, H * W,
                                     position, 0, 0, plane))
              throw_first_invalid(idx, H * W, out_h, out_w);
          }
        });
        return;
      }
      if (position >= 0 && channels_inner && idx_s.c == 1 && gi_s.c == 1) {
        const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(C, 1));
        at::parallel_for(0, N * H * W, grain, [&](int64_t b, int64_t e) {
          for (int64_t p = b; p < e; ++p) {
            const int64_t n = p / (H * W), h = p / W % H, w = p % W;
            const int64_t* idx = idx_ptr + idx_s.at(n, 0, h, w);
            if (cpu::gather_in_range(gif + gi_s.at(n, 0, h, w), idx, gof + n * go_s.n, C, position, go_s.c, 0,
                                     plane))
              throw_first_invalid(idx, C, out_h, out_w);
          }
        });
        return;
      }
    }
    for_each_plane_ordered(N, C, H, W, channels_inner, [&](int64_t n, int64_t c0, int64_t c1, int64_t h, int64_t w) {
      const int64_t* idx = idx_ptr + idx_s.at(n, 0, h, w);
      scalar_t* gi = gi_ptr + gi_s.at(n, 0, h, w);
      const scalar_t* go = go_ptr + n * go_s.n;
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t index = idx[c * idx_s.c];
        if (index < 0 || index >= plane) throw_invalid_index(index, out_h, out_w);
        const int64_t offset = position >= 0 ? index * position : (index / out_w) * go_s.h + (index % out_w) * go_s.w;
        gi[c * gi_s.c] = go[c * go_s.c + offset];
      }
    });
  });
  return grad_input;
}

}  // namespace

namespace cpu {

// Streaming pays where the output is over a quarter of the L3 (an AMD EPYC's 32 MB per core complex: it was
// tuned there), and is big. Where the L3 holds it many times over, ordinary stores keep it cached: on a Xeon with
// a 480 MB L3 the batch-8 12-25 MB outputs ran 1.1-1.6x faster unstreamed, NCHW and channels_last alike
// (in-process A/B, interleaved with F.max_unpool2d).
int64_t max_unpool2d_stream_bytes() {
  const int64_t l3 = l3_cache_bytes();
  return std::max(kBigOutputBytes, l3 / 4 + 1);
}

at::Tensor max_unpool2d(const at::Tensor& input, const at::Tensor& indices, at::IntArrayRef kernel_size,
                        at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef output_size) {
  return max_unpool2d_cpu(input, indices, kernel_size, stride, padding, output_size);
}

}  // namespace cpu

TORCH_LIBRARY_IMPL(squeezeae, CPU, m) {
  m.impl("max_unpool2d", &max_unpool2d_cpu);
  m.impl("max_unpool2d_backward", &max_unpool2d_backward_cpu);
}

}  // namespace squeezeae
