// The CPU's cache sizes, as the OS reports them, for tile and streaming decisions.
#pragma once

#include <c10/util/Exception.h>

#include <cstdint>
#include <cstdlib>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>  // sysconf
#endif

namespace squeezeae {
namespace cpu {

// Bytes of the level-2 / level-3 data cache of one core (the L3 as shared by the cores that see it), or 0
// where the OS does not say.
inline int64_t l2_cache_bytes() {
  static const int64_t bytes = [] {
#if defined(_SC_LEVEL2_CACHE_SIZE)
    const long value = sysconf(_SC_LEVEL2_CACHE_SIZE);
    if (value > 0) return static_cast<int64_t>(value);
#endif
    return int64_t(0);
  }();
  return bytes;
}

// SQUEEZEAE_CPU_L3_BYTES=<bytes> stands in for the L3 size the OS reports (to test the paths it selects on any
// machine, or to model another one); a value that is not a positive integer is reported once and ignored.
inline int64_t l3_cache_bytes() {
  static const int64_t bytes = [] {
    if (const char* forced = std::getenv("SQUEEZEAE_CPU_L3_BYTES")) {
      char* end = nullptr;
      const long long value = std::strtoll(forced, &end, 10);
      if (end != forced && *end == '\0' && value > 0) return static_cast<int64_t>(value);
      TORCH_WARN("SQUEEZEAE_CPU_L3_BYTES=", forced,
                 " is not a positive number of bytes: using the L3 size the OS reports");
    }
#if defined(_SC_LEVEL3_CACHE_SIZE)
    const long value = sysconf(_SC_LEVEL3_CACHE_SIZE);
    if (value > 0) return static_cast<int64_t>(value);
#endif
    return int64_t(0);
  }();
  return bytes;
}

}  // namespace cpu
}  // namespace squeezeae
