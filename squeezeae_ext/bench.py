"""``squeezeae bench``: the fused ops side by side with eager PyTorch and ``torch.compile``.

Every row times the variants of one op on one layer shape in the same process, interleaved repetition by
repetition (the start of the cycle rotates each repetition, so drift and cache warmth from the previous call
hit every variant alike), after a warm-up, and reports the median and the interquartile range:

- ``fused``: ``squeezeae_ext.functional`` (the extension's op),
- ``eager``: the plain-PyTorch composition in ``squeezeae_ext.reference`` (torchvision-style Fire;
  ``F.max_unpool2d``; ``F.max_unpool2d`` followed by Fire),
- ``compiled`` (``--compile``): ``torch.compile`` of that eager composition; compile time is measured on the
  first call and reported apart, never inside the timings.

On CUDA each call is timed with a pair of CUDA events, and the L2 cache is flushed (a buffer twice its size is
written) before every timed call, outside the events. On the CPU each call is timed with
``time.perf_counter``. Achieved GB/s and GFLOP/s are computed against the *minimum* bytes and FLOPs of the op
(see :func:`fire_bytes`, :func:`fire_flops` and friends, pure functions so they can be checked by hand), and
on CUDA set against the device copy bandwidth measured in the same run.
"""
import argparse
import datetime
import gc
import json
import math
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

from ._sizes import pool_output_size

OPS = ("fire", "max_unpool2d", "unpool_fire", "max_pool2d")
CPU_ONLY_OPS = ("max_pool2d",)  # on CUDA, functional.max_pool2d is F.max_pool2d: nothing to compare
VARIANTS = ("fused", "eager", "compiled")
DTYPES = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16"}
DTYPE_SHORT = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}
INDEX_BYTES = 8  # max_pool2d's indices are int64
# SqueezeNet's pools, which produce the indices the unpool ops consume.
POOL_KERNEL, POOL_STRIDE = 3, 2
DEFAULTS = {  # per device: batch, repetitions, warm-up calls per variant, time cap of one row's timing loop
    "cpu": {"batch": 8, "reps": 30, "warmup": 3, "row_budget": 6.0},
    "cuda": {"batch": 64, "reps": 100, "warmup": 10, "row_budget": 10.0},
}
COUNTING = {
    "bytes": (
        "minimum bytes a single pass must move: every input element read once, every output element written "
        "once, the weights and biases read once; indices are int64 (8 bytes). Backward adds, for fire: "
        "grad_output and output (ReLU masks) read, input re-read (weight gradients), grad_input written, "
        "weights read and weight gradients written, i.e. 3x the forward bytes in all; for unpool_fire the "
        "same on the pooled input plus the indices read again; for max_unpool2d: indices read, grad_output "
        "gathered at the P pooled positions, grad_input (P elements) written."
    ),
    "flops": (
        "2 x multiply-adds of the three convolutions (squeeze 1x1, expand 1x1, expand 3x3, dense, at the "
        "Fire's spatial size; bias and ReLU not counted; for unpool_fire the convolutions run on the unpooled "
        "size). Forward+backward counts forward + squeeze recomputed in backward + data gradients + weight "
        "gradients of all three convolutions = 2 x (3 x MACs + squeeze MACs). max_unpool2d has no FLOPs. "
        "Model rows: 2 x multiply-adds of every convolution; forward+backward adds the weight gradients of all "
        "of them and the data gradients of all but the first (the images need none)."
    ),
}


# ------------------------------------------------------------------------------------------------ shapes
@dataclass(frozen=True)
class FireShape:
    """One Fire layer: (inplanes, squeeze, expand1x1, expand3x3) running at height x width."""

    name: str
    inplanes: int
    squeeze: int
    expand1x1: int
    expand3x3: int
    height: int
    width: int

    @property
    def out_channels(self) -> int:
        return self.expand1x1 + self.expand3x3


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _first(value):
    return value[0] if isinstance(value, (tuple, list)) else value


def squeezenet_fire_shapes(version: str = "1_1", size: int = 224) -> List[FireShape]:
    """The Fire layers of squeezeae_ext.squeezenet's SqueezeNet ``version`` and the spatial size each one
    sees for a ``size`` x ``size`` input, walked from the model's own layers (built on the meta device)."""
    import torch
    from torch import nn

    from .squeezenet import SqueezeNet, TorchvisionFire

    version = version.replace("squeezenet", "").lstrip("_")
    with torch.device("meta"):
        model = SqueezeNet(version)
    height = width = size
    shapes, number = [], 2  # the paper numbers the Fire modules fire2..fire9
    for layer in model.features:
        if isinstance(layer, nn.Conv2d):
            args = [_first(getattr(layer, a)) for a in ("kernel_size", "stride", "padding", "dilation")]
            height, width = (conv_output_size(height, *args), conv_output_size(width, *args))
        elif isinstance(layer, nn.MaxPool2d):
            args = [_first(getattr(layer, a)) for a in ("kernel_size", "stride", "padding", "dilation")]
            height, width = (pool_output_size(height, *args, ceil_mode=layer.ceil_mode),
                             pool_output_size(width, *args, ceil_mode=layer.ceil_mode))
        elif isinstance(layer, TorchvisionFire):
            shapes.append(FireShape(f"fire{number}", layer.squeeze.in_channels, layer.squeeze.out_channels,
                                    layer.expand1x1.out_channels, layer.expand3x3.out_channels, height, width))
            number += 1
        if min(height, width) < 1:
            raise ValueError(f"input size {size} is too small for squeezenet{version}")
    return shapes


def parse_shapes(spec: str, size: int = 224) -> List[FireShape]:
    """``squeezenet1_1``, ``squeezenet1_0`` or ``"C,S,E1,E3,H[,W];..."``."""
    if spec in ("squeezenet1_1", "squeezenet1_0"):
        return squeezenet_fire_shapes(spec, size)
    shapes = []
    for number, part in enumerate(p for p in spec.split(";") if p.strip()):
        try:
            values = [int(v) for v in part.split(",")]
        except ValueError:
            values = []
        if len(values) not in (5, 6) or min(values) < 1:
            raise ValueError(f"--shapes: expected squeezenet1_1, squeezenet1_0 or 'C,S,E1,E3,H[,W]' items "
                             f"separated by ';' (positive integers), got {part!r}")
        height = values[4]
        width = values[5] if len(values) == 6 else height
        shapes.append(FireShape(f"custom{number}", *values[:4], height, width))
    if not shapes:
        raise ValueError(f"--shapes: no shape in {spec!r}")
    return shapes


# -------------------------------------------------------------------------------- minimum bytes and FLOPs
def fire_weight_elements(inplanes: int, squeeze: int, expand1x1: int, expand3x3: int) -> int:
    """Weights and biases of the three convolutions."""
    return (squeeze * inplanes + squeeze) + (expand1x1 * squeeze + expand1x1) + (expand3x3 * squeeze * 9
                                                                                   + expand3x3)


