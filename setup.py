"""Builds squeezeae_ext._C against the torch that is already installed.

    pip install --no-build-isolation -e .

CUDA sources are compiled when torch was built with CUDA and nvcc is found (a GPU need not be visible).
SQUEEZEAE_FORCE_CPU=1 skips them, SQUEEZEAE_FORCE_CUDA=1 builds them whenever nvcc is found.
TORCH_CUDA_ARCH_LIST picks the GPU architectures and MAX_JOBS caps parallel compile jobs (both read by
torch.utils.cpp_extension).
"""
import glob
import os
import sys

from setuptools import setup

try:
    import torch
    from torch.utils import cpp_extension
except ImportError:  # an isolated build environment has no torch: say how to build instead of a traceback
    sys.exit(
        "squeezeae_ext builds against the installed torch: install torch first, then run\n"
        "    pip install --no-build-isolation -e ."
    )

ROOT = os.path.dirname(os.path.abspath(__file__))


def _flag(name):
    return os.environ.get(name, "0").strip().lower() in ("1", "true", "yes", "on")


def _want_cuda():
    if _flag("SQUEEZEAE_FORCE_CPU"):
        return False
    nvcc_found = cpp_extension.CUDA_HOME is not None
    if _flag("SQUEEZEAE_FORCE_CUDA"):
        if not nvcc_found:
            sys.exit("SQUEEZEAE_FORCE_CUDA=1 but nvcc was not found: set CUDA_HOME")
        return True
    return torch.version.cuda is not None and nvcc_found


def _sources(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern), recursive=True))


def build_extension():
    with_cuda = _want_cuda()
    sources = _sources("csrc/*.cpp") + _sources("csrc/cpu/*.cpp")
    # -fopenmp: ATen's at::parallel_for is an inline `#pragma omp parallel` (torch is built with OpenMP); an
    # extension compiled without the flag silently runs every parallel_for on one thread.
    cxx_flags = ["-O3", "-fopenmp", "-fvisibility=hidden", "-Wall", "-Wno-unused-function"]
    define_macros = []
    if _flag("SQUEEZEAE_NATIVE"):
        cxx_flags.append("-march=native")
    extra = {"cxx": cxx_flags}
    include_dirs = [os.path.join(ROOT, "csrc")]
    if with_cuda:
        sources += _sources("csrc/cuda/*.cu")
        extra["nvcc"] = ["-O3", "-std=c++17", "-lineinfo", "--expt-relaxed-constexpr"]
        define_macros.append(("SQUEEZEAE_WITH_CUDA", None))
        ext_cls = cpp_extension.CUDAExtension
    else:
        ext_cls = cpp_extension.CppExtension
    print(f"squeezeae_ext: building {'CPU + CUDA' if with_cuda else 'CPU-only'} kernels", file=sys.stderr)
    return ext_cls(
        name="squeezeae_ext._C",
        sources=sources,
        include_dirs=include_dirs,
        define_macros=define_macros,
        extra_compile_args=extra,
        extra_link_args=["-fopenmp"],
    )


setup(
    ext_modules=[build_extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
)
