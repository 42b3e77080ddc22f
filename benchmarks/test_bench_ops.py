"""Fused vs eager (vs torch.compile with --bench-compile) for fire, max_unpool2d and unpool_fire.

The inputs, byte and FLOP counts come from squeezeae_ext.bench (the same rows `squeezeae bench` times).
pytest-benchmark times with the host clock, so on CUDA each call ends with torch.cuda.synchronize(); the
CLI's CUDA-event timing with L2 flushes is the precise tool, this suite is for regressions and comparisons.
"""
import pytest
import torch

from squeezeae_ext import bench


def test_op(benchmark, case, bench_settings):
    device, op, shape, mode, variant = case
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("CUDA is not available")
    batch = bench_settings["batch"] or bench.DEFAULTS[device]["batch"]
    dtype = getattr(torch, bench.DTYPES[bench_settings["dtype"]])
    layout = torch.channels_last if bench_settings["layout"] == "channels_last" else torch.contiguous_format
    torch.manual_seed(0)
    row = bench.build_row(torch, op, shape, batch, dtype, device, layout, backward=(mode == "fwd+bwd"),
                          with_compile=(variant == "compiled"), dtype_name=bench_settings["dtype"])
    chosen = next(v for v in row.variants if v.name == variant)
    if not chosen.ok:
        pytest.skip(f"{variant}: {chosen.error}")
    try:  # first call outside the timing: compiles, autotunes, and shows a missing kernel as a skip
        chosen.fn()
    except Exception as error:
        pytest.skip(f"{variant} unavailable: {bench._error_text(error)}")

    if device == "cuda":
        def call():
            chosen.fn()
            torch.cuda.synchronize()
        torch.cuda.synchronize()
    else:
        call = chosen.fn

    benchmark.group = (f"{op} {shape.name} {mode} {device} {bench_settings['dtype']} {bench_settings['layout']} "
                       f"b{batch}")
    benchmark.extra_info.update({"op": op, "layer": shape.name, "mode": mode, "device": device,
                                 "variant": variant, "shape": row.shape, "min_bytes": row.bytes,
                                 "min_flops": row.flops})
    benchmark(call)
    median = benchmark.stats.stats.median if benchmark.stats else None
    if median:
        benchmark.extra_info["GBps"] = bench.rate(row.bytes, median)
        benchmark.extra_info["GFLOPs"] = bench.rate(row.flops, median)