def fire_macs(batch: int, inplanes: int, squeeze: int, expand1x1: int, expand3x3: int, height: int,
              width: int) -> Dict[str, int]:
    pixels = batch * height * width
    return {
        "squeeze": pixels * inplanes * squeeze,
        "expand1x1": pixels * squeeze * expand1x1,
        "expand3x3": pixels * squeeze * expand3x3 * 9,
    }


def fire_flops(batch, inplanes, squeeze, expand1x1, expand3x3, height, width, backward=False) -> int:
    """2 x MACs of the three convolutions; with ``backward``: forward, the squeeze recomputed, data gradients
    and weight gradients of all three: 2 x (3 x MACs + squeeze MACs)."""
    macs = fire_macs(batch, inplanes, squeeze, expand1x1, expand3x3, height, width)
    total = sum(macs.values())
    return 2 * (3 * total + macs["squeeze"]) if backward else 2 * total


def fire_bytes(batch, inplanes, squeeze, expand1x1, expand3x3, height, width, element_size,
               backward=False) -> int:
    """Input read once + output written once + weights, in bytes; 3x that with ``backward``
    (forward, then grad_output, output, input and weights read, grad_input and weight gradients written)."""
    x = batch * inplanes * height * width
    out = batch * (expand1x1 + expand3x3) * height * width
    weights = fire_weight_elements(inplanes, squeeze, expand1x1, expand3x3)
    forward = (x + out + weights) * element_size
    return 3 * forward if backward else forward


def max_unpool2d_bytes(batch, channels, pooled_height, pooled_width, height, width, element_size,
                       index_size=INDEX_BYTES, backward=False) -> int:
    """Pooled input and its indices read, the unpooled output written; backward adds indices read,
    grad_output gathered at the pooled positions and grad_input written."""
    pooled = batch * channels * pooled_height * pooled_width
    unpooled = batch * channels * height * width
    forward = pooled * element_size + pooled * index_size + unpooled * element_size
    if not backward:
        return forward
    return forward + pooled * index_size + 2 * pooled * element_size


def max_pool2d_bytes(batch, channels, height, width, pooled_height, pooled_width, element_size,
                     index_size=INDEX_BYTES, backward=False) -> int:
    """Input read, pooled output written (and, for a backward, the indices the forward keeps); backward adds
    grad_output and indices read and grad_input written."""
    full = batch * channels * height * width
    pooled = batch * channels * pooled_height * pooled_width
    forward = (full + pooled) * element_size
    if not backward:
        return forward
    return forward + 2 * pooled * index_size + pooled * element_size + full * element_size


def unpool_fire_bytes(batch, inplanes, squeeze, expand1x1, expand3x3, pooled_height, pooled_width, height,
                      width, element_size, index_size=INDEX_BYTES, backward=False) -> int:
    """Pooled input and indices read, Fire output written, weights read (the unpooled tensor never exists);
    backward adds grad_output, output, pooled input, indices and weights read, grad_input and weight
    gradients written."""
    pooled = batch * inplanes * pooled_height * pooled_width
    out = batch * (expand1x1 + expand3x3) * height * width
    weights = fire_weight_elements(inplanes, squeeze, expand1x1, expand3x3)
    forward = (pooled + out + weights) * element_size + pooled * index_size
    if not backward:
        return forward
    return 3 * forward - pooled * index_size


def unpool_fire_flops(batch, inplanes, squeeze, expand1x1, expand3x3, height, width, backward=False) -> int:
    """The Fire's FLOPs at the unpooled size (dense: the zeros of the unpooled input are counted)."""
    return fire_flops(batch, inplanes, squeeze, expand1x1, expand3x3, height, width, backward)


def rate(amount: Optional[float], seconds: Optional[float]) -> Optional[float]:
    """amount / seconds in units of 1e9 per second (GB/s for bytes, GFLOP/s for FLOPs)."""
    if amount is None or not seconds or seconds <= 0 or not math.isfinite(seconds):
        return None
    return amount / seconds / 1e9


def copy_bandwidth(copied_bytes: int, seconds: float) -> float:
    """GB/s of a copy of ``copied_bytes``: the bytes read plus the bytes written, over the time."""
    return 2 * copied_bytes / seconds / 1e9


# ------------------------------------------------------------------------------------------- statistics
def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), q in [0, 100]."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize_times(times: Sequence[float]) -> Dict[str, float]:
    """Median, quartiles, IQR, min and max of ``times`` (seconds), in milliseconds."""
    ms = [t * 1e3 for t in times]
    median = percentile(ms, 50)
    p25, p75 = percentile(ms, 25), percentile(ms, 75)
    return {
        "median_ms": median,
        "p25_ms": p25,
        "p75_ms": p75,
        "iqr_ms": p75 - p25,
        "iqr_rel": (p75 - p25) / median if median else float("nan"),
        "min_ms": min(ms) if ms else float("nan"),
        "max_ms": max(ms) if ms else float("nan"),
        "reps": len(ms),
    }


def geomean(values: Sequence[float]) -> Optional[float]:
    values = [v for v in values if v is not None and v > 0 and math.isfinite(v)]
    if not values:
        return None
    return math.exp(sum(math.log(v) for v in values) / len(values))


def interleaved_order(names: Sequence[str], reps: int) -> List[List[str]]:
    """The order of the variants in each repetition: every variant once per repetition, the cycle's start
    rotating (ABC, BCA, CAB, ...), so each takes every position equally often."""
    names = list(names)
    count = len(names)
    return [names[r % count:] + names[:r % count] for r in range(reps)] if count else [[] for _ in range(reps)]


# ----------------------------------------------------------------------------------------------- timers
class CpuTimer:
    """Host clock around each call."""

    device = "cpu"

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self.clock = clock

    def prepare(self) -> None:
        pass

    def measure(self, fn: Callable[[], object]):
        start = self.clock()
        fn()
        return self.clock() - start

    def sync(self) -> None:
        pass

    def resolve(self, handle) -> float:
        return handle


