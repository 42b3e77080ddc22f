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

// sysconf(name) in bytes, 0 where the OS does not say; name is -1 where this platform has no such query.
inline int64_t sysconf_bytes(int name) {
#if defined(__unix__) || defined(__APPLE__)
  const long value = name < 0 ? -1 : sysconf(name);
  return value > 0 ? static_cast<int64_t>(value) : 0;
#else
  (void)name;
  return 0;
#endif
}

#if defined(_SC_LEVEL2_CACHE_SIZE) && defined(_SC_LEVEL3_CACHE_SIZE)
constexpr int kL2Query = _SC_LEVEL2_CACHE_SIZE, kL3Query = _SC_LEVEL3_CACHE_SIZE;
#else
constexpr int kL2Query = -1, kL3Query = -1;
#endif

// Bytes of the level-2 data cache of one core, or 0 where the OS does not say.
inline int64_t l2_cache_bytes() {
  static const int64_t bytes = sysconf_bytes(kL2Query);
  return bytes;
}

// Bytes of the L3 (as shared by the cores that see it), or 0 where the OS does not say.
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
    return sysconf_bytes(kL3Query);
  }();
  return bytes;
}

}  // namespace cpu
}  // namespace squeezeae
