#!/usr/bin/env bash
# Compile-checks every CUDA source (csrc/cuda/*.cu) for sm_80 and sm_90 with nvcc, against the installed torch's
# headers. No GPU and no CUDA build of torch are needed: the CPU wheel ships the c10/ATen CUDA headers except
# c10/cuda/impl/cuda_cmake_macros.h (generated at torch's build time), for which a stand-in is written here.
# Object files are discarded. Two nvcc jobs at a time (CI machines have 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS

if ! command -v nvcc >/dev/null 2>&1; then
  echo "check_cuda: nvcc not found; skipping the CUDA compile check" >&2
  exit 0
fi

read -r TORCH_DIR ABI < <(python -c 'import os, torch; print(os.path.dirname(torch.__file__), int(torch._C._GLIBCXX_USE_CXX11_ABI))')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/include/c10/cuda/impl"
# What torch's CMake generates: libc10_cuda is a shared library.
cat > "$work/include/c10/cuda/impl/cuda_cmake_macros.h" <<'H'
#pragma once
#define C10_CUDA_BUILD_SHARED_LIBS
H

flags=(
  -std=c++17 -O3 --expt-relaxed-constexpr -lineinfo
  -Xcompiler -fPIC -Xcompiler -Wall -Xcompiler -Wno-unused-function
  # torch's own headers (c10/core/AutogradState.h) use C++20 bit-field initialisers: silence only that.
  -diag-suppress 3306 -Xcompiler -Wno-c++20-extensions
  -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ -D__CUDA_NO_BFLOAT16_CONVERSIONS__
  -D__CUDA_NO_HALF2_OPERATORS__ -DTORCH_EXTENSION_NAME=_C -DTORCH_API_INCLUDE_EXTENSION_H
  -D_GLIBCXX_USE_CXX11_ABI="$ABI" -DSQUEEZEAE_WITH_CUDA
  -I csrc -I "$work/include" -I "$TORCH_DIR/include" -I "$TORCH_DIR/include/torch/csrc/api/include"
  -gencode=arch=compute_80,code=sm_80 -gencode=arch=compute_90,code=sm_90
  --Werror cross-execution-space-call
)

shopt -s nullglob
sources=(csrc/cuda/*.cu)
if [ ${#sources[@]} -eq 0 ]; then
  echo "check_cuda: no CUDA sources"
  exit 0
fi

compile() {
  local src=$1 log
  log="$work/$(basename "$src").log"
  local t0=$SECONDS
  if nvcc "${flags[@]}" -c "$src" -o "$work/$(basename "$src").o" >"$log" 2>&1; then
    # Warnings from our own sources (not torch's headers) are shown but do not fail the check.
    if grep -E "^(csrc/|\./csrc/)" "$log" | grep -qi warning; then cat "$log"; fi
    echo "check_cuda: ok   $src ($((SECONDS - t0))s, $(grep -ci warning "$log" || true) warning line(s))"
  else
    cat "$log"
    echo "check_cuda: FAIL $src ($((SECONDS - t0))s)"
    return 1
  fi
}
status=0
pids=()
next_to_wait=0
for src in "${sources[@]}"; do
  if [ $((${#pids[@]} - next_to_wait)) -ge 2 ]; then
    wait "${pids[$next_to_wait]}" || status=1
    next_to_wait=$((next_to_wait + 1))
  fi
  compile "$src" &
  pids+=($!)
done
while [ "$next_to_wait" -lt "${#pids[@]}" ]; do
  wait "${pids[$next_to_wait]}" || status=1
  next_to_wait=$((next_to_wait + 1))
done

if [ $status -eq 0 ]; then
  # Link the objects together, as setup.py does: a function or variable defined (non-inline, non-static) in a
  # header that several .cu files include is a duplicate symbol here, not only on the GPU machine.
  # Undefined references (torch, cudart) are allowed in a shared object.
  if g++ -shared -o "$work/link_check.so" "$work"/*.o >"$work/link.log" 2>&1; then
    echo "check_cuda: ok   link of ${#sources[@]} object(s) (no duplicate symbols)"
  else
    cat "$work/link.log"
    echo "check_cuda: FAIL link of the CUDA objects"
    status=1
  fi
  # The CUDA objects must not carry their own copy of the CPU's inline error helper (one body per symbol in
  # the .so, picked by the linker from either compiler's objects; see benchmarks/NOTES_cuda.md).
  if nm -C "$work"/*.o | grep -E " [TWV] squeezeae::throw_invalid_index" >/dev/null; then
    echo "check_cuda: FAIL a CUDA object defines squeezeae::throw_invalid_index (use SQUEEZEAE_CHECK_INDEX_RANGE)"
    status=1
  fi
fi

echo "check_cuda: ${#sources[@]} file(s) for sm_80 + sm_90 in $((SECONDS - start))s"
exit $status