class CudaTimer:
    """CUDA events around each call. Before it, outside the events: a buffer twice the L2 size is written
    (L2 flush), then, with ``hide_launch``, a spin kernel keeps the GPU busy while the host enqueues the call,
    so the events measure GPU execution rather than Python/dispatcher overhead between launches (the spin is
    sized from the slowest variant's host dispatch time, see :meth:`calibrate`)."""

    device = "cuda"

    def __init__(self, torch_module, device_index: Optional[int] = None, hide_launch: bool = True):
        self.torch = torch_module
        props = torch_module.cuda.get_device_properties(device_index or torch_module.cuda.current_device())
        self.l2_bytes = int(getattr(props, "L2_cache_size", 0) or 64 * 2**20)
        self.flush_buffer = torch_module.empty(2 * self.l2_bytes // 4, dtype=torch_module.int32, device="cuda")
        self.hide_launch = hide_launch
        self.spin_cycles = 0
        self.spin_s = 0.0
        self.cycles_per_s = self._spin_rate() if hide_launch else None

    def _spin_rate(self) -> float:
        cycles = 2_000_000
        rates = []
        for _ in range(3):
            start, end = self.torch.cuda.Event(enable_timing=True), self.torch.cuda.Event(enable_timing=True)
            start.record()
            self.torch.cuda._sleep(cycles)
            end.record()
            end.synchronize()
            rates.append(cycles / (start.elapsed_time(end) / 1e3))
        return percentile(rates, 50)

    def calibrate(self, fns: Sequence[Callable[[], object]]) -> None:
        """Sizes the spin kernel: 1.5x the slowest host dispatch time of ``fns`` plus 20 us (at most 20 ms)."""
        if not self.hide_launch or not fns:
            return
        slowest = 0.0
        for fn in fns:
            host = []
            for _ in range(3):
                self.torch.cuda.synchronize()
                start = time.perf_counter()
                fn()
                host.append(time.perf_counter() - start)
            slowest = max(slowest, percentile(host, 50))
        self.torch.cuda.synchronize()
        self.spin_s = min(1.5 * slowest + 20e-6, 20e-3)
        self.spin_cycles = int(self.spin_s * self.cycles_per_s)

    def prepare(self) -> None:
        self.flush_buffer.zero_()
        if self.spin_cycles:
            self.torch.cuda._sleep(self.spin_cycles)

    def measure(self, fn: Callable[[], object]):
        start = self.torch.cuda.Event(enable_timing=True)
        end = self.torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        return start, end

    def sync(self) -> None:
        self.torch.cuda.synchronize()

    def resolve(self, handle) -> float:
        start, end = handle
        return start.elapsed_time(end) / 1e3


@dataclass
class Variant:
    name: str
    fn: Optional[Callable[[], object]]
    error: Optional[str] = None
    compile_s: Optional[float] = None
    first_call_s: Optional[float] = None
    times: List[float] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and self.fn is not None


def _error_text(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    text = lines[0] if lines else ""
    return f"{type(error).__name__}: {text}"[:300]


def run_interleaved(variants: Sequence[Variant], reps: int, warmup: int, timer,
                    on_rep: Optional[Callable[[], None]] = None, budget_s: Optional[float] = None,
                    min_reps: int = 5, clock: Callable[[], float] = time.perf_counter) -> None:
    """Warm every variant up (its first call, timed alone, catches failures and compile time), then time
    ``reps`` repetitions, each running every working variant once in :func:`interleaved_order`.

    With ``budget_s``, repetitions stop early (at a repetition boundary, after at least ``min_reps``) once the
    timing loop has run that long, so a slow configuration cannot blow up the run time."""
    for variant in variants:
        if not variant.ok:
            continue
        try:
            timer.sync()
            start = time.perf_counter()
            variant.fn()
            timer.sync()
            variant.first_call_s = time.perf_counter() - start
        except Exception as error:  # a kernel missing for this device/dtype, a compile failure, ...
            variant.error = _error_text(error)
    for _ in range(max(0, warmup - 1)):
        for variant in variants:
            if variant.ok:
                try:
                    variant.fn()
                except Exception as error:
                    variant.error = _error_text(error)
    timer.sync()
    calibrate = getattr(timer, "calibrate", None)
    if calibrate is not None:
        calibrate([v.fn for v in variants if v.ok])
    names = [v.name for v in variants if v.ok]
    by_name = {v.name: v for v in variants}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    started = clock()
    try:
        for done, order in enumerate(interleaved_order(names, reps)):
            if budget_s is not None and done >= min_reps and clock() - started > budget_s:
                break
            handles = []
            for name in order:
                timer.prepare()
                handles.append((name, timer.measure(by_name[name].fn)))
            timer.sync()
            for name, handle in handles:
                by_name[name].times.append(timer.resolve(handle))
            if on_rep is not None:
                on_rep()
    finally:
        if gc_was_enabled:
            gc.enable()


# --------------------------------------------------------------------------------------------- environment
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_capability(torch) -> str:
    """The SIMD level ATen's CPU kernels dispatch to here ('avx512', 'avx2', 'default', ...): results from
    machines of one model name but different levels are not comparable."""
    try:
        return str(torch.backends.cpu.get_cpu_capability()).lower()
    except (AttributeError, RuntimeError):
        return "unknown"


def short_name(text: str) -> str:
    """A file-name-friendly device name: 'NVIDIA H100 80GB HBM3' -> 'h100-80gb-hbm3'."""
    text = re.sub(r"\b(nvidia|corporation|processor|cpu|\(r\)|\(tm\))", "", text.lower())
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-") or "unknown"


def git_revision() -> Optional[str]:
    """HEAD of the source checkout (+"-dirty"), else $SQUEEZEAE_GIT_REVISION (for copies without .git)."""
    found = _git_head()
    return found or os.environ.get("SQUEEZEAE_GIT_REVISION") or None


def _git_head() -> Optional[str]:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        rev = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment(torch, device: str) -> dict:
    from . import __version__, has_cuda_kernels
    from ._ops import cpu_paths

    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "squeezeae_ext": __version__,
        "git_revision": git_revision(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_capability": cpu_capability(torch),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "cpu_kernels": {op: torch._C._dispatch_has_kernel_for_dispatch_key(f"squeezeae::{op}", "CPU")
                        for op in OPS},
        "cuda_kernels": has_cuda_kernels(),
        "cpu_paths": cpu_paths(),
        "device": device,
        "device_name": cpu_model(),
    }
    if device == "cuda":
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        env.update({
            "device_name": torch.cuda.get_device_name(),
            "device_capability": list(torch.cuda.get_device_capability()),
            "device_memory_bytes": props.total_memory,
            "l2_cache_bytes": getattr(props, "L2_cache_size", None),
            "multiprocessors": props.multi_processor_count,
            "cudnn": torch.backends.cudnn.version(),
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        })
    return env


def measure_copy_bandwidth(torch, device: str, megabytes: int = 256, reps: int = 10) -> dict:
    """A large same-device tensor copy: (bytes read + bytes written) / median time."""
    elements = megabytes * 2**20 // 4
    src = torch.rand(elements, device=device)
    dst = torch.empty_like(src)
    timer = CudaTimer(torch, hide_launch=False) if device == "cuda" else CpuTimer()
    for _ in range(3):
        dst.copy_(src)
    timer.sync()
    handles = [timer.measure(lambda: dst.copy_(src)) for _ in range(reps)]
    timer.sync()
    times = [timer.resolve(h) for h in handles]
    median = percentile(times, 50)
    copied = elements * 4
    del src, dst, timer
    return {"bytes_copied": copied, "reps": reps, "median_ms": median * 1e3,
            "GBps": copy_bandwidth(copied, median), "method": f"{device} tensor copy_ of {megabytes} MiB"}


# ---------------------------------------------------------------------------------------------- the rows
@dataclass
class Row:
    op: str
    name: str
    shape: dict
    input_shape: list
    output_shape: list
    bytes: Optional[int]
    flops: Optional[int]
    variants: List[Variant]


def _weights(torch, shape: FireShape, dtype, device, layout, requires_grad: bool):
    def make(*size, fan_in):
        w = torch.randn(*size, device=device, dtype=torch.float32) * math.sqrt(2.0 / fan_in)
        return w.to(dtype)

    c, s, e1, e3 = shape.inplanes, shape.squeeze, shape.expand1x1, shape.expand3x3
    tensors = [make(s, c, 1, 1, fan_in=c), make(s, fan_in=100), make(e1, s, 1, 1, fan_in=s), make(e1, fan_in=100),
               make(e3, s, 3, 3, fan_in=9 * s), make(e3, fan_in=100)]
    # like model.to(memory_format=torch.channels_last): 4-D weights follow the layout too
    tensors = [t.contiguous(memory_format=layout) if t.dim() == 4 else t for t in tensors]
    return [t.requires_grad_(requires_grad) for t in tensors]


def _activation(torch, size, dtype, device, layout, requires_grad=False):
    x = torch.randn(*size, device=device, dtype=torch.float32).relu_().to(dtype)
    return x.contiguous(memory_format=layout).requires_grad_(requires_grad)


def _pooled(torch, shape: FireShape, batch, dtype, device, layout, requires_grad):
    """A SqueezeNet-style max_pool2d(3, 2, ceil_mode=True) of a random activation: pooled values + indices."""
    import torch.nn.functional as F

    pre = _activation(torch, (batch, shape.inplanes, shape.height, shape.width), dtype, device, layout)
    pooled, indices = F.max_pool2d(pre, POOL_KERNEL, POOL_STRIDE, ceil_mode=True, return_indices=True)
    del pre
    pooled = pooled.detach().contiguous(memory_format=layout).requires_grad_(requires_grad)
    return pooled, indices.contiguous(memory_format=layout)


def _compiled(torch, fn):
    torch._dynamo.reset()  # fresh caches: every row compiles its own static-shape graph
    return torch.compile(fn, dynamic=False)


def build_row(torch, op: str, shape: FireShape, batch: int, dtype, device: str, layout, backward: bool,
              with_compile: bool, dtype_name: str) -> Row:
    """Inputs, the byte/FLOP counts and the variants' callables for one (op, layer) row."""
    import torch.nn.functional as F

    from . import functional, reference

    element = torch.empty((), dtype=dtype).element_size()
    n, c, h, w = batch, shape.inplanes, shape.height, shape.width
    pooled_h = pool_output_size(h, POOL_KERNEL, POOL_STRIDE, ceil_mode=True)
    pooled_w = pool_output_size(w, POOL_KERNEL, POOL_STRIDE, ceil_mode=True)
    description = {"N": n, "C": c, "S": shape.squeeze, "E1": shape.expand1x1, "E3": shape.expand3x3, "H": h,
                   "W": w}
    dims = (n, c, shape.squeeze, shape.expand1x1, shape.expand3x3)
    pooling = {"Hp": pooled_h, "Wp": pooled_w, "pool": f"max_pool2d({POOL_KERNEL}, {POOL_STRIDE}, ceil_mode=True)"}
    if op == "max_pool2d":  # the pooling that feeds the unpool ops' rows: the Fire's input, pooled
        for key in ("S", "E1", "E3"):
            description.pop(key)
        description.update(pooling)
        x = _activation(torch, (n, c, h, w), dtype, device, layout, backward)
        args, leaves = [x], [x]
        fused = lambda t: functional.max_pool2d(t, POOL_KERNEL, POOL_STRIDE, ceil_mode=True)  # noqa: E731
        eager = lambda t: F.max_pool2d(t, POOL_KERNEL, POOL_STRIDE, ceil_mode=True)  # noqa: E731
        in_shape, out_shape = [n, c, h, w], [n, c, pooled_h, pooled_w]
        nbytes = max_pool2d_bytes(n, c, h, w, pooled_h, pooled_w, element, backward=backward)
        flops = None
    elif op == "fire":
        x = _activation(torch, (n, c, h, w), dtype, device, layout, backward)
        weights = _weights(torch, shape, dtype, device, layout, backward)
        args, leaves = [x] + weights, [x] + weights
        fused, eager = functional.fire, reference.fire
        out_shape = [n, shape.out_channels, h, w]
        nbytes = fire_bytes(*dims, h, w, element, backward)
        flops = fire_flops(*dims, h, w, backward)
        in_shape = [n, c, h, w]
    else:
        pooled, indices = _pooled(torch, shape, n, dtype, device, layout, backward)
        description.update(pooling)
        in_shape = [n, c, pooled_h, pooled_w]
        geometry = (POOL_KERNEL, POOL_STRIDE, 0, (h, w))
        if op == "max_unpool2d":
            for key in ("S", "E1", "E3"):
                description.pop(key)
            args, leaves = [pooled, indices], [pooled]
            fused = lambda p, i: functional.max_unpool2d(p, i, *geometry)  # noqa: E731
            eager = lambda p, i: reference.max_unpool2d(p, i, *geometry)  # noqa: E731
            out_shape = [n, c, h, w]
            nbytes = max_unpool2d_bytes(n, c, pooled_h, pooled_w, h, w, element, backward=backward)
            flops = None
        else:
            weights = _weights(torch, shape, dtype, device, layout, backward)
            args, leaves = [pooled, indices] + weights, [pooled] + weights
            fused = lambda p, i, *ws: functional.unpool_fire(p, i, *ws, *geometry)  # noqa: E731
            eager = lambda p, i, *ws: reference.unpool_fire(p, i, *ws, *geometry)  # noqa: E731
            out_shape = [n, shape.out_channels, h, w]
            nbytes = unpool_fire_bytes(*dims, pooled_h, pooled_w, h, w, element, backward=backward)
            flops = unpool_fire_flops(*dims, h, w, backward)
    grad = _activation(torch, out_shape, dtype, device, layout) if backward else None

    def bind(fn):
        if backward:
            return lambda: torch.autograd.grad(fn(*args), leaves, grad)
        return lambda: fn(*args)

    variants = [Variant("fused", bind(fused)), Variant("eager", bind(eager))]
    if with_compile:
        try:
            variants.append(Variant("compiled", bind(_compiled(torch, eager))))
        except Exception as error:
            variants.append(Variant("compiled", None, error=_error_text(error)))
    return Row(op, shape.name, description, in_shape, out_shape, nbytes, flops, variants)


def model_flops(version: str, batch: int, size: int, backward: bool = False) -> int:
    """2 x MACs of every convolution of SqueezeNet ``version`` on a batch of size x size images; with
    ``backward``, plus the weight gradients of every convolution and the data gradients of all but the first."""
    import torch
    from torch import nn

    from .squeezenet import SqueezeNet

    with torch.device("meta"):
        model = SqueezeNet(version.replace("squeezenet", "").lstrip("_"))
    per_conv = []
    hw = {"size": (size, size)}

    def hook(module, inputs, output):
        k = module.kernel_size[0] * module.kernel_size[1]
        per_conv.append(output.numel() * module.in_channels * k // module.groups)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model.eval()(torch.empty(batch, 3, *hw["size"], device="meta"))
    for handle in handles:
        handle.remove()
    macs = sum(per_conv)
    if backward:  # weight gradients of every convolution, data gradients of all but the first (run first)
        macs += sum(per_conv) + sum(per_conv[1:])
    return 2 * macs


def build_model_rows(torch, version: str, batches: Sequence[int], size: int, dtype, device, layout,
                     with_compile: bool, backward: bool = False) -> List[Row]:
    """The whole network before and after convert(), per batch: its forward under no_grad, or with ``backward``
    a training step's forward and backward (the parameters' gradients for a random output gradient; eval mode,
    so dropout is off and both models compute the same thing)."""
    from .convert import convert
    from .squeezenet import SqueezeNet

    model = SqueezeNet(version.replace("squeezenet", "").lstrip("_")).eval()
    model = model.to(device=device, dtype=dtype, memory_format=layout)
    fused_model = convert(model)
    compiled_model = None
    if with_compile:
        torch._dynamo.reset()
        compiled_model = torch.compile(model, dynamic=False)
    rows = []
    for batch in batches:
        x = _activation(torch, (batch, 3, size, size), dtype, device, layout)

        grad = torch.randn(batch, model.num_classes, device=device, dtype=dtype) if backward else None

        def bind(m, x=x, grad=grad):
            if backward:
                params = [p for p in m.parameters() if p.requires_grad]
                return lambda: torch.autograd.grad(m(x), params, grad)

            def call():
                with torch.no_grad():
                    return m(x)
            return call

        variants = [Variant("fused", bind(fused_model)), Variant("eager", bind(model))]
        if compiled_model is not None:
            variants.append(Variant("compiled", bind(compiled_model)))
        rows.append(Row("model", f"{version} b{batch}", {"N": batch, "H": size, "W": size}, [batch, 3, size, size],
                        [batch, model.num_classes], None, model_flops(version, batch, size, backward), variants))
    return rows


# ------------------------------------------------------------------------------------------------ output
def row_result(row: Row, copy_gbps: Optional[float]) -> dict:
    variants = {}
    for v in row.variants:
        entry = {"ok": v.ok and bool(v.times), "error": v.error}
        if v.times:
            entry.update(summarize_times(v.times))
            entry["times_ms"] = [t * 1e3 for t in v.times]
        entry["first_call_s"] = v.first_call_s
        if v.name == "compiled":
            entry["compile_s"] = v.first_call_s
        variants[v.name] = entry

    def median(name):
        entry = variants.get(name)
        return entry["median_ms"] if entry and entry["ok"] else None

    fused = median("fused")
    result = {"op": row.op, "name": row.name, "shape": row.shape, "input_shape": row.input_shape,
              "output_shape": row.output_shape, "min_bytes": row.bytes, "min_flops": row.flops,
              "variants": variants}
    for other in ("eager", "compiled"):
        base = median(other)
        result[f"speedup_vs_{other}"] = base / fused if fused and base else None
    seconds = fused / 1e3 if fused else None
    result["fused_GBps"] = rate(row.bytes, seconds)
    result["fused_GFLOPs"] = rate(row.flops, seconds)
    result["eager_GBps"] = rate(row.bytes, (median("eager") or 0) / 1e3)
    result["eager_GFLOPs"] = rate(row.flops, (median("eager") or 0) / 1e3)
    result["fused_fraction_of_copy_bw"] = (result["fused_GBps"] / copy_gbps
                                           if result["fused_GBps"] and copy_gbps else None)
    return result


def summarize_rows(rows: Sequence[dict]) -> dict:
    summary = {}
    groups = {"all": list(rows)}
    for r in rows:
        groups.setdefault(r["op"], []).append(r)
    for group, members in groups.items():
        entry = {}
        for other in ("eager", "compiled"):
            pairs = [(r[f"speedup_vs_{other}"], r["op"] + ":" + r["name"]) for r in members
                     if r[f"speedup_vs_{other}"]]
            if pairs:
                worst = min(pairs)
                entry[other] = {"geomean": geomean([p[0] for p in pairs]), "min": worst[0], "min_row": worst[1],
                                "rows": len(pairs)}
        summary[group] = entry
    return summary


def _fmt_time(ms: Optional[float]) -> str:
    if ms is None:
        return "n/a"
    if ms >= 1000:
        return f"{ms / 1e3:.2f} s"
    if ms >= 1:
        return f"{ms:.3g} ms" if ms < 100 else f"{ms:.0f} ms"
    return f"{ms * 1e3:.3g} us" if ms * 1e3 < 100 else f"{ms * 1e3:.0f} us"


def _fmt_num(value: Optional[float], digits: int = 3, suffix: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}g}{suffix}" if abs(value) < 10 ** digits else f"{value:.0f}{suffix}"


def _shape_text(r: dict) -> str:
    s = r["shape"]
    if r["op"] == "model":
        return f"{s['N']}x3x{s['H']}x{s['W']}"
    if r["op"] == "max_pool2d":
        return f"{s['N']}x{s['C']}x{s['H']}x{s['W']}->{s['Hp']}x{s['Wp']}"
    text = f"{s['N']}x{s['C']}x{s.get('Hp', s['H'])}x{s.get('Wp', s['W'])}"
    if "Hp" in s:
        text += f"->{s['H']}x{s['W']}"
    if "S" in s:
        text += f" s{s['S']} e{s['E1']}+{s['E3']}"
    return text


def table(results: dict) -> List[List[str]]:
    rows = results["rows"]
    has_compiled = any("compiled" in r["variants"] for r in rows)
    cuda = results["config"]["device"] == "cuda"
    header = ["op", "layer", "shape", "fused", "eager"] + (["compiled"] if has_compiled else []) + ["x eager"]
    header += (["x compiled"] if has_compiled else []) + ["GB/s", "GFLOP/s"] + (["% copy BW"] if cuda else [])
    lines = [header]
    for r in rows:
        cells = [r["op"], r["name"], _shape_text(r)]
        for name in ("fused", "eager") + (("compiled",) if has_compiled else ()):
            v = r["variants"].get(name)
            if v is None or not v["ok"]:
                cells.append("n/a")
            else:
                cells.append(f"{_fmt_time(v['median_ms'])} ±{100 * v['iqr_rel'] / 2:.0f}%")
        cells.append(_fmt_num(r["speedup_vs_eager"], suffix="x"))
        if has_compiled:
            cells.append(_fmt_num(r["speedup_vs_compiled"], suffix="x"))
        cells += [_fmt_num(r["fused_GBps"]), _fmt_num(r["fused_GFLOPs"])]
        if cuda:
            frac = r["fused_fraction_of_copy_bw"]
            cells.append("n/a" if frac is None else f"{100 * frac:.0f}%")
        lines.append(cells)
    return lines


def format_text_table(lines: List[List[str]]) -> str:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    out = []
    for number, line in enumerate(lines):
        out.append("  ".join(cell.ljust(widths[i]) if i < 3 else cell.rjust(widths[i])
                             for i, cell in enumerate(line)).rstrip())
        if number == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def format_markdown_table(lines: List[List[str]]) -> str:
    out = ["| " + " | ".join(lines[0]) + " |", "|" + "|".join("---" if i < 3 else "---:" for i in
                                                             range(len(lines[0]))) + "|"]
    out += ["| " + " | ".join(line) + " |" for line in lines[1:]]
    return "\n".join(out)


def summary_lines(results: dict) -> List[str]:
    lines = []
    summary = results["summary"]
    for group, entry in summary.items():
        if group == "all":
            continue
        parts = [f"{other}: geomean {e['geomean']:.2f}x, min {e['min']:.2f}x ({e['min_row'].split(':', 1)[1]})"
                 for other, e in entry.items()]
        if parts:
            lines.append(f"{group}: fused speedup over " + "; over ".join(parts))
    failures = [f"{r['op']}:{r['name']} {name}: {v['error']}" for r in results["rows"]
                for name, v in r["variants"].items() if v["error"]]
    seen = set()
    for failure in failures:  # one line per distinct reason
        reason = failure.split(": ", 1)[1]
        if reason not in seen:
            seen.add(reason)
            lines.append(f"n/a: {failure}")
    compiles = [v["compile_s"] for r in results["rows"] for name, v in r["variants"].items()
                if name == "compiled" and v.get("compile_s")]
    if compiles:
        lines.append(f"torch.compile first calls (compile, not in the timings): {len(compiles)} rows, "
                     f"{min(compiles):.1f}-{max(compiles):.1f} s each, {sum(compiles):.0f} s in all")
    total = summary.get("all", {})
    if "eager" in total:
        e = total["eager"]
        text = (f"SUMMARY: fused vs eager geomean {e['geomean']:.2f}x over {e['rows']} rows, "
                f"min {e['min']:.2f}x ({e['min_row']})")
        if "compiled" in total:
            c = total["compiled"]
            text += (f"; vs compiled geomean {c['geomean']:.2f}x over {c['rows']} rows, "
                     f"min {c['min']:.2f}x ({c['min_row']})")
        lines.append(text)
    else:
        lines.append("SUMMARY: no fused-vs-eager speedup measured (see the n/a reasons above)")
    return lines


def environment_lines(results: dict) -> List[str]:
    env, cfg = results["environment"], results["config"]
    bw = results.get("copy_bandwidth") or {}
    return [
        f"- date: {env['date']}, git revision: {env['git_revision']}",
        f"- device: {cfg['device']} ({env['device_name']}); CPU: {env['cpu_model']} "
        f"({env.get('cpu_capability', 'unknown')}), {env['cpu_count']} cores, "
        f"{env['threads']} torch threads, load average at start {env.get('load_average')}",
        f"- torch {env['torch']} (CUDA {env['torch_cuda']}), Python {env['python']}, "
        f"squeezeae_ext {env['squeezeae_ext']}",
        f"- dtype {cfg['dtype']}, layout {cfg['layout']}, batch {cfg['batch']}, input size {cfg['size']}, "
        f"{'forward+backward' if cfg['backward'] else 'forward'}, up to {cfg['reps']} reps (row budget "
        f"{cfg.get('row_budget_s')} s) after {cfg['warmup']} warm-up calls, variants interleaved",
        f"- measured copy bandwidth: {_fmt_num(bw.get('GBps'))} GB/s ({bw.get('method', 'n/a')})",
        f"- timing: {cfg.get('timing')}",
    ] + (_cpu_paths_lines(env.get("cpu_paths")) if cfg["device"] == "cpu" else [])


def _cpu_paths_lines(paths: Optional[dict]) -> List[str]:
    """The CPU paths line of a result file (absent from files written before they were recorded)."""
    if not paths:
        return []
    mib = lambda n: f"{n / 2**20:.3g} MiB" if n else "unknown"  # noqa: E731
    return [f"- CPU paths: GEMM {paths['gemm']}, SIMD {paths['simd']}, L2 {mib(paths['l2_bytes'])}, "
            f"L3 {mib(paths['l3_bytes'])}, forward tiles of {paths['forward_tile_pixels']} pixels, "
            f"max_unpool2d streams outputs from {mib(paths['max_unpool2d_stream_bytes'])}"
            + (f", bfloat16 Fire forward {paths['bf16']}" if "bf16" in paths else "")
            + (f", Winograd 3x3 {_winograd_text(paths['winograd_min_pixels'])}" if "winograd_min_pixels" in paths
               else "")
            + (f", {_forward_tiles_text(paths)}" if "forward_tiles" in paths else "")]


def _forward_tiles_text(paths: dict) -> str:
    if paths["forward_tiles"] != "measured":
        return f"{paths['forward_tiles']} forward tiles (forced)"
    small = paths["planar_max_call_pixels"]
    return f"planar forward tiles for calls of up to {small} output pixels" if small else "no small-call planar rule"


def _winograd_text(min_pixels: int) -> str:
    return {0: "always", -1: "never"}.get(min_pixels, f"from {min_pixels} output pixels a call")


def markdown_report(results: dict, lines: List[List[str]]) -> str:
    cfg = results["config"]
    parts = [f"# squeezeae bench: {cfg['op'] if not cfg['model'] else cfg['model']} on {cfg['device']} "
             f"({results['environment']['device_name']})", "", "Command:", "", "```", cfg["command"], "```", "",
             format_markdown_table(lines), ""]
    parts += ["```"] + summary_lines(results) + ["```", ""]
    parts += ["Environment:", ""] + environment_lines(results) + [""]
    parts += ["Columns: median time of each variant and half the interquartile range (±, relative); "
              "`x eager`/`x compiled` = that variant's median over the fused median; GB/s and GFLOP/s of the "
              "fused op against the minimum bytes and FLOPs counted as below"
              + ("; `% copy BW` = fused GB/s over the copy bandwidth measured in the same run." if
                 cfg["device"] == "cuda" else "."), "",
              f"- bytes: {COUNTING['bytes']}", f"- FLOPs: {COUNTING['flops']}", ""]
    compiles = [f"{r['op']}:{r['name']} {v['compile_s']:.1f} s" for r in results["rows"]
                for name, v in r["variants"].items() if name == "compiled" and v.get("compile_s")]
    if compiles:
        parts += ["Compile time (first call, not in the timings): " + ", ".join(compiles), ""]
    return "\n".join(parts)


def write_plot(results: dict, path: str) -> Optional[str]:
    """A bar chart of the fused speedup per row; returns a note instead when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: --plot skipped (pip install matplotlib)"
    rows = results["rows"]
    labels = [f"{r['op']}\n{r['name']}" for r in rows]
    series = [(name, [r[f"speedup_vs_{name}"] or float("nan") for r in rows]) for name in ("eager", "compiled")
              if any(r[f"speedup_vs_{name}"] for r in rows)]
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(rows) + 2), 4.5))
    width = 0.8 / max(1, len(series))
    for number, (name, values) in enumerate(series):
        ax.bar([i + number * width for i in range(len(rows))], values, width, label=f"fused vs {name}")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")  # speedups are ratios: 2x and 0.5x sit equally far from 1
    ax.set_xticks([i + width * (len(series) - 1) / 2 for i in range(len(rows))])
    ax.set_xticklabels(labels, fontsize=7, rotation=90)
    ax.set_ylabel("speedup (median time ratio)")
    cfg = results["config"]
    ax.set_title(f"squeezeae bench: {cfg['device']} {results['environment']['device_name']}, {cfg['dtype']}, "
                 f"{cfg['layout']}, batch {cfg['batch']}{', fwd+bwd' if cfg['backward'] else ''}", fontsize=9)
    if series:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None


def summarize_files(paths: Sequence[str]) -> str:
    """One line per JSON result file: configuration and per-op geomean/min speedups (for gpu_report.sh)."""
    lines = []
    combined = {}
    for path in paths:
        try:
            with open(path) as f:
                results = json.load(f)
        except (OSError, ValueError) as error:
            lines.append(f"{os.path.basename(path)}: unreadable ({error})")
            continue
        cfg = results["config"]
        head = (f"{cfg['op'] if not cfg['model'] else cfg['model']:<12} {cfg['dtype']:<8} {cfg['layout']:<13} "
                f"b{cfg['batch']:<3} {'fwd+bwd' if cfg['backward'] else 'fwd':<7}")
        parts = []
        for group, entry in results["summary"].items():
            if group == "all":
                continue
            text = f"{group} " + ", ".join(f"{e['geomean']:.2f}x/{other} (min {e['min']:.2f})"
                                           for other, e in entry.items())
            parts.append(text if entry else f"{group} n/a")
        bw = (results.get("copy_bandwidth") or {}).get("GBps")
        lines.append(f"{head} copy {_fmt_num(bw)} GB/s | " + " | ".join(parts))
        for r in results["rows"]:
            mode = "fwd+bwd" if cfg["backward"] else "fwd"
            combined.setdefault((r["op"], mode), []).append(
                (r["speedup_vs_eager"], f"{os.path.basename(path)}:{r['name']}"))
    if len(paths) > 1:
        for (op, mode), pairs in sorted(combined.items()):
            measured = [p for p in pairs if p[0]]
            if measured:
                worst = min(measured)
                lines.append(f"all files, {op} {mode}: fused vs eager geomean {geomean([p[0] for p in measured]):.2f}x "
                             f"over {len(measured)} rows, min {worst[0]:.2f}x ({worst[1]})")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--op", choices=OPS + ("all",), default="all", help="which op to time (default all)")
    parser.add_argument("--shapes", default="squeezenet1_1",
                        help="squeezenet1_1 (default), squeezenet1_0, or custom Fire shapes 'C,S,E1,E3,H[,W]' "
                             "separated by ';' (max_unpool2d/unpool_fire rows unpool a 3x3/stride-2 ceil-mode "
                             "max-pool of a C x H x W activation back to H x W)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default 8 on cpu, 64 on cuda)")
    parser.add_argument("--size", type=int, default=224,
                        help="input image side for the squeezenet shapes (default 224: Fire layers at 55/27/13)")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    parser.add_argument("--layout", choices=("nchw", "channels_last"), default="nchw")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--backward", action="store_true", help="time forward+backward instead of forward")
    parser.add_argument("--compile", action="store_true",
                        help="add a torch.compile column (compile time reported apart, n/a if it fails)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--reps", type=int, default=None,
                        help="timed repetitions per variant (default 30 on cpu, 100 on cuda)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="warm-up calls per variant (default 3 on cpu, 10 on cuda)")
    parser.add_argument("--launch-overhead", action="store_true",
                        help="cuda: count the host's dispatch time (no spin kernel before the timed call), as an "
                             "eager program with a starved GPU sees it")
    parser.add_argument("--row-budget", type=float, default=None, metavar="SECONDS",
                        help="stop a row's repetitions early (after at least 5) once its timing loop has run "
                             "this long; 0 = never (default 6 on cpu, 10 on cuda); JSON records the reps done")
    parser.add_argument("--model", choices=("squeezenet1_1", "squeezenet1_0"), default=None,
                        help="whole-model mode: the SqueezeNet before and after convert(), eval, no_grad, at "
                             "batch 1 and --batch (replaces the op rows)")
    parser.add_argument("--json", metavar="FILE", help="write every figure and the environment as JSON")
    parser.add_argument("--markdown", metavar="FILE", help="write the table, environment and command as markdown")
    parser.add_argument("--plot", metavar="FILE.png", help="bar chart of the speedup per layer (matplotlib)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no notes on stderr")


def canonical_command(args) -> str:
    parts = ["squeezeae", "bench"]
    if args.model:
        parts += ["--model", args.model]
    else:
        parts += ["--op", args.op, "--shapes", args.shapes]
    parts += ["--batch", str(args.batch), "--size", str(args.size), "--dtype", args.dtype, "--layout", args.layout,
              "--device", args.device]
    parts += ["--backward"] if args.backward else []
    parts += ["--compile"] if args.compile else []
    parts += ["--threads", str(args.threads)] if args.threads else []
    parts += ["--launch-overhead"] if getattr(args, "launch_overhead", False) else []
    parts += ["--reps", str(args.reps), "--warmup", str(args.warmup), "--row-budget", f"{args.row_budget:g}"]
    for option in ("json", "markdown", "plot"):
        if getattr(args, option):
            parts += [f"--{option}", getattr(args, option)]
    return " ".join(shlex.quote(p) for p in parts)


def _progress(total: int, quiet: bool):
    if quiet:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        print("squeezeae bench: tqdm is not installed: no progress bar", file=sys.stderr)
        return None
    return tqdm(total=total, file=sys.stderr, unit="rep", leave=False, dynamic_ncols=True)


def run(args) -> int:
    import torch

    threads, cudnn_benchmark = torch.get_num_threads(), torch.backends.cudnn.benchmark
    try:
        return _run(args)
    finally:  # leave the process as it was (the CLI may be called from tests or notebooks)
        torch.set_num_threads(threads)
        torch.backends.cudnn.benchmark = cudnn_benchmark


def _run(args) -> int:
    from .cli import CommandError

    import torch

    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise CommandError("--device cuda: CUDA is not available in this torch/machine")
    for name, default in DEFAULTS[device].items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    if args.batch < 1 or args.reps < 1 or args.warmup < 1 or args.size < 1 or args.row_budget < 0:
        raise CommandError("--batch, --reps, --warmup and --size must be positive")
    if args.threads:
        torch.set_num_threads(args.threads)
    if device == "cuda":
        torch.backends.cudnn.benchmark = True  # the eager baseline gets cuDNN's best algorithms
    dtype = getattr(torch, DTYPES[args.dtype])
    layout = torch.channels_last if args.layout == "channels_last" else torch.contiguous_format
    torch.manual_seed(0)
    try:
        shapes = parse_shapes(args.shapes, args.size) if not args.model else []
    except ValueError as error:
        raise CommandError(str(error))
    ops = OPS if args.op == "all" else (args.op,)
    if device == "cuda":
        if args.op in CPU_ONLY_OPS:
            raise CommandError(f"--op {args.op}: the extension's kernel is CPU-only (on CUDA it is F.{args.op})")
        ops = tuple(op for op in ops if op not in CPU_ONLY_OPS)
    plan = [] if args.model else [(op, s) for op in ops for s in _dedupe(op, shapes)]

    env = environment(torch, device)
    config = {"op": args.op, "shapes": args.shapes, "batch": args.batch, "size": args.size, "dtype": args.dtype,
              "layout": args.layout, "device": device, "backward": args.backward, "compile": args.compile,
              "threads": torch.get_num_threads(), "reps": args.reps, "warmup": args.warmup,
              "row_budget_s": args.row_budget, "model": args.model,
              "command": canonical_command(args), "argv": list(sys.argv)}
    bandwidth = measure_copy_bandwidth(torch, device)
    timer = CudaTimer(torch, hide_launch=not args.launch_overhead) if device == "cuda" else CpuTimer()
    config["timing"] = (
        "CUDA events around each call; before it, outside the events, an L2 flush (2x L2 written)"
        + ("" if args.launch_overhead else " and a spin kernel covering the host's dispatch time, so host "
           "overhead between launches is not counted") if device == "cuda" else
        "time.perf_counter around each call")

    batches = sorted({1, args.batch}) if args.model else []
    total = (len(plan) if plan else len(batches)) * args.reps
    bar = _progress(total, args.quiet)
    results_rows = []
    try:
        if args.model:
            work = [(row, None) for row in build_model_rows(torch, args.model, batches, args.size, dtype, device,
                                                            layout, args.compile, args.backward)]
        else:
            work = [(None, item) for item in plan]
        for row, item in work:
            if row is None:
                op, shape = item
                try:
                    row = build_row(torch, op, shape, args.batch, dtype, device, layout, args.backward,
                                    args.compile, args.dtype)
                except Exception as error:  # e.g. out of memory, a dtype the input pooling cannot take
                    reason = f"building the inputs failed: {_error_text(error)}"
                    row = Row(op, shape.name, {"N": args.batch, "C": shape.inplanes, "H": shape.height,
                                               "W": shape.width}, [], [], None, None,
                              [Variant(name, None, error=reason) for name in ("fused", "eager")])
            if bar is not None:
                bar.set_description(f"{row.op} {row.name}")
            run_interleaved(row.variants, args.reps, args.warmup, timer,
                            on_rep=(lambda: bar.update(1)) if bar is not None else None,
                            budget_s=args.row_budget or None)
            results_rows.append(row_result(row, bandwidth["GBps"]))
            if device == "cuda":
                results_rows[-1]["cuda_spin_before_call_us"] = timer.spin_s * 1e6
            row.variants = []  # free the inputs before the next row
            if device == "cuda":
                torch.cuda.empty_cache()
    finally:
        if bar is not None:
            bar.close()

    results = {"schema": "squeezeae-bench/1", "config": config, "environment": env, "copy_bandwidth": bandwidth,
               "counting": COUNTING, "rows": results_rows}
    results["summary"] = summarize_rows(results_rows)
    lines = table(results)
    print(format_text_table(lines))
    print()
    print("\n".join(environment_lines(results)))
    notes = []
    if args.json:
        _ensure_parent(args.json)
        with open(args.json, "w") as f:
            json.dump(_json_safe(results), f, indent=1)
            f.write("\n")
    if args.markdown:
        _ensure_parent(args.markdown)
        with open(args.markdown, "w") as f:
            f.write(markdown_report(results, lines) + "\n")
    if args.plot:
        _ensure_parent(args.plot)
        note = write_plot(results, args.plot)
        if note:
            notes.append(note)
    for note in notes:
        print(f"squeezeae bench: {note}", file=sys.stderr)
    print("\n".join(summary_lines(results)))
    failed = any(v["error"] for r in results_rows for name, v in r["variants"].items() if name != "compiled")
    return 1 if failed else 0


def _dedupe(op: str, shapes: Sequence[FireShape]) -> List[FireShape]:
    """max_unpool2d and max_pool2d rows depend only on (C, H, W): one row per distinct input, named by its first
    Fire."""
    if op not in ("max_unpool2d", "max_pool2d"):
        return list(shapes)
    seen, out = set(), []
    for s in shapes:
        key = (s.inplanes, s.height, s.width)
        if key not in seen:
            seen.add(key)
            out.append(s)
    return out


def _ensure_parent(path: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)


def _json_safe(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


if __name__ == "__main__":  # python -m squeezeae_ext.bench --summarize FILE... (used by gpu_report.sh)
    if len(sys.argv) > 1 and sys.argv[1] == "--summarize":
        print(summarize_files(sys.argv[2:]))
    else:
        from .cli import main

        sys.exit(main(["bench"] + sys.argv[1:]))
