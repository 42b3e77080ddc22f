// Which CPU paths the kernels take on this machine (GEMM backend, SIMD level, the cache sizes their tile and
// streaming rules read), for `squeezeae info` and the benchmark's result files.
#pragma once

#include <cstdint>

namespace squeezeae {
namespace cpu {

struct CpuPaths {
  const char* gemm;                      // "onednn-brgemm" or "plain"
  const char* simd;                      // "avx512", "avx2" or "scalar": transposes, scatters, gathers
  int64_t l2_bytes, l3_bytes;            // as the OS reports them (0: unknown); SQUEEZEAE_CPU_L3_BYTES overrides L3
  int64_t forward_tile_pixels;           // output pixels per forward tile (fire, unpool_fire)
  int64_t max_unpool2d_stream_bytes;     // outputs from this size on are written with non-temporal stores
  const char* bf16;                      // bfloat16 Fire forward: "onednn-brgemm-bf16" or "float32-copies"
  int64_t winograd_min_pixels;           // the pixel-major tiles' 3x3 runs Winograd F(2x2, 3x3) from this many
                                         // output pixels a call (0: always, -1: never; SQUEEZEAE_CPU_WINOGRAD)
  int64_t planar_max_call_pixels;        // float32 forward calls up to this many output pixels take the planar
                                         // tiles in any layout (0: no such rule on this CPU)
  const char* forward_tiles;             // "measured" (the rules), or "planar" / "pixel-major" forced by
                                         // SQUEEZEAE_CPU_FORWARD_TILES
};

CpuPaths cpu_paths();

// max_unpool2d's rule (unpool.cpp): the smallest output, in bytes, that it streams out.
int64_t max_unpool2d_stream_bytes();

}  // namespace cpu
}  // namespace squeezeae
