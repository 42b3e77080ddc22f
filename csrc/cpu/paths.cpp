#include "cpu/paths.h"

#include "cpu/caches.h"
#include "cpu/epilogues.h"
#include "cpu/fire_bf16.h"
#include "cpu/fire_tiles.h"
#include "cpu/gemm.h"

namespace squeezeae {
namespace cpu {

CpuPaths cpu_paths() {
  const int width = transpose_simd_width();
  return CpuPaths{cpu_gemm_backend(), width == 16 ? "avx512" : width == 8 ? "avx2" : "scalar", l2_cache_bytes(),
                  l3_cache_bytes(), forward_tile_pixels(), max_unpool2d_stream_bytes(),
                  bf16_gemm_usable() ? "onednn-brgemm-bf16" : "float32-copies", winograd_min_pixels(),
                  planar_max_call_pixels(), forward_tiles_name()};
}

}  // namespace cpu
}  // namespace squeezeae
