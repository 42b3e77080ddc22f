"""pytest-benchmark suite options and parametrisation (run: python -m pytest benchmarks --benchmark-only).

Every test times one variant (fused / eager / compiled) of one op on one Fire shape, forward or
forward+backward, on one device; tests of the same (op, shape, mode, device, dtype, layout) share a
pytest-benchmark group, so the report compares the variants side by side.
"""
import pytest
import torch

from squeezeae_ext import bench


def pytest_addoption(parser):
    group = parser.getgroup("squeezeae benchmarks")
    group.addoption("--bench-shapes", default="squeezenet1_1",
                    help="squeezenet1_1 (default), squeezenet1_0 or 'C,S,E1,E3,H[,W];...' as in squeezeae bench")
    group.addoption("--bench-size", type=int, default=224, help="input image side for the squeezenet shapes")
    group.addoption("--bench-batch", type=int, default=None, help="batch (default 8 on cpu, 64 on cuda)")
    group.addoption("--bench-dtype", default="float32", choices=sorted(bench.DTYPES))
    group.addoption("--bench-layout", default="nchw", choices=["nchw", "channels_last"])
    group.addoption("--bench-compile", action="store_true",
                    help="add the torch.compile variant (one compile per test: slow on the CPU)")
    group.addoption("--bench-devices", default=None,
                    help="comma-separated devices (default: cpu, plus cuda when it is available)")


def _devices(config):
    chosen = config.getoption("--bench-devices")
    if chosen:
        return [d.strip() for d in chosen.split(",") if d.strip()]
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def pytest_generate_tests(metafunc):
    if "case" not in metafunc.fixturenames:
        return
    config = metafunc.config
    shapes = bench.parse_shapes(config.getoption("--bench-shapes"), config.getoption("--bench-size"))
    variants = ["fused", "eager"] + (["compiled"] if config.getoption("--bench-compile") else [])
    cases, ids = [], []
    for device in _devices(config):
        for op in bench.OPS:
            for shape in bench._dedupe(op, shapes):
                for mode in ("fwd", "fwd+bwd"):
                    for variant in variants:
                        cases.append((device, op, shape, mode, variant))
                        ids.append(f"{device}-{op}-{shape.name}-{mode}-{variant}")
    metafunc.parametrize("case", cases, ids=ids)


@pytest.fixture
def bench_settings(request):
    config = request.config
    return {
        "batch": config.getoption("--bench-batch"),
        "dtype": config.getoption("--bench-dtype"),
        "layout": config.getoption("--bench-layout"),
    }
