// SQUEEZEAE_CLONES: compile a function for AVX-512, AVX2 and baseline x86-64 and pick one at load time (GCC/Clang
// function multiversioning). The rest of the extension is built for baseline x86-64, where auto-vectorised
// loops would run 4 floats at a time; the loops a clone inlines are vectorised for each target.
#pragma once

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(SQUEEZEAE_NO_MULTIVERSION)
#define SQUEEZEAE_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SQUEEZEAE_CLONES
#endif

// For the templates that clones inline: a large loop nest is not inlined on its own, and a call to it would run
// the baseline build.
#if defined(__GNUC__) || defined(__clang__)
#define SQUEEZEAE_INLINE inline __attribute__((always_inline))
#else
#define SQUEEZEAE_INLINE inline
#endif
